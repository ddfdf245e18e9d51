"""SFT of the lab policy on the clean demonstrator (the register solver): the capacity check G0
(the policy size must reach >= 98% per-step greedy accuracy on clean chains) and the starting
point of the buggy SFT (configs/lab/sft.py).

    prl-jax sft --config configs/lab/sft_clean.py --workdir runs/lab/capacity_sft

From scratch: 1,500 steps of 64 chains at lr 1e-3 (cosine, 50 warm-up steps). The copying of
each operation from the prompt is learned after a loss plateau near 0.46 nats per token; at lr
3e-3 (3,000 steps) the plateau lasted until about step 1,200 on one machine and never ended on
another (seed 0, per-step greedy accuracy 9%), while at 1e-3 the loss left it at about step
450 and reached 0.005 by step 750 (docs/lab.md, "The clean SFT's plateau").
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  c.task.demonstrator = "solver"
  c.sft.lr = 1e-3
  c.sft.steps = 1500
  return c
