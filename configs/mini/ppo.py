"""PPO with a learned critic (GAE, gamma = lambda = 1), as in PRIME's comparison; the critic's loss
is clipped around the rollout-time values by 0.5 (verl's `cliprange_value`)."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "ppo"
  c.algo.ppo.value_clip = 0.5
  return c
