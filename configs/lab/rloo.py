"""Outcome-only RLOO on the lab budget, as PRIME's paper ran its baseline: the same accuracy filter
as PRIME and the oracle, advantages whitened over the batch (`algo.rloo.whiten`). The control the
oracle and every process-reward arm are measured against."""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.rloo.whiten = True
  budget.paper_filter(c)
  return c
