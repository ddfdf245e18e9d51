"""PPO loss, aggregation, entropy, KL and token log-probs vs loop-based references (1.1, 1.8)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.algorithms import losses
from prl_jax.models.logprobs import logprob_and_entropy

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def ragged_mask(rng, b, t, empty_rows=False):
  """Right-padded responses of random lengths in [1, t]; optionally some all-padding rows."""
  lengths = rng.integers(1, t + 1, size=b)
  if empty_rows:
    lengths[rng.random(b) < 0.25] = 0
  return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


def random_batch(rng, b, t, empty_rows=False):
  mask = ragged_mask(rng, b, t, empty_rows)
  old = rng.normal(size=(b, t)).astype(np.float32) - 1.0
  # Log-ratios of up to +-1 so both clip bounds and the dual clip are hit.
  logp = old + rng.uniform(-1.0, 1.0, size=(b, t)).astype(np.float32)
  adv = rng.normal(size=(b, t)).astype(np.float32)
  return logp, old, adv, mask


# ---- references -------------------------------------------------------------------------------


def ref_ppo_token(logp, old, adv, clip_low, clip_high, dual_clip):
  out = np.zeros(logp.shape)
  for b in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      ratio = np.exp(float(logp[b, t]) - float(old[b, t]))
      a = float(adv[b, t])
      clipped_ratio = min(max(ratio, 1 - clip_low), 1 + clip_high)
      loss = max(-a * ratio, -a * clipped_ratio)
      if dual_clip is not None and a < 0:
        loss = min(loss, -a * dual_clip)
      out[b, t] = loss
  return out


def ref_agg(loss, mask, agg):
  if agg == "token-mean":
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
      for t in range(mask.shape[1]):
        if mask[b, t]:
          total += loss[b, t]
          count += 1
    return total / count
  per_seq = []
  for b in range(mask.shape[0]):
    vals = [loss[b, t] for t in range(mask.shape[1]) if mask[b, t]]
    if vals:
      per_seq.append(sum(vals) / len(vals) if agg == "seq-mean-token-mean" else sum(vals))
  return sum(per_seq) / len(per_seq)


def ref_entropy(logits):
  out = np.zeros(logits.shape[:2])
  for b in range(logits.shape[0]):
    for t in range(logits.shape[1]):
      z = logits[b, t].astype(np.float64)
      p = np.exp(z - z.max())
      p /= p.sum()
      out[b, t] = -sum(pi * np.log(pi) for pi in p if pi > 0)
  return out


def ref_logprobs(logits, targets):
  out = np.zeros(targets.shape)
  for b in range(targets.shape[0]):
    for t in range(targets.shape[1]):
      z = logits[b, t].astype(np.float64)
      out[b, t] = z[targets[b, t]] - (z.max() + np.log(np.sum(np.exp(z - z.max()))))
  return out


# ---- tests ------------------------------------------------------------------------------------


class PpoClipTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(seed=st.integers(0, 2**16), agg=st.sampled_from(AGGS),
         clip_high=st.sampled_from([0.2, 0.28]), dual_clip=st.sampled_from([None, 3.0]))
  def test_matches_reference(self, seed, agg, clip_high, dual_clip):
    rng = np.random.default_rng(seed)
    logp, old, adv, mask = random_batch(rng, 6, 9, empty_rows=True)
    mask[0, 0] = 1.0  # at least one valid token
    logp[mask == 0] = np.nan  # padding must never leak
    fn = self.variant(losses.ppo_clip, static_argnames=("agg", "dual_clip", "clip_high"))
    num, den = fn(logp, old, adv, mask, clip_high=clip_high, dual_clip=dual_clip, agg=agg)
    token = ref_ppo_token(np.nan_to_num(logp), old, adv, 0.2, clip_high, dual_clip)
    np.testing.assert_allclose(num / den, ref_agg(token, mask, agg), rtol=1e-5, atol=1e-6)
    want_den = mask.sum() if agg == "token-mean" else np.sum(mask.sum(-1) > 0)
    assert float(den) == want_den

  @parameterized.parameters(*AGGS)
  def test_micro_batches_sum_to_full_batch(self, agg):
    rng = np.random.default_rng(11)
    logp, old, adv, mask = random_batch(rng, 12, 10, empty_rows=True)
    mask[0, :3] = 1.0
    loss = jax.jit(lambda *xs: losses.ppo_clip(*xs, dual_clip=3.0, agg=agg))
    full_num, full_den = loss(logp, old, adv, mask)
    for cuts in ([0, 12], [0, 3, 7, 12], [0, 1, 4, 7, 11, 12], list(range(13))):
      num = den = 0.0
      for lo, hi in zip(cuts[:-1], cuts[1:]):
        n, d = loss(logp[lo:hi], old[lo:hi], adv[lo:hi], mask[lo:hi])
        num, den = num + n, den + d
      np.testing.assert_allclose(num / den, full_num / full_den, rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(den, full_den)
    token = ref_ppo_token(logp, old, adv, 0.2, 0.2, 3.0)
    np.testing.assert_allclose(full_num / full_den, ref_agg(token, mask, agg), rtol=1e-5)

  @parameterized.parameters(*AGGS)
  def test_accumulated_gradients_equal_full_batch_gradient(self, agg):
    rng = np.random.default_rng(12)
    logp, old, adv, mask = random_batch(rng, 8, 6)

    def num_den(lp, sl):
      return losses.ppo_clip(lp, old[sl], adv[sl], mask[sl], agg=agg)

    grad_num = jax.jit(jax.grad(lambda lp, lo, hi: num_den(lp, slice(lo, hi))[0]),
                       static_argnums=(1, 2))
    full_num, full_den = num_den(logp, slice(0, 8))
    full = jax.grad(lambda lp: num_den(lp, slice(0, 8))[0] / full_den)(logp)
    # Denominators are known before the backward pass: accumulate grad(num_i) / sum_i den_i.
    dens = sum(num_den(logp[lo:hi], slice(lo, hi))[1] for lo, hi in [(0, 3), (3, 8)])
    acc = np.concatenate([grad_num(logp[lo:hi], lo, hi) for lo, hi in [(0, 3), (3, 8)]]) / dens
    np.testing.assert_allclose(acc, full, rtol=1e-5, atol=1e-7)

  def test_dual_clip_hand_case(self):
    # A = -1 and ratio e^2 ~ 7.39: the clipped surrogate is max(7.39, 1.2) = 7.39; dual clip 3
    # caps it at -A * 3 = 3. With A = +1 the dual clip does nothing: max(-7.39, -1.2) = -1.2.
    logp = np.array([[2.0, 2.0]], np.float32)
    old = np.zeros((1, 2), np.float32)
    adv = np.array([[-1.0, 1.0]], np.float32)
    token = losses.ppo_clip_token_loss(logp, old, adv, dual_clip=3.0)
    np.testing.assert_allclose(token, [[3.0, -1.2]], rtol=1e-6)
    stats = losses.ppo_clip_stats(logp, old, adv, np.ones((1, 2)), dual_clip=3.0)
    np.testing.assert_allclose(stats["clipfrac"][0] / stats["clipfrac"][1], 0.5)
    np.testing.assert_allclose(stats["dual_clipfrac"][0] / stats["dual_clipfrac"][1], 0.5)
    np.testing.assert_allclose(stats["approx_kl"][0] / stats["approx_kl"][1], -2.0)

  def test_clipfrac_matches_reference(self):
    rng = np.random.default_rng(13)
    logp, old, adv, mask = random_batch(rng, 5, 7)
    num, den = losses.ppo_clip_stats(logp, old, adv, mask)["clipfrac"]
    want, count = 0, 0
    for b in range(5):
      for t in range(7):
        if mask[b, t]:
          ratio = np.exp(logp[b, t] - old[b, t])
          count += 1
          want += (-adv[b, t] * np.clip(ratio, 0.8, 1.2)) > (-adv[b, t] * ratio)
    np.testing.assert_allclose(num / den, want / count, rtol=1e-6)

  def test_on_policy_loss_is_minus_mean_advantage(self):
    rng = np.random.default_rng(14)
    _, old, adv, mask = random_batch(rng, 4, 5)
    num, den = losses.ppo_clip(old, old, adv, mask)
    np.testing.assert_allclose(num / den, -np.sum(adv * mask) / np.sum(mask), rtol=1e-5)

  def test_vmap(self):
    rng = np.random.default_rng(15)
    batches = [random_batch(rng, 3, 4) for _ in range(4)]
    stacked = [np.stack(x) for x in zip(*batches)]
    nums, dens = jax.vmap(losses.ppo_clip)(*stacked)
    for k, (lp, o, a, m) in enumerate(batches):
      n, d = losses.ppo_clip(lp, o, a, m)
      np.testing.assert_allclose([nums[k], dens[k]], [n, d], rtol=1e-6)

  def test_errors(self):
    lp, old, adv, mask = random_batch(np.random.default_rng(0), 2, 3)
    with pytest.raises(ValueError, match="agg"):
      losses.ppo_clip(lp, old, adv, mask, agg="seq-sum")
    with pytest.raises(ValueError, match="shape"):
      losses.ppo_clip(lp, old, adv, np.ones((2, 4)))
    with pytest.raises(ValueError, match="dual_clip"):
      losses.ppo_clip(lp, old, adv, mask, dual_clip=1.0)
    with pytest.raises(ValueError, match="clip_low"):
      losses.ppo_clip(lp, old, adv, mask, clip_low=1.0)


class EntropyKlLogprobTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_entropy_matches_reference(self):
    rng = np.random.default_rng(16)
    mask = ragged_mask(rng, 3, 5)
    logits = (3 * rng.normal(size=(3, 5, 11))).astype(np.float32)
    logits[0, 0, 3] = -1e9  # a near-zero probability must not give NaN
    targets = np.zeros((3, 5), np.int32)
    entropy = self.variant(logprob_and_entropy)(logits, targets)[1]
    for agg in AGGS:
      num, den = losses.agg_loss(entropy, mask, agg)
      np.testing.assert_allclose(num / den, ref_agg(ref_entropy(logits), mask, agg), rtol=1e-5)
    uniform = logprob_and_entropy(np.zeros((1, 2, 7), np.float32), np.zeros((1, 2), np.int32))[1]
    np.testing.assert_allclose(uniform, np.full((1, 2), np.log(7)), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_estimators(self):
    rng = np.random.default_rng(17)
    logp = rng.normal(size=(4, 6)).astype(np.float32) - 2
    ref = rng.normal(size=(4, 6)).astype(np.float32) - 2
    fn = self.variant(losses.kl, static_argnames="kind")
    for kind in ("k1", "k2", "k3"):
      got = fn(logp, ref, kind=kind)
      for b in range(4):
        for t in range(6):
          log_r = float(ref[b, t]) - float(logp[b, t])  # r = pi_ref / pi_theta
          k3 = min(np.exp(log_r) - 1 - log_r, 10.0)
          want = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": k3}[kind]
          np.testing.assert_allclose(got[b, t], want, rtol=1e-5, atol=1e-6)
    # k3 is non-negative, zero on-policy and clamped at 10 far off-policy.
    assert np.all(np.asarray(fn(logp, ref, kind="k3")) >= 0)
    np.testing.assert_array_equal(fn(logp, logp, kind="k3"), np.zeros_like(logp))
    far = fn(np.zeros((1, 2)), np.array([[50.0, -50.0]]), kind="k3")
    np.testing.assert_allclose(far, [[10.0, 10.0]])

  def test_kl_expectations(self):
    # Sampling from pi_theta, k1 and k3 are unbiased for KL(pi_theta || pi_ref).
    rng = np.random.default_rng(18)
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    ids = rng.choice(3, size=200_000, p=p)
    logp, ref = np.log(p)[ids][None], np.log(q)[ids][None]
    exact = np.sum(p * np.log(p / q))
    for kind in ("k1", "k3"):
      np.testing.assert_allclose(np.mean(losses.kl(logp, ref, kind)), exact, rtol=0.03)

  @chex.variants(with_jit=True, without_jit=True)
  def test_token_logprobs(self):
    rng = np.random.default_rng(19)
    logits = (4 * rng.normal(size=(2, 5, 13))).astype(np.float32)
    targets = rng.integers(0, 13, size=(2, 5))
    got = self.variant(logprob_and_entropy)(logits, targets)[0]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_logprobs(logits, targets), rtol=1e-5, atol=1e-5)
    half = logprob_and_entropy(jnp.asarray(logits, jnp.bfloat16), targets)[0]
    assert half.dtype == jnp.float32

  def test_errors(self):
    with pytest.raises(ValueError, match="kind"):
      losses.kl(np.zeros(3), np.zeros(3), "k4")
    with pytest.raises(ValueError, match="shape"):
      losses.kl(np.zeros(3), np.zeros(4), "k1")
