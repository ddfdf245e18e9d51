"""ER-PRM labels and loss against loop references written from docs/algorithms.md: ER-PRM."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from absl.testing import absltest

from prl_jax.rewards import er_prm

SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


def ref_label(outcomes, eta):
  # (1/eta) log((1/N) sum_i exp(eta * l_i)), in float64 with the max pulled out.
  top = max(outcomes)
  s = sum(math.exp(eta * (l - top)) for l in outcomes)
  return top + math.log(s / len(outcomes)) / eta


def ref_label_counts(c, n, eta):
  return math.log(1 + (c / n) * (math.exp(eta) - 1)) / eta


def ref_soft_ce(zp, zm, r, mask):
  total, count = 0.0, 0
  for i in np.ndindex(zp.shape):
    if not mask[i]:
      continue
    lp = zp[i] - np.logaddexp(zp[i], zm[i])
    lm = zm[i] - np.logaddexp(zp[i], zm[i])
    total += -(r[i] * lp + (1 - r[i]) * lm)
    count += 1
  return total, count


class LabelTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), num_rollouts=st.sampled_from([1, 4, 16]),
                    eta=st.sampled_from([0.1, 1.0, 2.0, 10.0, 50.0]))
  def test_matches_reference(self, seed, num_rollouts, eta):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(3, 5, num_rollouts)).astype(np.float32)
    got = self.variant(er_prm.er_prm_label, static_argnums=1)(labels, eta)
    self.assertEqual(got.shape, (3, 5))
    expected = np.array([[ref_label(list(labels[p, s]), eta) for s in range(5)] for p in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(n=st.sampled_from([1, 2, 5, 16, 32]), data=st.data(),
                    eta=st.sampled_from([1e-3, 0.5, 1.0, 1.5, 5.0, 30.0]))
  def test_counts_identity(self, n, data, eta):
    c = data.draw(st.integers(0, n))
    labels = np.array([1.0] * c + [0.0] * (n - c), np.float32)
    from_labels = self.variant(er_prm.er_prm_label, static_argnums=1)(labels, eta)
    from_counts = self.variant(er_prm.er_prm_label_from_counts)(c, n, eta)
    np.testing.assert_allclose(from_counts, ref_label_counts(c, n, eta), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(from_labels, from_counts, rtol=2e-5, atol=1e-6)

  def test_limits(self):
    n = 16
    c = np.arange(n + 1)
    soft = er_prm.er_prm_label_from_counts(c, n, 1e-7)
    np.testing.assert_allclose(soft, c / n, atol=1e-6)
    np.testing.assert_allclose(er_prm.er_prm_label_from_counts(c, n, 1e-30), c / n, atol=1e-7)
    hard = (c > 0).astype(np.float32)
    for eta in (1e3, 1e5, float("inf")):
      got = er_prm.er_prm_label_from_counts(c, n, eta)
      self.assertTrue(np.all(np.isfinite(got)))
      np.testing.assert_allclose(got, hard, atol=1e-2 if eta == 1e3 else 1e-4)
    # Per-outcome form: eta -> 0 is the mean, eta = inf is the max.
    labels = np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]], np.float32)
    np.testing.assert_allclose(er_prm.er_prm_label(labels, 1e-8), labels.mean(-1), atol=1e-6)
    np.testing.assert_array_equal(er_prm.er_prm_label(labels, float("inf")), [1, 0, 1])
    np.testing.assert_allclose(er_prm.er_prm_label(labels, 1e3), [1 - math.log(4) / 1e3, 0, 1 -
                                                                    math.log(4 / 3) / 1e3],
                               atol=1e-5)

  def test_bounds_and_monotone(self):
    c = np.arange(9)
    for eta in (0.01, 1.0, 3.0, 100.0):
      got = np.asarray(er_prm.er_prm_label_from_counts(c, 8, eta))
      self.assertTrue(np.all((got >= 0) & (got <= 1)))
      self.assertTrue(np.all(np.diff(got) > 0))
      self.assertEqual(got[0], 0.0)
      self.assertAlmostEqual(float(got[-1]), 1.0, places=6)
      # The entropy-regularised label sits above the soft label (Jensen).
      self.assertTrue(np.all(got[1:-1] > c[1:-1] / 8))

  def test_vmap(self):
    labels = np.random.default_rng(0).integers(0, 2, size=(4, 6, 8)).astype(np.float32)
    got = jax.jit(jax.vmap(lambda x: er_prm.er_prm_label(x, 2.0)))(labels)
    np.testing.assert_allclose(got, er_prm.er_prm_label(labels, 2.0), rtol=1e-6)

  def test_bad_eta(self):
    for eta in (0.0, -1.0, float("nan")):
      with pytest.raises(ValueError, match="eta"):
        er_prm.er_prm_label(np.ones((2, 4)), eta)
      with pytest.raises(ValueError, match="eta"):
        er_prm.er_prm_label_from_counts(1, 4, eta)
    with pytest.raises(ValueError, match="c <= n"):
      er_prm.er_prm_label_from_counts(5, 4, 1.0)
    with pytest.raises(ValueError, match="n must be"):
      er_prm.er_prm_label_from_counts(0, 0, 1.0)


class LossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), batch=st.sampled_from([1, 3]),
                    length=st.sampled_from([1, 6]), use_mask=st.booleans())
  def test_matches_reference(self, seed, batch, length, use_mask):
    rng = np.random.default_rng(seed)
    zp = rng.normal(size=(batch, length)).astype(np.float32) * 3
    zm = rng.normal(size=(batch, length)).astype(np.float32) * 3
    r = rng.uniform(size=(batch, length)).astype(np.float32)
    mask = rng.uniform(size=(batch, length)) < 0.6 if use_mask else np.ones((batch, length), bool)
    zp_garbage = np.where(mask, zp, np.nan).astype(np.float32)  # padding must not leak
    total, count = self.variant(er_prm.er_prm_loss)(zp_garbage, zm, r,
                                                     mask if use_mask else None)
    ref_total, ref_count = ref_soft_ce(zp, zm, r, mask)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5, atol=1e-6)
    self.assertEqual(float(count), ref_count)

  @chex.variants(with_jit=True, without_jit=True)
  def test_step_scores_is_softmax(self):
    zp = np.array([[0.0, 2.0, -30.0], [5.0, 1.0, 40.0]], np.float32)
    zm = np.array([[0.0, 1.0, 30.0], [5.0, -1.0, -40.0]], np.float32)
    got = self.variant(er_prm.step_scores)(zp, zm)
    expected = np.exp(zp) / (np.exp(zp.astype(np.float64)) + np.exp(zm.astype(np.float64)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)

  def test_minimum_at_target(self):
    # d L / d z+ = sigmoid(z+ - z-) - r: zero exactly when the step score equals the label.
    r = np.array([0.2, 0.5, 0.9], np.float32)
    zp = np.log(r / (1 - r)).astype(np.float32)
    zm = np.zeros(3, np.float32)
    grad = jax.grad(lambda x: er_prm.er_prm_loss(x, zm, r)[0])(zp)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    np.testing.assert_allclose(er_prm.step_scores(zp, zm), r, rtol=1e-6)

  def test_bad_inputs(self):
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="er_prm_loss"):
      er_prm.er_prm_loss(z, z[:, :2], z)
    with pytest.raises(ValueError, match="targets"):
      er_prm.er_prm_loss(z, z, z + 1.5)


if __name__ == "__main__":
  absltest.main()
