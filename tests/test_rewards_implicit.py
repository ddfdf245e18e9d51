"""PRIME implicit rewards against slow loop references written from docs/algorithms.md: PRIME."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from prl_jax.ops.steps import step_end_mask
from prl_jax.rewards import implicit

SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------------------------
# Loop references.


def ref_scores(lp, lr, mask, step_end):
  out = np.zeros(lp.shape)
  for b in range(lp.shape[0]):
    acc = 0.0
    for t in range(lp.shape[1]):
      if not mask[b, t]:
        continue
      acc += lp[b, t] - lr[b, t]
      if step_end[b, t]:
        out[b, t] = acc
        acc = 0.0
  return out


def ref_normalize(scores, mask):
  biggest = 0.0
  for b in range(scores.shape[0]):
    for t in range(scores.shape[1]):
      if mask[b, t]:
        togo = sum(scores[b, j] for j in range(t, scores.shape[1]) if mask[b, j])
        biggest = max(biggest, abs(togo))
  return np.where(mask, scores, 0.0) / (biggest + 1e-6)


def ref_ce(lp, lr, mask, outcome, beta):
  total, count = 0.0, 0
  for b in range(lp.shape[0]):
    if not mask[b].any():
      continue
    z = beta * sum(lp[b, t] - lr[b, t] for t in range(lp.shape[1]) if mask[b, t])
    p = 1.0 / (1.0 + math.exp(-z))
    total += -(outcome[b] * math.log(p) + (1 - outcome[b]) * math.log(1 - p))
    count += 1
  return total, count


def ref_pairwise(scores, outcome, mask, n):
  """The official rule as a loop: a pair is right when S_a > S_b exactly if r_a > r_b (so a tie
  is right when r_a < r_b), weighted by |r_a - r_b|; 0.5 for a group without such a pair."""
  sums = [sum(scores[b, t] for t in range(scores.shape[1]) if mask[b, t])
          for b in range(scores.shape[0])]
  accs, weights = [], []
  for g in range(scores.shape[0] // n):
    hit = tot = 0.0
    for i in range(n):
      for j in range(i + 1, n):
        a, b = g * n + i, g * n + j
        if outcome[a] == outcome[b]:
          continue
        w = abs(outcome[a] - outcome[b])
        tot += w
        if outcome[a] > outcome[b]:
          hit += w if sums[a] > sums[b] else 0.0
        else:
          hit += w if sums[a] <= sums[b] else 0.0
    accs.append(hit / tot if tot > 0 else 0.5)
    weights.append(tot)
  return np.array(accs), np.array(weights)


def make_batch(seed, num_prompts, group_size, length, soft=False):
  rng = np.random.default_rng(seed)
  b = num_prompts * group_size
  lengths = rng.integers(1, length + 1, size=b)
  mask = np.arange(length)[None, :] < lengths[:, None]
  lp = np.log(rng.uniform(0.05, 1.0, size=(b, length))).astype(np.float32)
  lr = np.log(rng.uniform(0.05, 1.0, size=(b, length))).astype(np.float32)
  step_end = (rng.uniform(size=(b, length)) < 0.3) & mask
  step_end[np.arange(b), lengths - 1] = True
  if soft:
    outcome = rng.choice([0.0, 0.25, 0.5, 1.0], size=b).astype(np.float32)
  else:
    outcome = rng.integers(0, 2, size=b).astype(np.float32)
  return lp, lr, mask, step_end, outcome


# Few distinct shapes keep compilation (jitted and eager) cheap; raggedness comes from the masks.
batch_args = dict(seed=st.integers(0, 2**31 - 1), num_prompts=st.just(2),
                  group_size=st.sampled_from([1, 2, 4]), length=st.sampled_from([1, 7]))


# ----------------------------------------------------------------------------------------------


class ImplicitScoresTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(**batch_args)
  def test_matches_reference(self, seed, num_prompts, group_size, length):
    lp, lr, mask, step_end, _ = make_batch(seed, num_prompts, group_size, length)
    got = self.variant(implicit.implicit_scores)(lp, lr, mask, step_end)
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(got, ref_scores(lp, lr, mask, step_end), atol=1e-5)

  def test_token_and_whole_granularity(self):
    lp = np.log(np.array([[0.5, 0.25, 0.8, 0.1], [0.9, 0.3, 0.7, 0.6]], np.float32))
    lr = np.log(np.array([[0.25, 0.5, 0.4, 0.9], [0.3, 0.3, 0.7, 0.2]], np.float32))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    q = np.where(mask, lp - lr, 0.0)
    token = implicit.implicit_scores(lp, lr, mask, step_end_mask(mask, "token"))
    np.testing.assert_allclose(token, q, atol=1e-6)
    whole = implicit.implicit_scores(lp, lr, mask, step_end_mask(mask, "whole"))
    expected = np.zeros_like(q)
    expected[0, 2] = q[0].sum()
    expected[1, 1] = q[1].sum()
    np.testing.assert_allclose(whole, expected, atol=1e-6)

  def test_vmap_over_micro_batches(self):
    parts = [make_batch(s, 2, 2, 6) for s in range(3)]
    stacked = [np.stack([p[i] for p in parts]) for i in range(4)]
    got = jax.jit(jax.vmap(implicit.implicit_scores))(*stacked)
    for k, p in enumerate(parts):
      np.testing.assert_allclose(got[k], ref_scores(*p[:4]), atol=1e-5)

  def test_shape_mismatch_raises(self):
    lp, lr, mask, step_end, _ = make_batch(0, 1, 2, 5)
    with pytest.raises(ValueError, match="implicit_scores"):
      implicit.implicit_scores(lp, lr[:, :4], mask, step_end)
    with pytest.raises(ValueError):
      implicit.implicit_scores(lp[0], lr[0], mask[0], step_end[0])


class NormalizeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(**batch_args)
  def test_matches_reference(self, seed, num_prompts, group_size, length):
    lp, lr, mask, step_end, _ = make_batch(seed, num_prompts, group_size, length)
    scores = ref_scores(lp, lr, mask, step_end).astype(np.float32)
    got = self.variant(implicit.normalize_scores)(scores, mask)
    np.testing.assert_allclose(got, ref_normalize(scores, mask), rtol=1e-5, atol=1e-6)

  def test_hand_case_and_scale_invariance(self):
    scores = np.array([[1.0, 2.0, 0.0], [-4.0, 0.0, 9.0]], np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    # Returns-to-go: [3, 2] and [-4]; the padded 9 is ignored. Largest |G| = 4.
    expected = np.array([[1.0, 2.0, 0.0], [-4.0, 0.0, 0.0]]) / (4.0 + 1e-6)
    got = implicit.normalize_scores(scores, mask)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Paper vs code: beta * scores normalises to the same thing, so beta only matters in the loss.
    np.testing.assert_allclose(implicit.normalize_scores(0.05 * scores, mask), got, rtol=1e-4)

  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), shards=st.sampled_from([1, 2, 4]))
  def test_each_shard_by_its_own_largest_return(self, seed, shards):
    lp, lr, mask, step_end, _ = make_batch(seed, 4, 2, 7)
    scores = ref_scores(lp, lr, mask, step_end).astype(np.float32)
    rows = len(scores) // shards
    want = np.concatenate([ref_normalize(scores[i:i + rows], mask[i:i + rows])
                           for i in range(0, len(scores), rows)])
    got = jax.jit(implicit.normalize_scores, static_argnums=2)(scores, mask, shards)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_shards_hand_case(self):
    # Shard 0: returns-to-go [3, 2] and [-1]: max 3. Shard 1: [-4] and [0.5]: max 4.
    scores = np.array([[1.0, 2.0], [-1.0, 0.0], [-4.0, 0.0], [0.5, 0.0]], np.float32)
    mask = np.array([[1, 1], [1, 0], [1, 0], [1, 0]], bool)
    got = implicit.normalize_scores(scores, mask, 2)
    scale = np.array([3.0, 3.0, 4.0, 4.0])[:, None] + 1e-6
    np.testing.assert_allclose(got, np.where(mask, scores, 0.0) / scale, rtol=1e-6)
    with pytest.raises(ValueError, match="norm_shards"):
      implicit.normalize_scores(scores, mask, 3)

  def test_all_masked_is_finite(self):
    got = implicit.normalize_scores(np.ones((2, 3), np.float32), np.zeros((2, 3), bool))
    np.testing.assert_array_equal(got, 0.0)


class PrimeCELossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(**batch_args, beta=st.sampled_from([0.05, 1.0]), soft=st.booleans())
  def test_matches_reference(self, seed, num_prompts, group_size, length, beta, soft):
    lp, lr, mask, _, outcome = make_batch(seed, num_prompts, group_size, length, soft=soft)
    mask[0] = False  # a padding row is not counted
    total, count = self.variant(implicit.prime_ce_loss)(lp, lr, mask, outcome, beta)
    ref_total, ref_count = ref_ce(lp, lr, mask, outcome, beta)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5, atol=1e-6)
    self.assertEqual(float(count), ref_count)

  def test_large_logits_stay_finite(self):
    lp = np.zeros((2, 3), np.float32)
    lr = np.full((2, 3), -1e4, np.float32)
    mask = np.ones((2, 3), bool)
    total, count = implicit.prime_ce_loss(lp, lr, mask, np.array([0.0, 1.0]), 1.0)
    # z = 3e4: label 0 costs ~z, label 1 costs ~0.
    np.testing.assert_allclose(total, 3e4, rtol=1e-6)
    self.assertEqual(float(count), 2.0)

  def test_gradient_is_label_error(self):
    # d L / d z = sigmoid(z) - r, and z is beta * sum(q), so d L / d logp_prm_t = beta * (p - r).
    lp, lr, mask, _, outcome = make_batch(3, 2, 2, 5, soft=True)
    beta = 0.5
    grad = jax.grad(lambda x: implicit.prime_ce_loss(x, lr, mask, outcome, beta)[0])(lp)
    z = beta * np.where(mask, lp - lr, 0).sum(-1)
    expected = beta * (1 / (1 + np.exp(-z)) - outcome)[:, None] * mask
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)

  def test_bad_inputs(self):
    lp, lr, mask, _, outcome = make_batch(0, 1, 2, 4)
    with pytest.raises(ValueError, match="beta"):
      implicit.prime_ce_loss(lp, lr, mask, outcome, 0.0)
    with pytest.raises(ValueError, match="outcome"):
      implicit.prime_ce_loss(lp, lr, mask, outcome + 2.0, 0.05)
    with pytest.raises(ValueError):
      implicit.prime_ce_loss(lp, lr, mask, outcome[:1], 0.05)


class PairwiseAccuracyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(**batch_args, soft=st.booleans())
  def test_matches_reference(self, seed, num_prompts, group_size, length, soft):
    lp, lr, mask, step_end, outcome = make_batch(seed, num_prompts, group_size, length, soft)
    scores = ref_scores(lp, lr, mask, step_end).astype(np.float32)
    fn = self.variant(implicit.group_pairwise_accuracy, static_argnames="group_size")
    acc_g, w_g = fn(scores, outcome, mask, group_size=group_size)
    ref_acc, ref_w = ref_pairwise(scores, outcome, mask, group_size)
    np.testing.assert_allclose(acc_g, ref_acc, atol=1e-6)
    np.testing.assert_allclose(w_g, ref_w, atol=1e-6)
    fn = self.variant(implicit.pairwise_accuracy, static_argnames="group_size")
    acc, w = fn(scores, outcome, mask, group_size=group_size)
    np.testing.assert_allclose(acc, ref_acc.mean(), atol=1e-6)  # groups without pairs: 0.5
    np.testing.assert_allclose(w, ref_w.sum(), atol=1e-6)

  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), ties=st.booleans())
  def test_ties_follow_the_official_rule(self, seed, ties):
    # Scores from a few values (ties common) or all zero (the first step: PRM = reference).
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.0, 1.0, 2.0], size=(12, 3)).astype(np.float32) * (not ties)
    outcome = rng.choice([0.0, 0.5, 1.0], size=12).astype(np.float32)
    mask = rng.uniform(size=(12, 3)) < 0.8
    acc_g, w_g = implicit.group_pairwise_accuracy(scores, outcome, mask, 4)
    ref_acc, ref_w = ref_pairwise(scores, outcome, mask, 4)
    np.testing.assert_allclose(acc_g, ref_acc, atol=1e-6)
    np.testing.assert_allclose(w_g, ref_w, atol=1e-6)

  def test_hand_case(self):
    # One group of 3: sums [3, 1, 2], outcomes [1, 0, 0]. Pairs with different outcomes:
    # (0,1) right, (0,2) right. Second group: all outcomes equal -> 0.5 and weight 0.
    scores = np.array([[1, 2], [1, 0], [2, 0], [0, 0], [1, 0], [2, 0]], np.float32)
    mask = np.ones_like(scores, bool)
    outcome = np.array([1, 0, 0, 1, 1, 1], np.float32)
    acc_g, w_g = implicit.group_pairwise_accuracy(scores, outcome, mask, 3)
    np.testing.assert_allclose(acc_g, [1.0, 0.5])
    np.testing.assert_allclose(w_g, [2.0, 0.0])
    acc, w = implicit.pairwise_accuracy(-scores, outcome, mask, 3)  # mean of [0, 0.5]
    self.assertEqual((float(acc), float(w)), (0.25, 2.0))
    acc, w = implicit.pairwise_accuracy(scores[3:], outcome[3:], mask[3:], 3)
    self.assertEqual((float(acc), float(w)), (0.5, 0.0))

  def test_all_zero_scores_read_the_order_of_outcomes_not_zero(self):
    # Step 1: every score 0. Group [0, 1, 1, 0]: (0,1), (0,2) have r_i < r_j (right), (1,3),
    # (2,3) have r_i > r_j (wrong) -> 0.5. In pairs: [0, 1] right -> 1, [1, 0] wrong -> 0.
    zeros = np.zeros((8, 2), np.float32)
    outcome = np.array([0, 1, 1, 0, 0, 1, 1, 0], np.float32)
    acc_g, _ = implicit.group_pairwise_accuracy(zeros, outcome, np.ones_like(zeros, bool), 4)
    np.testing.assert_allclose(acc_g, [0.5, 0.5])
    acc_g, _ = implicit.group_pairwise_accuracy(zeros[:4], outcome[:4], np.ones((4, 2)), 2)
    np.testing.assert_allclose(acc_g, [1.0, 0.0])

  def test_bad_group_size(self):
    with pytest.raises(ValueError, match="group_size"):
      implicit.pairwise_accuracy(np.zeros((6, 2)), np.zeros(6), np.ones((6, 2)), 4)


if __name__ == "__main__":
  absltest.main()
