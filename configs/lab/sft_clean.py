"""SFT of the lab policy on the clean demonstrator (the register solver): the capacity check G0
(the policy size must reach >= 98% per-step greedy accuracy on clean chains) and the starting
point of the buggy SFT (configs/lab/sft.py).

    prl-jax sft --config configs/lab/sft_clean.py --workdir runs/lab/capacity_sft

From scratch: 3,000 steps of 64 chains at lr 3e-3 (cosine, 50 warm-up steps); the copying of
each operation from the prompt is learned late (loss plateau until about step 1,200).
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  c.task.demonstrator = "solver"
  return c
