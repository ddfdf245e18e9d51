"""PRIME at CPU scale: implicit PRM on outcome labels, RLOO per reward source, code mode.

As in the paper, groups are kept only when their accuracy lies in [0.2, 0.8] (refilled from
further prompts). Without the filter the tiny run collapses: most groups are all-wrong, the PRM
learns to lower the likelihood of typical responses, and its normalised process reward then
favours ever shorter answers (docs/results.md).
"""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "prime"
  c.algo.prime.mode = "code"
  c.algo.prime.granularity = "token"
  c.algo.prime.beta = 0.05
  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  return c
