"""FRPO (PRL v2, arXiv 2601.10201v2): Qwen3-1.7B-Base with every token a step and beta = 0.01.

    prl-jax train --workdir gs://BUCKET/runs/frpo --config \\
        configs/paper/frpo_qwen3_1p7b.py:hf_dir=/ckpt/Qwen3-1.7B-Base,train_file=/data/numina/train.parquet,eval_file=/data/math500

Sources ("A4" = docs/algorithms.md, PRL; "A8" = its headline results):
  model        Qwen3-1.7B-Base (A8: base 69.65, GRPO 78.62, FRPO 85.30 pass@16 on MATH500).
  advantage    FRPO = PRL with step length 1 and beta = 1/eta = 0.01, i.e. eta = 100 (A4).
  rollout      n = 5, 128 prompts per step, temperature 1 (A4, PRL's shared settings).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0, lr 1e-6, one
               update per rollout (A4).
  evaluation   pass@16 on MATH500 (A8): 16 samples per problem at temperature 1.
  data         PRL's NuminaMath prompts in verl rows (`eurus2` layout), prompt/response 1024/3072,
               as in the v1 run script (the v2 data is not in docs/algorithms.md).

Model: Qwen3 normalises each query and key head with an RMSNorm (q_norm / k_norm) before RoPE;
the decoder has it (`ModelConfig.qk_norm`), and a Qwen3 checkpoint loads through `model.hf_dir`
with logits matching transformers' Qwen3 (tests/test_hf_parity.py).

Deliberate differences:
  - 500 steps, evaluation every 50 steps, AdamW weight decay 0, b2 = 0.999, grad clip 1.0,
    constant lr: docs/algorithms.md gives none of them for v2.
  - micro-batch 64 responses; on 8 GPUs pass `--config.train.micro_batch_size=8`.
"""

from configs.paper.common import paper_config, prl_setting

BENCHMARKS = ("math500",)


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen3-1.7b", layout="eurus2")
  return prl_setting(c, method="frpo", steps_mode="token", step_length=1, eval_n=16)
