"""PPO with a learned critic (GAE, gamma = lambda = 1), as in PRIME's comparison."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "ppo"
  return c
