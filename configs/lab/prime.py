"""PRIME on the lab budget: implicit PRM on outcome labels, RLOO per reward source, code mode,
with the paper's accuracy filter [0.2, 0.8] (as the lab's RLOO and oracle arms)."""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "prime"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.prime.mode = "code"
  c.algo.prime.granularity = "token"
  c.algo.prime.beta = 0.05
  budget.paper_filter(c)
  return c
