"""PPO with a learned critic (GAE, gamma = lambda = 1), as in PRIME's comparison."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "ppo"
  return c
