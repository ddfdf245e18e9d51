"""PRIME (arXiv 2502.01456): implicit process rewards from a PRM trained on outcome labels.

Token process reward r_t = beta log(pi_phi/pi_ref)(y_t), summed per step; in code mode the scores
are divided by the batch's largest |return-to-go| (`normalize_scores`). The outcome and process
sources each get an RLOO baseline, their returns are added 1:1 and whitened over the batch
(section 3 of ALGORITHMS.md; `algo.prime.*` selects mode, granularity and base estimator).
"""

from __future__ import annotations

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import Recipe, RLInputs, register
from prl_jax.rewards import implicit


def prime_advantages(options, x: RLInputs):
  """A = whiten(R_outcome + R_process) with per-source RLOO baselines (PRIME Eq. 5 / code)."""
  scores = implicit.implicit_scores(x.prm_logp, x.ref_logp, x.mask, x.step_end)
  if options.prime.mode == "code":
    scores = implicit.normalize_scores(scores, x.mask)
  else:
    scores = options.prime.beta * scores
  token_adv = adv.prime(scores, x.outcome, x.mask, x.group_size, mode=options.prime.mode,
                        gamma=options.gamma, base=options.prime.base)
  accuracy, pairs = implicit.pairwise_accuracy(scores, x.outcome, x.mask, x.group_size)
  return token_adv, {"prm/pairwise_accuracy": accuracy, "prm/pairs": pairs}


register(Recipe("prime", prime_advantages, needs_ref=True, prm="prime_ce", min_group_size=2))
