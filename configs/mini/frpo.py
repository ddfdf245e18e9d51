"""FRPO: PRL with every token a step and beta = 1/eta = 0.01."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "frpo"
  c.algo.prl.eta = 100.0
  c.algo.loss.dual_clip = 3.0
  return c
