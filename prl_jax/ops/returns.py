"""Masked returns, reductions and the log-mean-exp (docs/algorithms.md: Shared pieces).

Arrays are [B, T] with time on the last axis; `mask` is 1 (or True) on valid response tokens.
Positions where the mask is 0 never feed a result and come back as 0, so padding may hold any
value, including inf or NaN. All arithmetic is float32.

Recursions over time run as `lax.scan` (`linear_recurrence`) or cumsums, never as Python loops,
so they trace to a fixed-size program whatever T is.
"""

from __future__ import annotations

import functools
import numbers

import chex
import jax
import jax.numpy as jnp
import numpy as np
from prl_jax.ops.checks import shape_errors as _shape_errors, is_concrete as _is_concrete

# Added to the variance in `masked_whiten`, as in PRIME's and verl's whitening.
WHITEN_EPS = 1e-8
# Below this eta, `log_mean_exp` returns the plain mean (its eta -> 0 limit).
TINY_ETA = 1e-6
# Switch point of `log_mean_exp` between its two stable forms, in units of eta * (max - min).
_LME_SPREAD_SWITCH = 1.0
# Time steps per loop iteration of `linear_recurrence`: fewer, larger iterations on accelerators.
_SCAN_UNROLL = 8


def check_mask_like(fn_name: str, mask: chex.Array, **arrays) -> None:
  """Raises ValueError unless every named array has exactly the mask's shape.

  Shapes are static, so this check also runs (once, at trace time) under jit.
  """
  for name, x in arrays.items():
    if x is None:
      continue
    if tuple(np.shape(x)) != tuple(np.shape(mask)):
      raise ValueError(
          f"{fn_name}: {name} has shape {tuple(np.shape(x))} but mask has shape "
          f"{tuple(np.shape(mask))}; pass arrays of one [B, T] layout")


def _valid(mask: chex.Array) -> chex.Array:
  return jnp.asarray(mask) != 0


@functools.partial(jax.jit, static_argnames="reverse")
def _scan_recurrence(a: chex.Array, b: chex.Array, reverse: bool) -> chex.Array:
  # Time-major for lax.scan; jitted on its own so a host-side call compiles once per shape.
  a_t, b_t = jnp.moveaxis(a, -1, 0), jnp.moveaxis(b, -1, 0)

  def step(h, ab):
    h = ab[0] * h + ab[1]
    return h, h

  _, h = jax.lax.scan(step, jnp.zeros_like(b_t[0]), (a_t, b_t), reverse=reverse,
                      unroll=_SCAN_UNROLL)
  return jnp.moveaxis(h, 0, -1)


def linear_recurrence(a: chex.Array, b: chex.Array, reverse: bool = False) -> chex.Array:
  """First-order linear recurrence along the last axis.

      forward:  h_t = a_t * h_{t-1} + b_t,   h_{-1} = 0
      reverse:  h_t = a_t * h_{t+1} + b_t,   h_T = 0

  A `lax.scan` over time. The parallel form (`lax.associative_scan` on the associative pairs
  (a, b)) has O(log T) depth but took seconds to compile for T in the thousands on CPU, while the
  sequential scan is exact, deterministic and compiles in a fraction of a second.

  Args:
    a: [..., T] multipliers.
    b: [..., T] inputs.
    reverse: run from the last position to the first.

  Returns:
    [..., T] float32 h.
  """
  with _shape_errors("linear_recurrence"):
    chex.assert_equal_shape([a, b])
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.ndim == 0:
    raise ValueError("linear_recurrence: inputs need a time axis (rank >= 1)")
  return _scan_recurrence(a, b, bool(reverse))


def reverse_cumsum(x: chex.Array, mask: chex.Array, gamma: float = 1.0) -> chex.Array:
  """Discounted return-to-go (docs/algorithms.md: Shared pieces).

      R_t = x_t + gamma * R_{t'}   on valid t, with t' the next valid position (R = 0 past the end)

  For right-padded masks t' = t + 1. A masked hole passes the return through undiscounted, so
  discounting counts response tokens only (the convention of verl's GAE for observation tokens).
  gamma = 1 is a flipped cumsum; any other gamma a reverse `linear_recurrence`.

  Args:
    x: [B, T] per-token quantity.
    mask: [B, T] response mask (float or bool).
    gamma: discount in [0, 1]; a Python number or a scalar array.

  Returns:
    [B, T] float32 R, zero where the mask is 0.
  """
  with _shape_errors("reverse_cumsum"):
    chex.assert_rank([x, mask], 2)
  check_mask_like("reverse_cumsum", mask, x=x)
  if _is_concrete(gamma) and not 0.0 <= float(gamma) <= 1.0:
    raise ValueError(f"reverse_cumsum: gamma must lie in [0, 1], got {gamma}")
  valid = _valid(mask)
  xm = jnp.where(valid, jnp.asarray(x, jnp.float32), 0.0)
  if isinstance(gamma, numbers.Real) and float(gamma) == 1.0:
    r = jnp.flip(jnp.cumsum(jnp.flip(xm, -1), axis=-1), -1)
  else:
    a = jnp.where(valid, jnp.asarray(gamma, jnp.float32), 1.0)
    r = linear_recurrence(a, xm, reverse=True)
  return jnp.where(valid, r, 0.0)


def masked_sum(x: chex.Array, mask: chex.Array, axis=None) -> chex.Array:
  """sum_t x_t mask_t over `axis` (all axes when None), whatever padding holds (section 1.7)."""
  check_mask_like("masked_sum", mask, x=x)
  return jnp.sum(jnp.where(_valid(mask), jnp.asarray(x, jnp.float32), 0.0), axis=axis)


def masked_mean(x: chex.Array, mask: chex.Array, axis=None) -> chex.Array:
  """sum(x mask) / sum(mask) over `axis`, all axes when None (docs/algorithms.md: Shared pieces).

  An empty selection gives 0 rather than NaN, so an all-padding row cannot poison a batch.
  """
  check_mask_like("masked_mean", mask, x=x)
  count = jnp.sum(_valid(mask).astype(jnp.float32), axis=axis)
  return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_whiten(x: chex.Array, mask: chex.Array) -> chex.Array:
  """Whitening over all valid tokens of the batch (docs/algorithms.md: Shared pieces; PRIME's advantages).

      mu = mean_valid(x),  var = N/(N-1) * mean_valid((x - mu)^2),  out = (x - mu)/sqrt(var + 1e-8)

  N is the number of valid tokens; the mean is not added back. With N = 1 the variance is 0 and
  the single token maps to 0 (the Bessel factor is taken as 1 there rather than dividing by 0).

  Args:
    x: [B, T] values.
    mask: [B, T] response mask.

  Returns:
    [B, T] float32, zero where the mask is 0.
  """
  with _shape_errors("masked_whiten"):
    chex.assert_rank([x, mask], 2)
  check_mask_like("masked_whiten", mask, x=x)
  valid = _valid(mask)
  n = jnp.sum(valid.astype(jnp.float32))
  mean = masked_mean(x, mask)
  centred = jnp.where(valid, jnp.asarray(x, jnp.float32) - mean, 0.0)
  var = jnp.sum(centred**2) / jnp.maximum(n, 1.0)
  var = var * n / jnp.maximum(n - 1.0, 1.0)
  return centred * jax.lax.rsqrt(var + WHITEN_EPS)


def log_mean_exp(x: chex.Array, eta, axis: int = -1) -> chex.Array:
  """Entropy-regularised soft maximum (docs/algorithms.md: Shared pieces; the ER-PRM
  step label of arXiv 2412.11006).

      LME_eta(x) = (logsumexp(eta * x) - log N) / eta = (1/eta) log( (1/N) sum_i exp(eta x_i) )

  Limits: eta -> 0 gives mean(x), eta -> inf gives max(x). Two algebraically equal forms keep
  float32 accurate over the whole range:
    - small eta * spread: mean + log1p(mean(expm1(eta (x - mean)))) / eta; the subtraction of
      log N would otherwise cancel almost all digits before the division by a small eta;
    - large eta * spread: max + log(mean(exp(eta (x - max)))) / eta; nothing overflows, even for
      eta = 1e3.
  Below eta = 1e-6 the mean itself is returned. The branches are combined with `jnp.where` on a
  safe eta and clipped arguments, so gradients stay finite in every branch.

  Args:
    x: [..., N, ...] values; reduced over `axis`.
    eta: >= 0 (eta = 0 is the mean); a Python number or an array broadcastable to the result.
    axis: the axis of the N samples.

  Returns:
    float32 array of x's shape without `axis`.
  """
  x = jnp.asarray(x, jnp.float32)
  with _shape_errors("log_mean_exp"):
    chex.assert_rank(x, {1, 2, 3, 4, 5})
  if _is_concrete(eta):
    v = np.asarray(eta, dtype=np.float64)
    if np.any(np.isnan(v)) or np.any(v < 0) or np.any(np.isinf(v)):
      raise ValueError(f"log_mean_exp: eta must be finite and >= 0, got {eta}")
  axis = axis % x.ndim
  return _log_mean_exp(x, jnp.asarray(eta, jnp.float32), axis)


@functools.partial(jax.jit, static_argnames="axis")
def _log_mean_exp(x: chex.Array, eta: chex.Array, axis: int) -> chex.Array:
  """The two stable forms of `log_mean_exp`, selected per slice; one compiled program."""
  if eta.ndim:
    eta = jnp.expand_dims(eta, axis)
  tiny = eta < TINY_ETA
  safe_eta = jnp.where(tiny, 1.0, eta)

  mean = jnp.mean(x, axis=axis, keepdims=True)
  hi = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  lo = jnp.min(x, axis=axis, keepdims=True)

  # Clipping keeps the branch that `where` discards finite, so its zero cotangent stays zero.
  z = jnp.clip(safe_eta * (x - mean), -30.0, 30.0)
  mean_expm1 = jnp.maximum(jnp.mean(jnp.expm1(z), axis=axis, keepdims=True), -0.5)
  near_mean = mean + jnp.log1p(mean_expm1) / safe_eta

  near_max = hi + jnp.log(jnp.mean(jnp.exp(safe_eta * (x - hi)), axis=axis,
                                   keepdims=True)) / safe_eta

  small_spread = safe_eta * jax.lax.stop_gradient(hi - lo) < _LME_SPREAD_SWITCH
  out = jnp.where(tiny, mean, jnp.where(small_spread, near_mean, near_max))
  return jnp.squeeze(out, axis=axis)
