"""Policy losses as (numerator, denominator) pairs (docs/algorithms.md: Shared pieces).

Every loss here returns a pair whose ratio is the loss. Pairs add: summing the numerators and the
denominators of any split of a batch into micro-batches, then dividing once, gives exactly the
full-batch loss, for all three aggregation modes. That is what makes gradient accumulation and
data-parallel reduction unable to change the math.

Arrays are [B, T] with a response mask of 1/True on valid tokens; log-prob math is float32.
"""

from __future__ import annotations


import chex
import jax.numpy as jnp

from prl_jax.ops.returns import check_mask_like
from prl_jax.ops.checks import shape_errors as _shape_errors, is_concrete as _is_concrete

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_KINDS = ("k1", "k2", "k3")
# exp() of a log-ratio beyond this overflows float32 or carries no information; clamp first.
LOG_RATIO_CLAMP = 20.0
# The k3 estimate is clamped to [-10, 10], as verl's low_var_kl.
K3_CLAMP = 10.0


def agg_loss(loss: chex.Array, mask: chex.Array,
             agg: str = "token-mean") -> tuple[chex.Array, chex.Array]:
  """Aggregates a per-token loss into (numerator, denominator) (docs/algorithms.md: Shared pieces).

      token-mean:           num = sum_{b,t} l m,             den = sum_{b,t} m
      seq-mean-token-mean:  num = sum_b (sum_t l m / L_b),   den = #{b : L_b > 0}
      seq-mean-token-sum:   num = sum_b sum_t l m,           den = #{b : L_b > 0}

  For the seq-mean modes the denominator counts sequences, not tokens: the mean over sequences
  of a batch split in parts is the sum of the parts' per-sequence terms over the total number of
  sequences. Rows without valid tokens (padding rows) count in neither.

  Args:
    loss: [B, T] per-token loss.
    mask: [B, T] response mask.
    agg: one of AGG_MODES.

  Returns:
    (numerator, denominator) float32 scalars.
  """
  with _shape_errors("agg_loss"):
    chex.assert_rank([loss, mask], 2)
  check_mask_like("agg_loss", mask, loss=loss)
  if agg not in AGG_MODES:
    raise ValueError(f"agg_loss: unknown agg {agg!r}; expected one of {AGG_MODES}")
  valid = jnp.asarray(mask) != 0
  m = valid.astype(jnp.float32)
  l = jnp.where(valid, jnp.asarray(loss, jnp.float32), 0.0)
  if agg == "token-mean":
    return jnp.sum(l), jnp.sum(m)
  per_seq = jnp.sum(l, axis=-1)
  length = jnp.sum(m, axis=-1)
  if agg == "seq-mean-token-mean":
    per_seq = per_seq / jnp.maximum(length, 1.0)
  return jnp.sum(per_seq), jnp.sum((length > 0).astype(jnp.float32))


def _check_clip(clip_low, clip_high, dual_clip) -> None:
  if _is_concrete(clip_low) and not 0.0 <= float(clip_low) < 1.0:
    raise ValueError(f"ppo_clip: clip_low must lie in [0, 1), got {clip_low}")
  if _is_concrete(clip_high) and not float(clip_high) >= 0.0:
    raise ValueError(f"ppo_clip: clip_high must be >= 0, got {clip_high}")
  if dual_clip is not None and _is_concrete(dual_clip) and not float(dual_clip) > 1.0:
    raise ValueError(f"ppo_clip: dual_clip must be > 1 (or None), got {dual_clip}")


def _ppo_parts(logp, old_logp, adv, clip_low, clip_high, dual_clip):
  """Per-token PPO terms: (loss, clipped, dual_clipped, log_ratio)."""
  log_ratio = jnp.clip(jnp.asarray(logp, jnp.float32) - jnp.asarray(old_logp, jnp.float32),
                       -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  adv = jnp.asarray(adv, jnp.float32)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  loss = jnp.maximum(unclipped, clipped)
  dual = jnp.zeros_like(loss, dtype=bool)
  if dual_clip is not None:
    cap = -adv * dual_clip
    dual = (adv < 0) & (loss > cap)
    loss = jnp.where(dual, cap, loss)
  return loss, clipped > unclipped, dual, log_ratio


def ppo_clip_token_loss(logp: chex.Array, old_logp: chex.Array, adv: chex.Array,
                        clip_low: float = 0.2, clip_high: float = 0.2,
                        dual_clip: float | None = None) -> chex.Array:
  """Per-token PPO clipped surrogate (Schulman et al., arXiv 1707.06347, Eq. 7; section 1.8).

      rho_t = exp(logp_t - old_logp_t)
      l_t   = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high))
      l_t   = min(l_t, -A_t c)  where A_t < 0        (dual clip c > 1, arXiv 1912.09729)

  The log-ratio is clamped to [-20, 20] before exp so a stale token cannot overflow the ratio.

  Returns:
    [B, T] float32 per-token loss (padding not masked; aggregate with `agg_loss`).
  """
  with _shape_errors("ppo_clip"):
    chex.assert_equal_shape([logp, old_logp, adv])
  _check_clip(clip_low, clip_high, dual_clip)
  return _ppo_parts(logp, old_logp, adv, clip_low, clip_high, dual_clip)[0]


def ppo_clip(logp: chex.Array, old_logp: chex.Array, adv: chex.Array, mask: chex.Array,
             clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = None,
             agg: str = "token-mean") -> tuple[chex.Array, chex.Array]:
  """PPO clipped policy loss as (numerator, denominator) (arXiv 1707.06347, Eq. 7; section 1.8).

  Per-token loss of `ppo_clip_token_loss`, aggregated by `agg_loss`. The loss is num / den; for
  micro-batches, add the nums and the dens first.

  Args:
    logp: [B, T] log-probs under the policy being trained.
    old_logp: [B, T] log-probs under the rollout policy.
    adv: [B, T] token advantages.
    mask: [B, T] response mask.
    clip_low: eps_low in [0, 1).
    clip_high: eps_high >= 0 (larger than eps_low: "clip higher").
    dual_clip: c > 1, or None for no dual clip.
    agg: one of AGG_MODES.

  Returns:
    (numerator, denominator) float32 scalars.
  """
  with _shape_errors("ppo_clip"):
    chex.assert_rank([logp, old_logp, adv, mask], 2)
  check_mask_like("ppo_clip", mask, logp=logp, old_logp=old_logp, adv=adv)
  return agg_loss(ppo_clip_token_loss(logp, old_logp, adv, clip_low, clip_high, dual_clip), mask,
                  agg)


def ppo_clip_stats(logp: chex.Array, old_logp: chex.Array, adv: chex.Array, mask: chex.Array,
                   clip_low: float = 0.2, clip_high: float = 0.2,
                   dual_clip: float | None = None) -> dict[str, tuple[chex.Array, chex.Array]]:
  """Diagnostics of the PPO step as token-mean (numerator, denominator) pairs.

      clipfrac:      fraction of tokens where the clipped branch is the max (-A clip(rho) > -A rho)
      dual_clipfrac: fraction of tokens capped by the dual clip
      approx_kl:     mean of old_logp - logp (k1 estimate of KL(pi_old || pi))

  Returns:
    {name: (numerator, denominator)}; divide after summing over micro-batches.
  """
  with _shape_errors("ppo_clip_stats"):
    chex.assert_rank([logp, old_logp, adv, mask], 2)
  check_mask_like("ppo_clip_stats", mask, logp=logp, old_logp=old_logp, adv=adv)
  _check_clip(clip_low, clip_high, dual_clip)
  _, clipped, dual, log_ratio = _ppo_parts(logp, old_logp, adv, clip_low, clip_high, dual_clip)
  return {
      "clipfrac": agg_loss(clipped.astype(jnp.float32), mask),
      "dual_clipfrac": agg_loss(dual.astype(jnp.float32), mask),
      "approx_kl": agg_loss(-log_ratio, mask),
  }


def kl(logp: chex.Array, ref_logp: chex.Array, kind: str = "k3") -> chex.Array:
  """Per-token estimators of KL(pi_theta || pi_ref) on tokens sampled from pi_theta (section 1.8).

  With log r = ref_logp - logp (r = pi_ref / pi_theta; Schulman 2020, "Approximating KL
  divergence"):
      k1 = -log r = logp - ref_logp          unbiased, high variance, can be negative
      k2 = (log r)^2 / 2                      biased, low variance, >= 0
      k3 = r - 1 - log r                      unbiased, low variance, >= 0 (verl's low_var_kl)
  k1 = +log r would be the negated estimator (its expectation is -KL), so the sign of the blog
  post and of verl is used. log r is clamped to [-20, 20] before exp and
  k3 to [-10, 10], as verl does.

  Args:
    logp: [...] log-probs under the policy.
    ref_logp: [...] log-probs under the reference, same shape.
    kind: "k1", "k2" or "k3".

  Returns:
    [...] float32 per-token estimates (padding not masked; aggregate with `agg_loss`).
  """
  with _shape_errors("kl"):
    chex.assert_equal_shape([logp, ref_logp])
  if kind not in KL_KINDS:
    raise ValueError(f"kl: unknown kind {kind!r}; expected one of {KL_KINDS}")
  log_r = jnp.asarray(ref_logp, jnp.float32) - jnp.asarray(logp, jnp.float32)
  if kind == "k1":
    return -log_r
  if kind == "k2":
    return 0.5 * jnp.square(log_r)
  log_r = jnp.clip(log_r, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  return jnp.clip(jnp.expm1(log_r) - log_r, -K3_CLAMP, K3_CLAMP)


