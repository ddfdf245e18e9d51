"""Accuracy and truncation filters against loop-based references (docs/algorithms.md: Shared pieces)."""

import chex
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.algorithms import filters

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def ref_accuracy(outcome, n, lo, hi):
  keep = []
  for p in range(len(outcome) // n):
    mean = sum(float(v) for v in outcome[p * n:(p + 1) * n]) / n
    keep.append(lo <= mean <= hi)
  return np.array(keep)


def ref_truncation(truncated, n):
  keep = []
  for p in range(len(truncated) // n):
    keep.append(not any(bool(v) for v in truncated[p * n:(p + 1) * n]))
  return np.array(keep)


class FiltersTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(seed=st.integers(0, 2**16), layout=st.sampled_from([(1, 5), (4, 3), (5, 2)]),
         band=st.sampled_from([(0.2, 0.8), (0.0, 1.0), (0.25, 0.25), (0.5, 1.0)]))
  def test_match_reference(self, seed, layout, band):
    n, p = layout
    rng = np.random.default_rng(seed)
    outcome = rng.integers(0, 2, size=n * p).astype(np.float32)
    truncated = rng.random(n * p) < 0.2
    keep = self.variant(filters.accuracy_filter, static_argnames=("group_size", "lo", "hi"))(
        outcome, group_size=n, lo=band[0], hi=band[1])
    np.testing.assert_array_equal(keep, ref_accuracy(outcome, n, *band))
    keep = self.variant(filters.truncation_filter, static_argnames="group_size")(
        truncated, group_size=n)
    np.testing.assert_array_equal(keep, ref_truncation(truncated, n))

  def test_band_is_inclusive(self):
    # Group means 0, 0.25, 0.5, 0.75, 1 with n = 4.
    outcome = np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1], np.float32)
    np.testing.assert_array_equal(filters.accuracy_filter(outcome, 4, 0.25, 0.75),
                                  [False, True, True, True, False])
    np.testing.assert_array_equal(filters.accuracy_filter(outcome, 4, 0.2, 0.8),
                                  [False, True, True, True, False])

  def test_truncation_hand_case(self):
    truncated = np.array([0, 0, 1, 0, 0, 0], bool)
    np.testing.assert_array_equal(filters.truncation_filter(truncated, 2), [True, False, True])

  def test_errors(self):
    with pytest.raises(ValueError, match="lo <= hi"):
      filters.accuracy_filter(np.zeros(4), 2, 0.8, 0.2)
    with pytest.raises(ValueError, match="not divisible"):
      filters.accuracy_filter(np.zeros(5), 2, 0.2, 0.8)
    with pytest.raises(ValueError, match="not divisible"):
      filters.truncation_filter(np.zeros(5, bool), 4)
    with pytest.raises(ValueError, match="shape"):
      filters.truncation_filter(np.zeros((4, 2), bool), 2)
