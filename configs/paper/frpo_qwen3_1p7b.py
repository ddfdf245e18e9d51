"""FRPO (PRL v2, arXiv 2601.10201v2): Qwen3-1.7B-Base with every token a step and beta = 0.01.

    prl-jax train --workdir gs://BUCKET/runs/frpo --config \\
        configs/paper/frpo_qwen3_1p7b.py:hf_dir=/ckpt/Qwen3-1.7B-Base,train_file=/data/numina/train.parquet,eval_file=/data/math500

Sources ("A4" = ALGORITHMS.md section 4, "A8" = section 8):
  model        Qwen3-1.7B-Base (A8: base 69.65, GRPO 78.62, FRPO 85.30 pass@16 on MATH500).
  advantage    FRPO = PRL with step length 1 and beta = 1/eta = 0.01, i.e. eta = 100 (A4).
  rollout      n = 5, 128 prompts per step, temperature 1 (A4, PRL's shared settings).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0, lr 1e-6, one
               update per rollout (A4).
  evaluation   pass@16 on MATH500 (A8): 16 samples per problem at temperature 1.
  data         PRL's NuminaMath prompts in verl rows (`eurus2` layout), prompt/response 1024/3072,
               as in the v1 run script (the v2 data is not in ALGORITHMS.md).

Model caveat: Qwen3 normalises each query and key head with an RMSNorm (q_norm / k_norm) before
RoPE. prl_jax's decoder has no q/k norm, so the `qwen3-1.7b` preset has every other Qwen3 weight
(7,168 fewer parameters) and `hf.config_from_hf` refuses a Qwen3 config.json: this config is right
for memory and throughput planning, but reproducing the paper needs q/k norm in the model first.

Deliberate differences:
  - 500 steps, evaluation every 50 steps, AdamW weight decay 0, b2 = 0.999, grad clip 1.0,
    constant lr: ALGORITHMS.md gives none of them for v2.
  - micro-batch 64 responses; on 8 GPUs pass `--config.train.micro_batch_size=8`.
"""

from configs.paper.common import paper_config

BENCHMARKS = ("math500",)


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen3-1.7b", layout="eurus2")
  c.method = "frpo"

  c.task.max_prompt_len = 1024
  c.rollout.prompts_per_step = 128
  c.rollout.n = 5
  c.rollout.max_new_tokens = 3072
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.filter.enable = False

  c.algo.prl.mode = "orm"
  c.algo.prl.eta = 100.0  # beta = 1 / eta = 0.01
  c.algo.steps.mode = "token"  # the loop makes every token a step for frpo in any case
  c.algo.steps.length = 1
  c.algo.loss.clip_low = 0.2
  c.algo.loss.clip_high = 0.2
  c.algo.loss.dual_clip = 3.0
  c.algo.loss.agg = "token-mean"
  c.algo.loss.kl_coef = 0.0
  c.algo.loss.entropy_coef = 0.0

  c.optim.lr = 1e-6
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0

  c.train.steps = 500
  c.train.ppo_epochs = 1
  c.train.mini_batch_size = 0  # the whole batch: one policy update per rollout
  c.train.micro_batch_size = 64

  c.eval.every = 50
  c.eval.num_problems = 500
  c.eval.n = 16
  c.eval.temperature = 1.0
  c.checkpoint.every = 50
  return c
