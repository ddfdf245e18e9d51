"""PRL (arXiv 2601.10201, v1): Llama-3.2-3B with KL-to-go process rewards over 256-token steps.

    prl-jax train --workdir gs://BUCKET/runs/prl3b --config \\
        configs/paper/prl_llama32_3b.py:hf_dir=/ckpt/Llama-3.2-3B-Instruct,train_file=/data/numina/train.parquet,eval_file=/data/math500

Sources ("A4" = docs/algorithms.md, PRL; "run script" = runs/run_grpo.sh of the official PRL code,
whose shared settings the paper's Llama run is taken to use):
  model        Llama-3.2-3B shapes (A4 "256 in the Llama-3.2-3B run"); the checkpoint (base or
               instruct) is whatever `hf_dir` names.
  data         NuminaMath-1.5 prompts preprocessed by the PRL code into verl rows, which is the
               `eurus2` layout (run script).
  advantage    `adv=orm`: GRPO-normalised outcome minus KL-to-go / eta at the ends of fixed
               256-token steps (A4), eta = 200 (run script prm_eta=200; A4 gives 100-200).
  rollout      128 prompts x n = 5, temperature 1 (A4); prompt/response 1024/3072 (run script).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0, lr 1e-6, one
               update per rollout (A4).
  steps        500 (as the 7B run; docs/algorithms.md gives no step count).
  evaluation   8 samples at temperature 1, average@8 and pass@8 on MATH500, Minerva, OlympiadBench,
               AIME24, AMC23 (A4).

Deliberate differences:
  - AdamW weight decay 0.01 and b2 = 0.999 (verl's actor defaults, which the run script keeps),
    grad clip 1.0, constant lr.
  - Evaluation every 50 steps; the loop evaluates one eval_file (MATH500 here).
  - FSDP over every device like the 7B configs (a 3B model would also fit with data parallelism
    over groups of 8); micro-batch 64 responses; on 8 GPUs pass `--config.train.micro_batch_size=8`.
"""

from configs.paper.common import paper_config, prl_setting

BENCHMARKS = ("math500", "minerva", "olympiadbench", "aime24", "amc23")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="llama-3.2-3b", layout="eurus2")
  prl_setting(c, method="prl", steps_mode="fixed", step_length=256, eval_n=8)
  c.algo.prl.eta = 200.0  # runs/run_grpo.sh: prm_eta=200
  return c
