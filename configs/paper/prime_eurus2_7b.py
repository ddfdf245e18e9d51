"""PRIME (arXiv 2502.01456): Eurus-2-7B-SFT (Qwen2.5-Math-7B) trained with implicit process rewards.

    prl-jax train --workdir gs://BUCKET/runs/prime --config \\
        configs/paper/prime_eurus2_7b.py:hf_dir=/ckpt/Eurus-2-7B-SFT,train_file=/data/eurus2/train.parquet,eval_file=/data/math500

Sources ("A3" = docs/algorithms.md, PRIME; "A8" = its headline results):
  model        Qwen2.5-Math-7B shapes; the policy, the reference and the implicit PRM all start
               from Eurus-2-7B-SFT, the SFT of Qwen2.5-Math-7B (A3 "base ... -> Eurus-2-7B-SFT").
  data         Eurus-2-RL-Data prompts as stored in the data set (A3; layout `eurus2`).
  rollout      256 prompts x K=4 responses per step, temperature 1, prompt/response 1024/3072 (A3).
  filter       accuracy band [0.2, 0.8] on each group, refilled from further prompts until the
               batch is full, surplus accepted prompts buffered for the next step (A3;
               official ray_trainer.py).
  rewards      implicit PRM r = beta log(pi_phi / pi_ref), beta = 0.05, token granularity,
               code-mode normalisation, RLOO per reward source, gamma = 1 (A3).
  PRM update   cross-entropy on outcome labels, lr 1e-6, grad clip 10.0, mini-batches of 256
               responses (4 AdamW steps per RL step), single forward: mini-batch k scored by
               the PRM after k-1 updates (A3; official dp_prime.py).
  norm scope   code-mode normalisation within each of 8 contiguous shards of 128 responses, the
               official run's data-parallel workers (A3).
  policy       one PPO epoch, clip 0.2, no KL, no entropy bonus, mini-batch 256 responses,
               lr 5e-7 AdamW constant, grad clip 1.0 (A3); AdamW weight decay 0.01 for the
               policy and 0 for the PRM, betas (0.9, 0.999) (the official workers' defaults and
               the PRM's config).
  steps        592 (A3; A8 reports 43.9 average at 592 steps, 41.0 at 240).
  evaluation   greedy pass@1 on AIME24, AMC, MATH-500, Minerva, OlympiadBench (A8).

Deliberate differences:
  - Math prompts only: `math_files.load_eurus2` keeps `ability == "math"` rows, because code rows
    need a test runner this codebase does not have; LeetCode / LiveCodeBench are not evaluated.
  - The refill follows PRIME's trainer (rounds of 256 prompts until 256 groups pass, the prompts
    of surplus accepted groups buffered for the next step) but gives up after
    `filter.max_rounds = 16` rounds with a warning (`filter/rounds_exhausted`) and tops the batch
    up with rejected groups; the official trainer has no bound.
  - micro-batch 64 responses, log-prob chunk 512, eval every 16 steps, checkpoints every 16 steps:
    memory and bookkeeping choices, not the paper's. On 8 GPUs pass
    `--config.train.micro_batch_size=8` (see `prl-jax memory`).
  - The loop evaluates one `eval_file` (MATH-500 here); the other benchmarks are separate runs of
    the evaluation command on the final checkpoint.
"""

from configs.paper.common import paper_config, prime_setting

BENCHMARKS = ("aime24", "amc", "math500", "minerva", "olympiadbench")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen2.5-math-7b", layout="eurus2")
  c.method = "prime"
  prime_setting(c)

  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  c.filter.drop_truncated = False
  c.filter.max_rounds = 16
  c.filter.oversample = 1

  c.algo.prime.beta = 0.05
  c.algo.prime.mode = "code"
  c.algo.prime.granularity = "token"
  c.algo.prime.base = "rloo"
  c.algo.prime.double_forward = False
  c.algo.prime.prm_mini_batch_size = 256  # 1024 / 256 = 4 PRM steps per RL step, as the policy
  c.algo.prime.norm_shards = 8  # the run's 8 data-parallel workers, 128 responses each
  c.train.steps = 592
  return c
