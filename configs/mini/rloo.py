"""RLOO on the outcome reward only (the PRIME paper's baseline)."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "rloo"
  return c
