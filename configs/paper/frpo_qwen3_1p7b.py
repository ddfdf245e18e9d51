"""FRPO (PRL v2, arXiv 2601.10201v2): Qwen3-1.7B-Base with every token a step and beta = 0.01.

    prl-jax train --workdir gs://BUCKET/runs/frpo --config \\
        configs/paper/frpo_qwen3_1p7b.py:hf_dir=/ckpt/Qwen3-1.7B-Base,train_file=/data/dapo/train.parquet,eval_file=/data/math500

Sources ("A4" = docs/algorithms.md, PRL and FRPO; "A8" = its headline results):
  model        Qwen3-1.7B-Base (A8: base 69.65, GRPO 78.62, FRPO 85.30 pass@16 on MATH500).
  advantage    FRPO = PRL with step length 1 and beta = 1/eta = 0.01, i.e. eta = 100 (A4).
  rollout      FRPO v2's setting: 256 prompts x n = 5 per step, temperature 1, prompt/response
               2048/8192 tokens (A4).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0, lr 1e-6 (A4);
               PPO mini-batch 64 prompts = 320 responses, so 4 updates per rollout (A4, v2);
               AdamW weight decay 0.01 (verl's actor default, as the PRL code keeps it).
  steps        200 (A4: "~200 steps").
  evaluation   pass@16 on MATH500 (A8): 16 samples per problem at temperature 1.
  data         filtered DAPO-Math-17k (A4), read with the `eurus2` layout. Its rows are verl rows:
               prompt = [{role: "user", content: the problem wrapped in DAPO's instruction to end
               the response with a line "Answer: $Answer"}], reward_model = {ground_truth: the
               answer (an integer), style}, data_source "math_dapo", ability, extra_info =
               {index}. The `eurus2` loader keeps rows whose `ability` is exactly "math" (check the
               file's value and rewrite it if it differs) and ids rows by extra_info.index.
  filter       the released file repeats each of its ~17k problems many times; A4 does not spell
               out v2's filter, so prepare the file as: one row per distinct problem (dedupe on
               the prompt text), rows whose ground truth the math checker parses. No accuracy
               band during training (filter.enable False, as PRL).

Model: Qwen3 normalises each query and key head with an RMSNorm (q_norm / k_norm) before RoPE;
the decoder has it (`ModelConfig.qk_norm`), and a Qwen3 checkpoint loads through `model.hf_dir`
with logits matching transformers' Qwen3 (tests/test_hf_parity.py).

Deliberate differences:
  - Evaluation every 25 steps, b2 = 0.999, grad clip 1.0, constant lr: docs/algorithms.md gives
    none of them for v2 (they are the v1 code's defaults).
  - micro-batch 64 responses; on 8 GPUs pass `--config.train.micro_batch_size=8`.
"""

from configs.paper.common import paper_config, prl_setting

BENCHMARKS = ("math500",)


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen3-1.7b", layout="eurus2")
  prl_setting(c, method="frpo", steps_mode="token", step_length=1, eval_n=16)
  c.task.max_prompt_len = 2048
  c.rollout.prompts_per_step = 256
  c.rollout.n = 5
  c.rollout.max_new_tokens = 8192
  c.train.mini_batch_size = 64 * 5  # 64 prompts: 1280 / 320 = 4 updates per rollout
  c.train.steps = 200
  c.eval.every = 25
  c.checkpoint.every = 25
  return c
