"""REINFORCE with a batch-mean baseline on the outcome reward."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "reinforce"
  return c
