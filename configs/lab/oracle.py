"""The positive control: the register task's step checker as the process reward (method=oracle),
through PRIME's code-mode two-source RLOO on the lab budget."""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "oracle"
  c.init_from = "runs/lab/sft/final_hf"
  budget.paper_filter(c)
  return c
