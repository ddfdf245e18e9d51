"""PRL's KL-to-go (Process Reward Learning, arXiv 2601.10201; docs/algorithms.md: PRL).

At the optimum of E[r] - (1/eta) KL(pi || pi_0) the value r - (1/eta) log(pi/pi_0) is constant
per prompt, so the process reward of a prefix is the outcome minus (1/eta) times the log-ratio
still to come. That log-ratio, accumulated from the current token to the end, is the KL-to-go.
"""

from __future__ import annotations


import chex
import jax.numpy as jnp

from prl_jax.ops.returns import check_mask_like, reverse_cumsum
from prl_jax.ops.checks import shape_errors as _shape_errors


def kl_to_go(logp_old: chex.Array, logp_ref: chex.Array, mask: chex.Array) -> chex.Array:
  """KL-to-go of PRL (arXiv 2601.10201; docs/algorithms.md: PRL, as in the official code).

      delta_t = (log pi_old(y_t) - log pi_ref(y_t)) * mask_t
      G_t     = sum_{j >= t} delta_j          (the current token included)

  Args:
    logp_old: [B, T] log-probs of the sampled tokens under the rollout policy.
    logp_ref: [B, T] log-probs of the same tokens under the frozen initial model.
    mask: [B, T] response mask.

  Returns:
    [B, T] float32 G, zero on padding.
  """
  with _shape_errors("kl_to_go"):
    chex.assert_rank([logp_old, logp_ref, mask], 2)
  check_mask_like("kl_to_go", mask, logp_old=logp_old, logp_ref=logp_ref)
  valid = jnp.asarray(mask) != 0
  # Padding log-probs may be -inf; selecting before subtracting keeps inf - inf out.
  old = jnp.where(valid, jnp.asarray(logp_old, jnp.float32), 0.0)
  ref = jnp.where(valid, jnp.asarray(logp_ref, jnp.float32), 0.0)
  return reverse_cumsum(old - ref, mask)
