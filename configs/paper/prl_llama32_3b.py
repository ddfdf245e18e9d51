"""PRL (arXiv 2601.10201, v1): Llama-3.2-3B with KL-to-go process rewards over 256-token steps.

    prl-jax train --workdir gs://BUCKET/runs/prl3b --config \\
        configs/paper/prl_llama32_3b.py:hf_dir=/ckpt/Llama-3.2-3B-Instruct,train_file=/data/numina/train.parquet,eval_file=/data/math500

Sources ("A4" = ALGORITHMS.md section 4; "run script" = runs/run_grpo.sh of the official PRL code,
whose shared settings the paper's Llama run is taken to use):
  model        Llama-3.2-3B shapes (A4 "256 in the Llama-3.2-3B run"); the checkpoint (base or
               instruct) is whatever `hf_dir` names.
  data         NuminaMath-1.5 prompts preprocessed by the PRL code into verl rows, which is the
               `eurus2` layout (run script).
  advantage    `adv=orm`: GRPO-normalised outcome minus KL-to-go / eta at the ends of fixed
               256-token steps (A4), eta = 100 (A4 gives 100-200; 100 is the run script's value).
  rollout      128 prompts x n = 5, temperature 1 (A4); prompt/response 1024/3072 (run script).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0, lr 1e-6, one
               update per rollout (A4).
  steps        500 (as the 7B run; ALGORITHMS.md gives no step count).
  evaluation   8 samples at temperature 1, average@8 and pass@8 on MATH500, Minerva, OlympiadBench,
               AIME24, AMC23 (A4).

Deliberate differences:
  - AdamW weight decay 0, b2 = 0.999, grad clip 1.0, constant lr: ALGORITHMS.md gives none of them.
  - Evaluation every 50 steps; the loop evaluates one eval_file (MATH500 here).
  - FSDP over every device like the 7B configs (a 3B model would also fit with data parallelism
    over groups of 8); micro-batch 64 responses; on 8 GPUs pass `--config.train.micro_batch_size=8`.
"""

from configs.paper.common import paper_config

BENCHMARKS = ("math500", "minerva", "olympiadbench", "aime24", "amc23")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="llama-3.2-3b", layout="eurus2")
  c.method = "prl"

  c.task.max_prompt_len = 1024
  c.rollout.prompts_per_step = 128
  c.rollout.n = 5
  c.rollout.max_new_tokens = 3072
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.filter.enable = False

  c.algo.prl.mode = "orm"
  c.algo.prl.eta = 100.0
  c.algo.steps.mode = "fixed"
  c.algo.steps.length = 256
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
  c.eval.n = 8
  c.eval.temperature = 1.0
  c.checkpoint.every = 50
  return c
