"""RLOO on the outcome reward only (the PRIME paper's baseline)."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"
  return c
