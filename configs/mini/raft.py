"""RAFT: keep the best correct response per prompt and fine-tune on it."""

from configs import base


def get_config():
  c = base.get_config()
  c.method = "raft"
  return c
