"""PRIME at CPU scale: implicit PRM on outcome labels, RLOO per reward source, code mode."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "prime"
  c.algo.prime.mode = "code"
  c.algo.prime.granularity = "token"
  return c
