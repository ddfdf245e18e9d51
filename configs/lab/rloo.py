"""Outcome-only RLOO on the lab budget: the control the oracle and every process-reward arm are
measured against."""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"
  c.init_from = "runs/lab/sft/final_hf"
  budget.paper_filter(c)
  return c
