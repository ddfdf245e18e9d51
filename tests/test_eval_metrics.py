"""Evaluation metrics against exact formulas and loop references (docs/algorithms.md: Evaluation metrics)."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from absl.testing import absltest

from prl_jax.eval import metrics

SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


def exact_pass_at_k(n, c, k):
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ref_best_of_n(scores, mask, agg):
  out = np.zeros(scores.shape[:-1])
  for idx in np.ndindex(scores.shape[:-1]):
    vals = [scores[idx][s] for s in range(scores.shape[-1]) if mask[idx][s]]
    if not vals:
      out[idx] = -np.inf
    elif agg == "min":
      out[idx] = min(vals)
    elif agg == "product":
      out[idx] = math.prod(vals)
    elif agg == "last":
      out[idx] = vals[-1]
    else:
      out[idx] = sum(vals) / len(vals)
  return out


class PassAtKTest(absltest.TestCase):

  def test_exact_binomial_small_n(self):
    for n in range(1, 13):
      for c in range(n + 1):
        for k in range(1, n + 1):
          self.assertAlmostEqual(metrics.pass_at_k(n, c, k), exact_pass_at_k(n, c, k), places=12)

  @SETTINGS
  @hypothesis.given(n=st.integers(1, 300), data=st.data())
  def test_identities(self, n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    self.assertEqual(metrics.pass_at_k(n, c, n), float(c > 0))  # pass@n = any correct
    self.assertAlmostEqual(metrics.pass_at_k(n, c, 1), c / n, places=12)
    p = metrics.pass_at_k(n, c, k)
    self.assertTrue(0.0 <= p <= 1.0)
    if n <= 60:
      self.assertAlmostEqual(p, exact_pass_at_k(n, c, k), places=9)

  def test_arrays_broadcast(self):
    n = np.array([4, 8, 16])
    c = np.array([0, 3, 16])
    got = metrics.pass_at_k(n, c, 2)
    self.assertEqual(got.shape, (3,))
    np.testing.assert_allclose(got, [exact_pass_at_k(4, 0, 2), exact_pass_at_k(8, 3, 2), 1.0])
    self.assertIsInstance(metrics.pass_at_k(np.int64(5), 2, 3), float)

  def test_bad_inputs(self):
    with pytest.raises(ValueError, match="k must be <= n"):
      metrics.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
      metrics.pass_at_k(4, 1, 0)
    with pytest.raises(ValueError, match="c <= n"):
      metrics.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="integers"):
      metrics.pass_at_k(4, 1.5, 1)

  def test_curve(self):
    c = np.array([0, 1, 5, 8])
    curve = metrics.pass_at_k_curve(8, c)
    self.assertEqual(curve.shape, (8,))
    for k in range(1, 9):
      self.assertAlmostEqual(curve[k - 1], np.mean([exact_pass_at_k(8, x, k) for x in c]), 12)
    self.assertTrue(np.all(np.diff(curve) >= 0))
    self.assertAlmostEqual(curve[0], np.mean(c / 8))
    self.assertAlmostEqual(curve[-1], 0.75)
    with pytest.raises(ValueError):
      metrics.pass_at_k_curve(0, c)


class MeanAndMajorityTest(absltest.TestCase):

  def test_mean_at_n(self):
    correct = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    self.assertAlmostEqual(metrics.mean_at_n(correct), (0.5 + 1 + 0) / 3)
    with pytest.raises(ValueError):
      metrics.mean_at_n(np.ones(4))

  def test_majority_vote_ties(self):
    self.assertEqual(metrics.majority_vote(["a", "b", "b", "a"]), ("b", 1))
    self.assertEqual(metrics.majority_vote(["a", "b", "a", "b"]), ("a", 0))
    self.assertEqual(metrics.majority_vote([None, "7", None]), ("7", 1))
    self.assertEqual(metrics.majority_vote([None, None]), (None, -1))

  def test_maj_at_k_reference_and_flags(self):
    answers = [["4", "5", "5", "4", "4"], ["1", "2", "3", "2", None], [None] * 5]
    reference = ["4", "3", "0"]
    # Full 5 samples: "4" wins problem 0 (right), "2" wins problem 1 (wrong), none for problem 2.
    self.assertAlmostEqual(metrics.maj_at_k(answers, reference=reference), 1 / 3)
    # First 3 samples: "5" wins problem 0.
    self.assertAlmostEqual(metrics.maj_at_k(answers, reference=reference, k=3), 0.0)
    # k = 1 is the first sample's answer.
    self.assertAlmostEqual(metrics.maj_at_k(answers, reference=reference, k=1), 1 / 3)
    flags = np.array([[a == r for a in row] for row, r in zip(answers, reference)])
    for k in (1, 3, 5):
      self.assertAlmostEqual(metrics.maj_at_k(answers, correct=flags, k=k),
                             metrics.maj_at_k(answers, reference=reference, k=k))

  def test_maj_at_k_bad_inputs(self):
    with pytest.raises(ValueError, match="exactly one"):
      metrics.maj_at_k([["a"]])
    with pytest.raises(ValueError, match="k"):
      metrics.maj_at_k([["a"]], reference=["a"], k=2)
    with pytest.raises(ValueError, match="shape"):
      metrics.maj_at_k([["a", "b"]], correct=np.ones((1, 3), bool))


class BestOfNTest(chex.TestCase):

  def test_hand_cases(self):
    s = np.array([[0.9, 0.2, 0.8], [0.5, 0.6, 0.7]], np.float32)
    m = np.array([[1, 1, 1], [1, 1, 0]], bool)
    np.testing.assert_allclose(metrics.best_of_n(s, "min", m), [0.2, 0.5])
    np.testing.assert_allclose(metrics.best_of_n(s, "product", m), [0.9 * 0.2 * 0.8, 0.3],
                               rtol=1e-6)
    np.testing.assert_allclose(metrics.best_of_n(s, "last", m), [0.8, 0.6])
    np.testing.assert_allclose(metrics.best_of_n(s, "mean", m), [1.9 / 3, 0.55], rtol=1e-6)
    np.testing.assert_allclose(metrics.best_of_n(s, "last"), [0.8, 0.7])
    empty = metrics.best_of_n(s, "min", np.zeros_like(m))
    np.testing.assert_array_equal(empty, -np.inf)

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), agg=st.sampled_from(metrics.AGGREGATIONS),
                    shape=st.sampled_from([(5,), (4, 3), (2, 4, 6)]))
  def test_matches_reference(self, seed, agg, shape):
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=shape).astype(np.float32)
    m = rng.uniform(size=shape) < 0.7
    got = self.variant(metrics.best_of_n, static_argnames="agg")(s, agg=agg, step_mask=m)
    np.testing.assert_allclose(got, ref_best_of_n(s, m, agg), rtol=1e-5)

  def test_select_ties_to_first(self):
    scores = np.array([[0.3, 0.9, 0.9, 0.1], [0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(metrics.best_of_n_select(scores), [1, 0, 3])
    np.testing.assert_array_equal(metrics.best_of_n_select(scores, n=2), [1, 0, 1])
    correct = np.array([[0, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], bool)
    picked = lambda idx: correct[np.arange(3), np.asarray(idx)].mean()
    self.assertAlmostEqual(picked(metrics.best_of_n_select(scores)), 1 / 3)
    self.assertAlmostEqual(picked(metrics.best_of_n_select(scores, n=1)), 1 / 3)
    with pytest.raises(ValueError):
      metrics.best_of_n_select(scores, n=5)

  def test_bad_inputs(self):
    with pytest.raises(ValueError, match="unknown agg"):
      metrics.best_of_n(np.ones((2, 3)), "max")
    with pytest.raises(ValueError, match="best_of_n"):
      metrics.best_of_n(np.ones((2, 3)), "min", np.ones((2, 4)))


if __name__ == "__main__":
  absltest.main()
