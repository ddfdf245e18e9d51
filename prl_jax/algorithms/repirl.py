"""rePIRL (arXiv 2602.07832, reconstructed): a PRM learned by maximum-entropy inverse RL.

The PRM is implicit, r_phi(y_t) = beta log(pi_phi/pi_ref)(y_t) (option (a) of ALGORITHMS.md
section 6); it is trained against expert demonstrations with policy samples as importance samples
(`prl_jax.rewards.irl.irl_loss`). The policy takes RLOO on the sequence reward
s = r_o + lambda * sum_t r_phi(y_t).
"""

from __future__ import annotations

import jax.numpy as jnp

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import Recipe, RLInputs, register
from prl_jax.rewards import irl


def repirl_advantages(options, x: RLInputs):
  """RLOO over s_b = r_o + lambda * R_phi(y_b), constant over the response."""
  prm_rewards = options.repirl.beta * (x.prm_logp - x.ref_logp) * x.mask
  score = x.outcome + options.repirl.lam * irl.sequence_reward(prm_rewards, x.mask)
  return adv.rloo(score, x.group_size)[:, None] * x.mask, {
      "repirl/prm_return": jnp.mean(irl.sequence_reward(prm_rewards, x.mask))}


register(Recipe("repirl", repirl_advantages, needs_ref=True, prm="irl", min_group_size=2))
