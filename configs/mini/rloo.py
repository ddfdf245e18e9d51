"""RLOO on the outcome reward only, as the PRIME paper's baseline ("RLOO w/ OV only").

That baseline is PRIME's trainer with the PRM off: RLOO on the outcome, whitened over the batch
(`algo.rloo.whiten`), and the same accuracy filter as PRIME ([0.2, 0.8], refilled; see
configs/mini/prime.py), so the two differ only in the process reward.
"""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"
  c.algo.rloo.whiten = True
  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  return c
