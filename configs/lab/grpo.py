"""GRPO on the lab budget: FRPO's fair control without any KL (docs/algorithms.md, GRPO and
Dr.GRPO).

    A_b = (r_b - mean_g r) / (std_g r + 1e-6),   std with ddof = 1, constant over the response

Knobs that differ from configs/lab/rloo.py, and why:
- method=grpo: the group-normalised outcome advantage (`prl_jax.algorithms.advantages.grpo`), the
  outcome part of FRPO's advantage, so grpo vs frpo isolates FRPO's KL-to-go term.
- algo.loss.dual_clip=3.0: the same dual clip as configs/lab/frpo.py and prl.py (PRL/FRPO's
  policy loss, verl's `clip_ratio_c`; arXiv 2601.10201 and its official code, docs/algorithms.md,
  Sources), as configs/mini/grpo.py does.
Shared with every lab arm: the budget and PRIME's accuracy filter [0.2, 0.8] with refill
(`budget.paper_filter`); a group the filter keeps has 2-6 of 8 responses correct, so its GRPO
advantage is never identically zero.
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "grpo"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.loss.dual_clip = 3.0
  budget.paper_filter(c)
  return c
