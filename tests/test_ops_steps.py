"""Step segmentation and segment ops vs loop-based NumPy references (docs/algorithms.md: Shared pieces)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.ops import steps

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def ragged_mask(rng, b, t):
  """Right-padded responses of random lengths in [1, t]."""
  lengths = rng.integers(1, t + 1, size=b)
  return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


# ---- references: plain loops over b and t, straight from the specification -------------------


def ref_step_end_mask(mask, mode, length=None, delimiter_ids=(), token_ids=None):
  b_size, t_size = mask.shape
  out = np.zeros((b_size, t_size), dtype=bool)
  for b in range(b_size):
    last = -1
    for t in range(t_size):
      if not mask[b, t]:
        continue
      last = t
      if mode == "token":
        out[b, t] = True
      elif mode == "fixed":
        out[b, t] = (t + 1) % length == 0
      elif mode == "delimiter":
        out[b, t] = int(token_ids[b, t]) in delimiter_ids
    if last >= 0:
      out[b, last] = True
  return out


def ref_step_ids(step_end, mask):
  out = np.full(mask.shape, -1, dtype=np.int64)
  for b in range(mask.shape[0]):
    k = 0
    for t in range(mask.shape[1]):
      if mask[b, t]:
        out[b, t] = k
        if step_end[b, t]:
          k += 1
  return out


def ref_step_sum(x, step_end, mask):
  out = np.zeros(x.shape, dtype=np.float64)
  for b in range(x.shape[0]):
    acc = 0.0
    for t in range(x.shape[1]):
      if mask[b, t]:
        acc += x[b, t]
        if step_end[b, t]:
          out[b, t] = acc
          acc = 0.0
  return out


def ref_fill(x, step_end, mask, skip_zeros):
  out = np.zeros(x.shape, dtype=np.float64)
  for b in range(x.shape[0]):
    for t in range(x.shape[1]):
      if not mask[b, t]:
        continue
      for u in range(t, x.shape[1]):
        if mask[b, u] and step_end[b, u] and not (skip_zeros and x[b, u] == 0):
          out[b, t] = x[b, u]
          break
  return out


def ref_gather(x, step_end, mask, max_steps):
  values = np.zeros((x.shape[0], max_steps))
  valid = np.zeros((x.shape[0], max_steps), dtype=bool)
  for b in range(x.shape[0]):
    k = 0
    for t in range(x.shape[1]):
      if mask[b, t] and step_end[b, t]:
        if k < max_steps:
          values[b, k] = x[b, t]
          valid[b, k] = True
        k += 1
  return values, valid


# ---- tests ------------------------------------------------------------------------------------

# A few fixed shapes: every new shape costs a compilation, and these cover T = 1 and ragged rows.
shapes = st.sampled_from([(1, 1), (3, 7), (6, 12)])


class StepEndMaskTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(shape=shapes, seed=st.integers(0, 2**16), length=st.integers(1, 5))
  def test_all_modes_match_reference(self, shape, seed, length):
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, *shape)
    ids = rng.integers(0, 6, size=shape).astype(np.int32)
    delims = (2, 4)
    fn = self.variant(steps.step_end_mask,
                      static_argnames=("mode", "length", "delimiter_ids"))
    for mode, kw in [("token", {}), ("whole", {}), ("fixed", {"length": length}),
                     ("delimiter", {"delimiter_ids": delims, "token_ids": ids})]:
      got = np.asarray(fn(mask, mode=mode, **kw))
      want = ref_step_end_mask(mask, mode, length=length, delimiter_ids=delims, token_ids=ids)
      np.testing.assert_array_equal(got != 0, want, err_msg=mode)
      assert got.dtype == mask.dtype

  def test_bool_mask_and_hand_case(self):
    mask = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=bool)
    got = steps.step_end_mask(mask, "fixed", length=2)
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(
        got, [[0, 1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(steps.step_end_mask(mask, "whole"),
                                  [[0, 0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]])

  def test_padding_tokens_are_never_step_ends(self):
    mask = np.array([[1, 1, 0, 0]], np.float32)
    ids = np.array([[7, 1, 7, 7]])
    got = steps.step_end_mask(mask, "delimiter", delimiter_ids=[7], token_ids=ids)
    np.testing.assert_array_equal(got, [[1, 1, 0, 0]])

  def test_errors(self):
    mask = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="unknown mode"):
      steps.step_end_mask(mask, "sentence")
    with pytest.raises(ValueError, match="length"):
      steps.step_end_mask(mask, "fixed")
    with pytest.raises(ValueError, match="length"):
      steps.step_end_mask(mask, "fixed", length=0)
    with pytest.raises(ValueError, match="token_ids"):
      steps.step_end_mask(mask, "delimiter", delimiter_ids=[1])
    with pytest.raises(ValueError, match="delimiter_ids"):
      steps.step_end_mask(mask, "delimiter", token_ids=np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="shape"):
      steps.step_end_mask(mask, "delimiter", delimiter_ids=[1],
                          token_ids=np.zeros((2, 5), np.int32))


class SegmentOpsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(shape=shapes, seed=st.integers(0, 2**16), length=st.integers(1, 4),
         skip_zeros=st.booleans())
  def test_segment_ops_match_reference(self, shape, seed, length, skip_zeros):
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, *shape)
    end = np.asarray(steps.step_end_mask(mask, "fixed", length=length))
    x = rng.normal(size=shape).astype(np.float32)
    # Exact zeros at some step ends, so the skip_zeros branch is exercised.
    x[rng.random(shape) < 0.3] = 0.0
    x[mask == 0] = np.nan  # padding must never leak into a result

    ids = self.variant(steps.step_ids)(end, mask)
    np.testing.assert_array_equal(ids, ref_step_ids(end, mask))
    got = self.variant(steps.step_sum)(x, end, mask)
    np.testing.assert_allclose(got, ref_step_sum(x, end, mask), rtol=1e-5, atol=1e-5)
    fill = self.variant(steps.fill_from_step_end, static_argnames="skip_zeros")
    got = fill(x, end, mask, skip_zeros=skip_zeros)
    np.testing.assert_array_equal(got, ref_fill(x, end, mask, skip_zeros).astype(np.float32))
    gather = self.variant(steps.gather_step_ends, static_argnames="max_steps")
    values, valid = gather(x, end, mask, max_steps=3)
    want_v, want_ok = ref_gather(x, end, mask, 3)
    np.testing.assert_array_equal(valid, want_ok)
    np.testing.assert_array_equal(np.where(want_ok, values, 0), want_v.astype(np.float32))

  def test_step_sum_whole_and_token_modes(self):
    rng = np.random.default_rng(0)
    mask = ragged_mask(rng, 5, 9)
    x = rng.normal(size=(5, 9)).astype(np.float32)
    whole = steps.step_end_mask(mask, "whole")
    got = steps.step_sum(x, whole, mask)
    np.testing.assert_allclose(np.sum(got, -1), np.sum(x * mask, -1), rtol=1e-5, atol=1e-6)
    token = steps.step_end_mask(mask, "token")
    np.testing.assert_allclose(steps.step_sum(x, token, mask), x * mask, atol=0)

  def test_skip_zeros_quirk_hand_case(self):
    # Steps end at t = 1, 3, 5. The middle step's end value is exactly 0: the PRL code's
    # "left fill by next non-zero" skips it, so tokens 2-3 take the value of the next step (7.0).
    mask = np.ones((1, 6), np.float32)
    end = np.array([[0, 1, 0, 1, 0, 1]], np.float32)
    x = np.array([[9.0, 5.0, 9.0, 0.0, 9.0, 7.0]], np.float32)
    np.testing.assert_array_equal(steps.fill_from_step_end(x, end, mask),
                                  [[5, 5, 0, 0, 7, 7]])
    np.testing.assert_array_equal(steps.fill_from_step_end(x, end, mask, skip_zeros=True),
                                  [[5, 5, 7, 7, 7, 7]])
    # A zero on the last step has nothing to its right: its tokens stay 0.
    x_last = np.array([[9.0, 5.0, 9.0, 3.0, 9.0, 0.0]], np.float32)
    np.testing.assert_array_equal(
        steps.fill_from_step_end(x_last, end, mask, skip_zeros=True), [[5, 5, 3, 3, 0, 0]])

  def test_vmap_over_batches(self):
    rng = np.random.default_rng(1)
    masks = np.stack([ragged_mask(rng, 4, 7) for _ in range(3)])
    x = rng.normal(size=masks.shape).astype(np.float32)
    ends = jax.vmap(functools.partial(steps.step_end_mask, mode="fixed", length=3))(masks)
    got = jax.vmap(steps.step_sum)(x, ends, masks)
    fill = jax.vmap(steps.fill_from_step_end)(x, ends, masks)
    for k in range(3):
      e = ref_step_end_mask(masks[k], "fixed", length=3)
      np.testing.assert_array_equal(ends[k] != 0, e)
      np.testing.assert_allclose(got[k], ref_step_sum(x[k], e, masks[k]), rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(fill[k], ref_fill(x[k], e, masks[k], False).astype(np.float32))

  def test_last_token_mask(self):
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], np.float32)
    np.testing.assert_array_equal(
        steps.last_token_mask(mask),
        [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])

  @parameterized.named_parameters(("step_sum", "step_sum"), ("fill", "fill_from_step_end"),
                                  ("ids", "step_ids"))
  def test_shape_mismatch_raises(self, name):
    mask = np.ones((2, 4), np.float32)
    fn = getattr(steps, name)
    args = (np.ones((2, 4)), np.ones((2, 5)), mask) if name != "step_ids" else (
        np.ones((2, 5)), mask)
    with pytest.raises(ValueError, match="shape"):
      fn(*args)

  def test_gather_step_ends_bad_max_steps(self):
    with pytest.raises(ValueError, match="max_steps"):
      steps.gather_step_ends(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)), 0)
