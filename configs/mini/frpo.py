"""FRPO: PRL with every token a step and beta = 1/eta = 0.01."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "frpo"
  c.algo.prl.eta = 100.0
  c.algo.loss.dual_clip = 3.0
  return c
