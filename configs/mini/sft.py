"""SFT of the tiny policy on solver demonstrations: the starting point of every mini RL run."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  c.sft.steps = 300
  c.sft.batch_size = 32
  c.sft.lr = 3e-3
  return c
