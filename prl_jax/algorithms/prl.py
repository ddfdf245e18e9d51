"""PRL (arXiv 2601.10201) and its FRPO form: process rewards from the KL-to-go, no extra model.

R_t = A_b - (1/eta) sum_{j>=t} log(pi_old/pi_ref)(y_j) at step ends, filled back over each step
(docs/algorithms.md: PRL). FRPO is the same with every token a step.
"""

from __future__ import annotations

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import Advantages, Recipe, RLInputs, register


def prl_advantages(options, x: RLInputs) -> Advantages:
  """PRL's `orm` (GRPO-normalised outcome) or `prm` (raw outcome) process advantage."""
  token_adv = adv.prl(x.outcome, x.old_logp, x.ref_logp, x.mask, x.step_end, x.group_size,
                      eta=options.prl.eta, mode=options.prl.mode)
  return Advantages(token_adv, {})


def check(options) -> str | None:
  if options.prl.eta <= 0:
    return f"algo.prl.eta must be > 0 (the KL weight is 1/eta), got {options.prl.eta}."
  return None


register(Recipe("prl", prl_advantages, needs_ref=True, min_group_size=2, check=check,
                reads_old_logp=True))
# FRPO is PRL with every token a step, whatever algo.steps.mode says.
register(Recipe("frpo", prl_advantages, needs_ref=True, min_group_size=2, check=check,
                reads_old_logp=True,
                step_mode=lambda options: "token"))
