"""ER-PRM in RL (arXiv 2412.11006, docs/algorithms.md: ER-PRM): RAFT that keeps the best sample by a PRM.

A PRM trained beforehand on entropy-regularised Monte Carlo labels (`prl-jax erprm`) scores every
response; its solution score is the aggregate of the step scores (algo.erprm.agg, min by default).
Of each prompt's n responses the best `algo.raft.keep_per_prompt` by that score are fine-tuned on
(policy loss "nll"). The outcome checker is not consulted: the PRM is the reward, so a PRM that
prefers wrong solutions teaches them; `erprm/kept_accuracy` against `erprm/mean_accuracy` shows
how well it picks.
"""

from __future__ import annotations

import jax.numpy as jnp

from prl_jax.algorithms.baselines import best_in_group
from prl_jax.algorithms.recipes import Advantages, Recipe, RLInputs, register


def erprm_advantages(options, x: RLInputs) -> Advantages:
  """A_t = 1 on every token of the `keep` responses of each group with the highest PRM score.

      keep_i = rank_g(prm_score_i) < keep_per_prompt   (ties: the earlier sample)

  The PRM's step scores on the step ends are the process reward of the loop's step diagnostics
  (prm/step_auroc, process/return_mean); they do not enter the advantage.
  """
  if x.prm_score is None:
    raise ValueError("method=erprm needs RLInputs.prm_score (the frozen PRM's solution scores).")
  keep = best_in_group(x.prm_score, x.group_size, options.raft.keep_per_prompt)
  kept = keep.astype(jnp.float32)
  # A response without a step scores -inf (never picked over one with steps); the logged mean
  # is over the scored ones, so it stays finite for the reward-hacking monitor.
  scored = jnp.isfinite(x.prm_score)
  score_mean = (jnp.sum(jnp.where(scored, x.prm_score, 0.0))
                / jnp.maximum(jnp.sum(scored), 1).astype(jnp.float32))
  return Advantages(kept[:, None] * x.mask, {
      "raft/kept_fraction": jnp.mean(kept),
      "erprm/kept_accuracy": jnp.sum(kept * x.outcome) / jnp.maximum(jnp.sum(kept), 1.0),
      "erprm/mean_accuracy": jnp.mean(x.outcome),
      "erprm/score_mean": score_mean}, process_reward=x.prm_steps)


register(Recipe("erprm", erprm_advantages, frozen_prm=True, policy_loss="nll", unit_outcome=True))
