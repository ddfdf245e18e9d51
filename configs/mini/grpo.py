"""GRPO on the outcome reward: group-normalised advantages, token-mean PPO-clip."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "grpo"
  return c
