"""GRPO on the outcome reward: group-normalised advantages, token-mean PPO-clip with the same dual
clip 3.0 as PRL/FRPO (verl's `clip_ratio_c`), so the comparison differs only in the advantage."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "grpo"
  c.algo.loss.dual_clip = 3.0
  return c
