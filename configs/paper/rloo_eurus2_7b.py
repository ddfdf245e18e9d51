"""PRIME's RLOO baseline (arXiv 2502.01456, Table 1 and 4 "RLOO w/ OV only"): Eurus-2-7B-SFT
trained on the outcome verifier alone, by PRIME's trainer with the PRM off.

    prl-jax train --workdir gs://BUCKET/runs/rloo --config \\
        configs/paper/rloo_eurus2_7b.py:hf_dir=/ckpt/Eurus-2-7B-SFT,train_file=/data/eurus2/train.parquet,eval_file=/data/math500

Sources ("A3" = docs/algorithms.md, PRIME; "A8" = its headline results):
  everything   as configs/paper/prime_eurus2_7b.py (model, data, rollout, policy optimiser and
               schedule, evaluation), so the two runs differ only in the process reward.
  advantage    RLOO on the outcome, then masked whitening over the batch (`algo.rloo.whiten`):
               the PRIME trainer's returns with no PRM source (A3 "the same trainer with the PRM
               off").
  filter       the same accuracy band [0.2, 0.8] with refill and prompt buffer as PRIME (A3).
  steps        240 (A8: RLOO 36.9 average at 240 steps, against PRIME's 41.0).
"""

from configs.paper import prime_eurus2_7b

BENCHMARKS = prime_eurus2_7b.BENCHMARKS


def get_config(arg=None):
  c = prime_eurus2_7b.get_config(arg)
  c.method = "rloo"
  c.algo.rloo.whiten = True
  c.train.steps = 240
  return c
