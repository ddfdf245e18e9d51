"""REINFORCE with a batch-mean baseline on the outcome reward."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "reinforce"
  return c
