"""PRL (arXiv 2601.10201, v1): Qwen2.5-Math-7B with token-level KL-to-go rewards (the script's adv=prm).

    prl-jax train --workdir gs://BUCKET/runs/prl7b --config \\
        configs/paper/prl_qwen25math_7b.py:hf_dir=/ckpt/Qwen2.5-Math-7B,train_file=/data/numina/train.parquet,eval_file=/data/math500

Sources ("A4" = docs/algorithms.md, PRL; "run script" = runs/run_grpo-3.sh of the official PRL
code, its Qwen2.5-Math-7B run):
  model        Qwen2.5-Math-7B (A4 "64 in the Qwen2.5-Math-7B run"; run script `model=`).
  data         NuminaMath-1.5 prompts preprocessed by the PRL code into verl rows (prompt
               messages + reward_model.ground_truth), which is the `eurus2` layout (run script).
  advantage    `adv=prm` (run script: adv_estimator=prm, prm_adv=prm): the raw outcome on every
               token minus KL-to-go / eta, no group normalisation (`algo.prl.mode="prm"`),
               eta = 100 (run script prm_eta=100; A4: eta 100-200). The script's step length 64
               is kept but unused: prm mode is token level. The paper describes `adv=orm`
               (GRPO-normalised outcome, the Llama run's mode); this config follows the script
               that trained this model, and `--config.algo.prl.mode=orm` selects the other.
  rollout      128 prompts x n = 5, temperature 1 (A4); prompt/response 1024/3072 (run script).
  policy       PPO-clip 0.2 with dual clip 3.0, token-mean, KL loss 0, entropy 0 (A4); lr 1e-6
               (A4); one update per rollout = one mini-batch of all 640 responses (A4; run script
               ppo_mini_batch_size=128 prompts x n).
  steps        500 (the checkpoint the official eval/eval.sh evaluates is "step500").
  evaluation   8 samples at temperature 1, average@8 and pass@8 on MATH500, Minerva, OlympiadBench,
               AIME24, AMC23 (A4).

Deliberate differences:
  - AdamW weight decay 0.01 and b2 = 0.999 (verl's actor defaults, which the run script keeps),
    grad clip 1.0, constant lr.
  - Evaluation every 50 steps with the paper's 8 samples at temperature 1 (the run script
    validates on MATH500 every 5 steps with its own sampling); the loop evaluates one eval_file.
  - micro-batch 64 responses and log-prob chunk 512 are memory choices; on 8 GPUs pass
    `--config.train.micro_batch_size=8` (see `prl-jax memory`).
"""

from configs.paper.common import paper_config, prl_setting

BENCHMARKS = ("math500", "minerva", "olympiadbench", "aime24", "amc23")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen2.5-math-7b", layout="eurus2")
  prl_setting(c, method="prl", steps_mode="fixed", step_length=64, eval_n=8)
  c.algo.prl.mode = "prm"  # runs/run_grpo-3.sh: raw outcome, no group normalisation
  return c
