"""GRPO on the countdown sub-lab: FRPO's fair control without any KL (configs/lab/grpo.py).

    A_b = (r_b - mean_g r) / (std_g r + 1e-6),   constant over the response

method=grpo and algo.loss.dual_clip=3.0 (PRL/FRPO's policy loss, verl's `clip_ratio_c`), as the
register lab's GRPO arm; it starts from the sub-lab's SFT (budget.SFT_DIR).
"""

from configs.lab.countdown import budget


def get_config():
  c = budget.get_config()
  c.method = "grpo"
  c.init_from = budget.SFT_DIR
  c.algo.loss.dual_clip = 3.0
  return c
