"""ER-PRM: entropy-regularised process labels and the PRM's two-token loss.

Zhang et al. 2024, "Entropy-Regularized Process Reward Model", arXiv 2412.11006, section 5 (the
label derivation) and the training recipe of the official code.

The label of a step prefix s_k is estimated from N Monte Carlo completions of the initial policy
pi_0 with outcomes l_i in {0, 1}:

    r_k = (1/eta) log( (1/N) sum_i exp(eta * l_i) )

With c correct of N this is (1/eta) log(1 + (c/N)(e^eta - 1)), which lies in [0, 1], tends to the
soft label c/N as eta -> 0 and to the hard label 1[c > 0] as eta -> inf. (ER-PRM writes the
KL regulariser as (1/eta) KL, i.e. PRIME's beta = 1/eta.) The final step of a solution is labelled
with the hard correctness of the full solution by the caller.

The PRM is a causal LM read at step-tag positions: with the logits z+ and z- of the "+" and "-"
tokens, the step score is softmax([z+, z-])[0] and training minimises the soft cross-entropy
against (r_k, 1 - r_k). A solution's score aggregates its step scores (`best_of_n`, section 6).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.ops.returns import log_mean_exp
from prl_jax.ops.checks import shape_errors as _shape_errors, is_concrete as _is_concrete

AGGREGATIONS = ("min", "product", "last", "mean")


def best_of_n(step_scores: chex.Array, agg: str, step_mask: chex.Array | None = None) -> chex.Array:
  """Solution score of each candidate from its PRM step scores (ER-PRM section 6).

      min:     min_k s_k          (the paper's default)
      product: prod_k s_k
      last:    s_K, the last valid step
      mean:    (1/K) sum_k s_k

  over the valid steps k of the candidate. A candidate with no valid step scores -inf, so it is
  never selected over one that has steps.

  Args:
    step_scores: [..., S] step scores (e.g. `prl_jax.rewards.er_prm.step_scores`), rank 1-3.
    agg: one of AGGREGATIONS.
    step_mask: optional [..., S], 1 on valid steps (ragged candidates); None means all valid.

  Returns:
    [...] float32 solution scores.
  """
  if agg not in AGGREGATIONS:
    raise ValueError(f"best_of_n: unknown agg {agg!r}; expected one of {AGGREGATIONS}")
  s = jnp.asarray(step_scores, jnp.float32)
  m = jnp.ones(s.shape, bool) if step_mask is None else jnp.asarray(step_mask).astype(bool)
  try:
    chex.assert_rank(s, {1, 2, 3})
    chex.assert_equal_shape([s, m])
  except AssertionError as err:
    raise ValueError(f"best_of_n: bad input shapes: {err}") from None
  count = jnp.sum(m, axis=-1)
  if agg == "min":
    out = jnp.min(jnp.where(m, s, jnp.inf), axis=-1)
  elif agg == "product":
    out = jnp.prod(jnp.where(m, s, 1.0), axis=-1)
  elif agg == "mean":
    out = jnp.sum(jnp.where(m, s, 0.0), axis=-1) / jnp.maximum(count, 1)
  else:  # last
    idx = jnp.arange(s.shape[-1])
    last = jnp.max(jnp.where(m, idx, -1), axis=-1, keepdims=True)
    out = jnp.take_along_axis(s, jnp.maximum(last, 0), axis=-1)[..., 0]
  return jnp.where(count > 0, out, -jnp.inf)


# Below this eta the count form returns c/N, its eta -> 0 limit (log1p would give ~0 / ~0).
_TINY_ETA = 1e-20


def _check_eta(eta) -> None:
  if _is_concrete(eta):
    v = np.asarray(eta, dtype=np.float64)
    if np.any(np.isnan(v)) or not np.all(v > 0):
      raise ValueError(f"eta must be > 0 (use float('inf') for hard labels), got {eta}")


def _is_inf(eta) -> bool:
  return _is_concrete(eta) and bool(np.all(np.isinf(np.asarray(eta, dtype=np.float64))))


def er_prm_label(labels: chex.Array, eta: float) -> chex.Array:
  """Entropy-regularised step label from Monte Carlo outcomes (ER-PRM section 5).

      r = (1/eta) log( (1/N) sum_{i=1}^{N} exp(eta * l_i) )

  computed by `prl_jax.ops.returns.log_mean_exp`, which falls back to the mean (soft label,
  Math-Shepherd "soft") for eta -> 0. eta = inf gives the hard label max_i l_i ("any completion
  correct"). A traced eta must be finite.

  Args:
    labels: [..., N] outcomes of N completions per prefix (0/1; soft values are allowed); rank 1-4.
    eta: positive regularisation strength, or float('inf').

  Returns:
    [...] float32 labels.
  """
  x = jnp.asarray(labels, jnp.float32)
  with _shape_errors("er_prm_label"):
    chex.assert_rank(x, {1, 2, 3, 4})
  if x.shape[-1] < 1:
    raise ValueError("er_prm_label: need at least one completion per prefix (N >= 1)")
  _check_eta(eta)
  if _is_inf(eta):
    return jnp.max(x, axis=-1)
  return log_mean_exp(x, eta, axis=-1)


def er_prm_label_from_counts(c: chex.Array, n: chex.Array, eta: float) -> chex.Array:
  """ER-PRM label from the number of correct completions c out of n (ER-PRM section 5).

      r = (1/eta) log(1 + p (e^eta - 1)),   p = c / n.

  Evaluated without overflow: for eta <= 1 as log1p(p * expm1(eta)) / eta (exact near eta = 0,
  c/n below a tiny eta); for eta > 1 as 1 + log(p + (1 - p) e^{-eta}) / eta, which stays finite for
  any eta, including inf (the hard label 1[c > 0]). c = 0 gives exactly 0 and c = n exactly 1.

  Args:
    c: correct completions, broadcastable with n.
    n: completions per prefix (> 0).
    eta: positive regularisation strength, or float('inf').

  Returns:
    float32 labels in [0, 1], the broadcast shape of c and n.
  """
  _check_eta(eta)
  if _is_concrete(c) and _is_concrete(n):
    cv, nv = np.asarray(c), np.asarray(n)
    if not np.all(nv > 0):
      raise ValueError(f"er_prm_label_from_counts: n must be > 0, got {n}")
    if not np.all((cv >= 0) & (cv <= nv)):
      raise ValueError(f"er_prm_label_from_counts: need 0 <= c <= n, got c={c}, n={n}")
  p = jnp.asarray(c, jnp.float32) / jnp.asarray(n, jnp.float32)
  eta = jnp.asarray(eta, jnp.float32)
  eta_small = jnp.clip(eta, _TINY_ETA, 1.0)
  small = jnp.log1p(p * jnp.expm1(eta_small)) / eta_small
  small = jnp.where(eta < _TINY_ETA, p, small)
  eta_large = jnp.maximum(eta, 1.0)
  p_safe = jnp.where(p > 0, p, 1.0)
  large = 1.0 + jnp.log(p_safe + (1.0 - p_safe) * jnp.exp(-eta_large)) / eta_large
  large = jnp.where(p > 0, large, 0.0)
  return jnp.where(eta <= 1.0, small, large)


def step_scores(logit_plus: chex.Array, logit_minus: chex.Array) -> chex.Array:
  """PRM step score softmax([z+, z-])[0] = sigmoid(z+ - z-) (ER-PRM section 5, inference).

  Args:
    logit_plus: [...] logits of the "+" token at step-tag positions.
    logit_minus: [...] logits of the "-" token, same shape.

  Returns:
    float32 probabilities that each step is good, same shape.
  """
  with _shape_errors("step_scores"):
    chex.assert_equal_shape([logit_plus, logit_minus])
  d = logit_plus.astype(jnp.float32) - logit_minus.astype(jnp.float32)
  return jax.nn.sigmoid(d)


def er_prm_loss(logit_plus: chex.Array, logit_minus: chex.Array, target: chex.Array,
                mask: chex.Array | None = None) -> tuple[chex.Array, chex.Array]:
  """Two-token soft cross-entropy of the ER-PRM head (ER-PRM section 5, PRM training).

      L = -[ r log softmax(z)_+ + (1 - r) log softmax(z)_- ]
        = -[ r log sigmoid(z+ - z-) + (1 - r) log sigmoid(z- - z+) ]

  summed over the positions where mask is 1 (the step tags), returned as (sum, count) so
  micro-batching cannot change the mean. Masked positions contribute exactly 0, whatever their
  logits.

  Args:
    logit_plus: [B, T] (or [K]) logits of "+".
    logit_minus: same shape, logits of "-".
    target: same shape, soft labels r in [0, 1] (e.g. from `er_prm_label`).
    mask: same shape, 1 at step-tag positions; None means every position.

  Returns:
    (loss_sum, count), float32 scalars.
  """
  if mask is None:
    mask = jnp.ones(jnp.shape(logit_plus), dtype=bool)
  with _shape_errors("er_prm_loss"):
    chex.assert_rank(logit_plus, {1, 2})
    chex.assert_equal_shape([logit_plus, logit_minus, target, mask])
  if _is_concrete(target) and _is_concrete(mask):
    t = np.asarray(target)[np.asarray(mask).astype(bool)]
    if not np.all((t >= 0) & (t <= 1)):
      raise ValueError("er_prm_loss: targets must lie in [0, 1]")
  valid = mask.astype(bool)
  d = jnp.where(valid, logit_plus.astype(jnp.float32) - logit_minus.astype(jnp.float32), 0.0)
  r = jnp.where(valid, target.astype(jnp.float32), 0.0)
  per_step = -(r * jax.nn.log_sigmoid(d) + (1.0 - r) * jax.nn.log_sigmoid(-d))
  return jnp.sum(jnp.where(valid, per_step, 0.0)), jnp.sum(valid.astype(jnp.float32))
