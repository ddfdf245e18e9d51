"""RAFT: keep the best correct response per prompt and fine-tune on it."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "raft"
  return c
