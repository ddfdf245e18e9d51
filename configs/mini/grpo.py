"""GRPO on the outcome reward: group-normalised advantages, token-mean PPO-clip."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "grpo"
  return c
