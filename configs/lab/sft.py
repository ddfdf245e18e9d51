"""SFT of the lab policy on the buggy demonstrator (every RL arm starts here).

`--config.task.demonstrator=solver` trains on clean demonstrations instead: the capacity check
(the policy size must reach >= 98% per-step greedy accuracy on clean chains).
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  return c
