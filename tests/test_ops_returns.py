"""Returns, masked reductions and log-mean-exp vs loop-based NumPy references (sections 1.2, 1.5, 1.7)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.ops import returns

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
# A few fixed shapes: every new shape costs a compilation.
shapes = st.sampled_from([(1, 1), (4, 9), (8, 16)])


def ragged_mask(rng, b, t):
  """Right-padded responses of random lengths in [1, t]."""
  lengths = rng.integers(1, t + 1, size=b)
  return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


# ---- references -------------------------------------------------------------------------------


def ref_reverse_cumsum(x, mask, gamma):
  """R_t = x_t + gamma R_{next valid}; holes pass R through; 0 on padding."""
  out = np.zeros(x.shape, dtype=np.float64)
  for b in range(x.shape[0]):
    carry = 0.0
    for t in reversed(range(x.shape[1])):
      if mask[b, t]:
        carry = float(x[b, t]) + gamma * carry
        out[b, t] = carry
  return out


def ref_whiten(x, mask):
  vals = [float(x[b, t]) for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t]]
  n = len(vals)
  mean = sum(vals) / n
  var = sum((v - mean)**2 for v in vals) / n
  if n > 1:
    var *= n / (n - 1)
  out = np.zeros(x.shape)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      if mask[b, t]:
        out[b, t] = (x[b, t] - mean) / np.sqrt(var + 1e-8)
  return out


def ref_log_mean_exp(row, eta):
  """(1/eta) log((1/N) sum exp(eta x)), in float64 with a max shift."""
  row = np.asarray(row, np.float64)
  m = max(row)
  total = 0.0
  for v in row:
    total += np.exp(eta * (v - m))
  return m + np.log(total / len(row)) / eta


# ---- tests ------------------------------------------------------------------------------------


class ReverseCumsumTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(shape=shapes, seed=st.integers(0, 2**16), gamma=st.sampled_from([1.0, 0.9, 0.5, 0.0]))
  def test_matches_reference(self, shape, seed, gamma):
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, *shape)
    x = rng.normal(size=shape).astype(np.float32)
    x[mask == 0] = np.inf  # padding must never leak
    got = self.variant(returns.reverse_cumsum, static_argnames="gamma")(x, mask, gamma=gamma)
    np.testing.assert_allclose(got, ref_reverse_cumsum(x, mask, gamma), rtol=1e-5, atol=1e-5)

  def test_masked_holes_pass_through(self):
    mask = np.array([[1, 0, 1, 1, 0, 0]], np.float32)
    x = np.array([[1.0, 100.0, 2.0, 4.0, 100.0, 100.0]], np.float32)
    got = returns.reverse_cumsum(x, mask, 0.5)
    # R_3 = 4, R_2 = 2 + 0.5*4 = 4, R_0 = 1 + 0.5*4 = 3 (the hole does not discount).
    np.testing.assert_allclose(got, [[3.0, 0.0, 4.0, 4.0, 0.0, 0.0]])
    np.testing.assert_allclose(got, ref_reverse_cumsum(x, mask, 0.5))

  def test_traced_gamma_and_vmap(self):
    rng = np.random.default_rng(3)
    masks = np.stack([ragged_mask(rng, 3, 6) for _ in range(4)])
    x = rng.normal(size=masks.shape).astype(np.float32)
    gammas = np.array([1.0, 0.9, 0.5, 0.0], np.float32)
    got = jax.jit(jax.vmap(returns.reverse_cumsum))(x, masks, gammas)
    for k in range(4):
      np.testing.assert_allclose(got[k], ref_reverse_cumsum(x[k], masks[k], float(gammas[k])),
                                 rtol=1e-5, atol=1e-5)

  def test_errors(self):
    with pytest.raises(ValueError, match="shape"):
      returns.reverse_cumsum(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="gamma"):
      returns.reverse_cumsum(np.ones((2, 3)), np.ones((2, 3)), gamma=1.5)

  def test_linear_recurrence_forward(self):
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 7)).astype(np.float32)
    b = rng.normal(size=(2, 7)).astype(np.float32)
    want = np.zeros((2, 7))
    for i in range(2):
      h = 0.0
      for t in range(7):
        h = a[i, t] * h + b[i, t]
        want[i, t] = h
    np.testing.assert_allclose(returns.linear_recurrence(a, b), want, rtol=1e-5, atol=1e-6)


class WhitenTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(shape=shapes, seed=st.integers(0, 2**16))
  def test_matches_reference(self, shape, seed):
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, *shape)
    x = (3.0 * rng.normal(size=shape) + 1.0).astype(np.float32)
    x[mask == 0] = np.nan
    got = self.variant(returns.masked_whiten)(x, mask)
    np.testing.assert_allclose(got, ref_whiten(x, mask), rtol=1e-4, atol=1e-4)
    mean = self.variant(returns.masked_mean)(x, mask)
    np.testing.assert_allclose(mean, np.nanmean(np.where(mask > 0, x, np.nan)), rtol=1e-5)

  def test_whitened_statistics(self):
    rng = np.random.default_rng(1)
    mask = ragged_mask(rng, 6, 10)
    x = rng.normal(size=mask.shape).astype(np.float32) * 5 + 2
    w = np.asarray(returns.masked_whiten(x, mask))
    vals = w[mask > 0]
    np.testing.assert_allclose(vals.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(vals.std(ddof=1), 1.0, rtol=1e-4)
    assert np.all(w[mask == 0] == 0)

  def test_single_token_and_empty_rows_are_finite(self):
    mask = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    w = returns.masked_whiten(np.array([[5.0, 1.0, 1.0], [2.0, 2.0, 2.0]]), mask)
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(w, np.zeros((2, 3)))
    assert float(returns.masked_mean(np.ones((2, 3)), np.zeros((2, 3)))) == 0.0


class LogMeanExpTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(seed=st.integers(0, 2**16),
         eta=st.sampled_from([1e-5, 1e-3, 0.1, 1.0, 5.0, 50.0, 1e3]),
         n=st.sampled_from([1, 4, 16]))
  def test_matches_float64_reference(self, seed, eta, n):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(3, n)).astype(np.float32)
    got = self.variant(returns.log_mean_exp)(x, eta)
    want = [ref_log_mean_exp(row, eta) for row in x]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)

  def test_limits(self):
    x = jnp.array([[0.0, 0.25, 1.0, -2.0], [3.0, 3.0, 3.0, 3.0]])
    # eta -> 0: the mean (exactly, below the tiny-eta threshold; to O(eta var) above it).
    np.testing.assert_allclose(returns.log_mean_exp(x, 0.0), x.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(returns.log_mean_exp(x, 1e-7), x.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(returns.log_mean_exp(x, 1e-4), x.mean(-1), atol=1e-4)
    # eta -> inf: the max, within log(N)/eta; stable at eta = 1e3.
    big = returns.log_mean_exp(x, 1e3)
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, x.max(-1), atol=np.log(4) / 1e3 + 1e-6)
    np.testing.assert_allclose(big[0], 1.0 - np.log(4) / 1e3, atol=1e-6)
    # Monotone in eta between the two limits.
    etas = [1e-3, 0.5, 1.0, 2.0, 10.0, 100.0]
    vals = [float(returns.log_mean_exp(x[0], e)) for e in etas]
    assert all(a <= b + 1e-6 for a, b in zip(vals, vals[1:]))

  def test_axis_and_array_eta(self):
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    got = returns.log_mean_exp(x, 2.0, axis=0)
    np.testing.assert_allclose(got, [ref_log_mean_exp(x[:, j], 2.0) for j in range(3)],
                               rtol=1e-5)
    etas = np.array([1e-8, 1.0, 1e3, 0.01, 3.0], np.float32)
    got = jax.jit(returns.log_mean_exp)(x, etas)
    want = [x[i].mean() if etas[i] < 1e-6 else ref_log_mean_exp(x[i], etas[i]) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_gradients_are_finite(self):
    x = jnp.array([0.0, 0.5, 1.0, -40.0])
    grad_x = jax.jit(jax.grad(returns.log_mean_exp, argnums=0))
    grad_eta = jax.jit(jax.grad(returns.log_mean_exp, argnums=1))
    for eta in [0.0, 1e-7, 1e-3, 1.0, 1e3]:
      gx = grad_x(x, jnp.float32(eta))
      assert np.all(np.isfinite(gx)), eta
      # The weights are softmax(eta x): they sum to one.
      np.testing.assert_allclose(np.sum(gx), 1.0, rtol=1e-5)
      assert np.isfinite(grad_eta(x, jnp.float32(eta))), eta

  def test_negative_eta_raises(self):
    with pytest.raises(ValueError, match="eta"):
      returns.log_mean_exp(np.ones(3), -1.0)
