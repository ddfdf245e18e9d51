"""Advantage estimators vs loop-based NumPy references (docs/algorithms.md: Shared pieces, the baselines, PRIME, PRL)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.algorithms import advantages as adv
from prl_jax.ops import steps
from prl_jax.ops.returns import masked_whiten
from prl_jax.rewards.kl_to_go import kl_to_go

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
# PRIME and PRL compile one program per (layout, static options) example.
HEAVY = settings(max_examples=10, deadline=None, derandomize=True)
# (group size n, prompts P, T): a few fixed layouts, each costs a compilation.
layouts = st.sampled_from([(1, 3, 5), (2, 3, 7), (3, 2, 9), (5, 1, 4)])
multi_layouts = st.sampled_from([(2, 3, 7), (3, 2, 9), (5, 1, 4)])


def ragged_mask(rng, b, t):
  """Right-padded responses of random lengths in [1, t]."""
  lengths = rng.integers(1, t + 1, size=b)
  return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


def outcomes(rng, b):
  """Binary outcomes (ties within groups are common) or fractional ones (code tasks)."""
  if rng.random() < 0.5:
    return rng.integers(0, 2, size=b).astype(np.float32)
  return rng.uniform(size=b).astype(np.float32)


# ---- references: loops over prompts, responses and tokens -------------------------------------


def ref_group_mean_std(vals):
  n = len(vals)
  if n == 1:
    return 0.0, 1.0
  mean = sum(vals) / n
  var = sum((v - mean)**2 for v in vals) / (n - 1)
  return mean, np.sqrt(var)


def ref_grpo(scores, n, scale_by_std=True):
  out = np.zeros(len(scores))
  for p in range(len(scores) // n):
    group = [float(s) for s in scores[p * n:(p + 1) * n]]
    mean, std = ref_group_mean_std(group)
    for i in range(n):
      a = group[i] - mean
      out[p * n + i] = a / (std + 1e-6) if scale_by_std else a
  return out


def ref_rloo(scores, n):
  out = np.zeros(len(scores))
  for p in range(len(scores) // n):
    group = [float(s) for s in scores[p * n:(p + 1) * n]]
    for i in range(n):
      others = [group[j] for j in range(n) if j != i]
      out[p * n + i] = group[i] - sum(others) / (n - 1)
  return out


def ref_gae(rewards, values, mask, gamma, lam):
  b_size, t_size = rewards.shape
  adv_out = np.zeros((b_size, t_size))
  for b in range(b_size):
    next_value, next_adv = 0.0, 0.0
    for t in reversed(range(t_size)):
      if not mask[b, t]:
        continue
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      next_adv = delta + gamma * lam * next_adv
      next_value = values[b, t]
      adv_out[b, t] = next_adv
  return adv_out, (adv_out + values) * (mask > 0)


def ref_whiten(x, mask):
  vals = [x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t]]
  mean = np.mean(vals)
  var = np.var(vals) * len(vals) / (len(vals) - 1)
  return np.where(mask > 0, (x - mean) / np.sqrt(var + 1e-8), 0.0)


def ref_prime_returns(process, outcome, mask, n, mode, gamma, base, outcome_gamma=1.0):
  """PRIME section 3: per-source baseline, return-to-go per source, then the sum."""
  b_size, t_size = mask.shape
  means = np.zeros(b_size)
  last = np.zeros(b_size, dtype=int)
  for b in range(b_size):
    tokens = [t for t in range(t_size) if mask[b, t]]
    means[b] = sum(process[b, t] for t in tokens) / len(tokens)
    last[b] = tokens[-1]
  if base == "rloo":
    seq = ref_rloo(outcome, n)
  elif base == "grpo":
    seq = ref_grpo(outcome, n)
  else:
    seq = np.asarray(outcome, np.float64)
  out = np.zeros((b_size, t_size))
  for b in range(b_size):
    p, i = divmod(b, n)
    group = [means[p * n + j] for j in range(n)]
    shaped = np.zeros(t_size)
    for t in range(t_size):
      if not mask[b, t]:
        continue
      r = process[b, t]
      if base == "reinforce":
        shaped[t] = r
      elif base == "grpo":
        g_mean, g_std = ref_group_mean_std(group)
        shaped[t] = (r - g_mean) / (g_std + 1e-6)
      elif mode == "paper":
        shaped[t] = r - sum(group[j] for j in range(n) if j != i) / (n - 1)
      else:
        shaped[t] = r * n / (n - 1) - sum(group) / (n - 1)
    ret_p, ret_o = 0.0, 0.0
    for t in reversed(range(t_size)):
      if mask[b, t]:
        ret_p = shaped[t] + gamma * ret_p
        ret_o = (seq[b] if t == last[b] else 0.0) + outcome_gamma * ret_o
        out[b, t] = ret_p + ret_o
  return out


def ref_kl_to_go(old, ref, mask):
  out = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    for t in range(mask.shape[1]):
      if mask[b, t]:
        out[b, t] = sum(old[b, j] - ref[b, j] for j in range(t, mask.shape[1]) if mask[b, j])
  return out


def ref_left_fill_next_nonzero(row):
  """The PRL code's fill: each position takes the nearest non-zero value at or to its right."""
  out = np.zeros_like(row)
  for t in range(len(row)):
    for u in range(t, len(row)):
      if row[u] != 0:
        out[t] = row[u]
        break
  return out


def ref_prl(outcome, old, ref, mask, step_end, n, eta, mode, skip_zeros):
  """PRL section 4, following the official code's order of operations."""
  g = ref_kl_to_go(old, ref, mask)
  seq = ref_grpo(outcome, n) if mode == "orm" else np.asarray(outcome, np.float64)
  ends = step_end if (mode == "orm" and step_end is not None) else mask
  out = np.zeros(mask.shape)
  for b in range(mask.shape[0]):
    row = np.zeros(mask.shape[1])
    for t in range(mask.shape[1]):
      if mask[b, t] and ends[b, t]:
        row[t] = seq[b] - g[b, t] / eta
    if skip_zeros:
      filled = ref_left_fill_next_nonzero(row)
    else:
      filled = np.zeros_like(row)
      for t in range(mask.shape[1]):
        for u in range(t, mask.shape[1]):
          if mask[b, u] and ends[b, u]:
            filled[t] = row[u]
            break
    out[b] = np.where(mask[b] > 0, filled, 0.0)
  return out


# ---- sequence-level estimators ----------------------------------------------------------------


class GroupEstimatorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(layout=layouts, seed=st.integers(0, 2**16), scale_by_std=st.booleans())
  def test_grpo_rloo_reinforce_match_reference(self, layout, seed, scale_by_std):
    n, p, _ = layout
    rng = np.random.default_rng(seed)
    r = outcomes(rng, n * p)
    got = self.variant(adv.grpo, static_argnames=("group_size", "scale_by_std"))(
        r, group_size=n, scale_by_std=scale_by_std)
    np.testing.assert_allclose(got, ref_grpo(r, n, scale_by_std), rtol=1e-5, atol=1e-5)
    if n > 1:
      got = self.variant(adv.rloo, static_argnames="group_size")(r, group_size=n)
      np.testing.assert_allclose(got, ref_rloo(r, n), rtol=1e-5, atol=1e-6)
    got = self.variant(adv.reinforce, static_argnames=("group_size", "baseline"))(
        r, group_size=n, baseline="batch")
    np.testing.assert_allclose(got, r - r.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(adv.reinforce(r), r)

  def test_group_of_one_gets_mean_zero_std_one(self):
    r = np.array([0.3, 1.0, 0.0], np.float32)
    np.testing.assert_allclose(adv.grpo(r, 1), r / (1 + 1e-6), rtol=1e-6)

  def test_tied_groups_give_exactly_zero_under_jit(self):
    # Regression: rounding in the group mean, divided by std + 1e-6, once gave ties A ~ 0.03.
    r = np.array([1, 1, 1, 0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0, 1, 0], np.float32)
    for fn in (adv.grpo, jax.jit(adv.grpo, static_argnums=1)):
      got = np.asarray(fn(r, 3))
      np.testing.assert_array_equal(got[:9], np.zeros(9))
      np.testing.assert_allclose(got[9:], ref_grpo(r[9:], 3), rtol=1e-6)

  def test_rloo_is_scaled_mean_baseline(self):
    # Identity: r_i - mean_{j != i} r_j = n/(n-1) (r_i - mean_j r_j).
    r = np.random.default_rng(0).normal(size=12).astype(np.float32)
    centred = (r.reshape(3, 4) - r.reshape(3, 4).mean(1, keepdims=True)).reshape(-1)
    np.testing.assert_allclose(adv.rloo(r, 4), 4 / 3 * centred, rtol=1e-5, atol=1e-6)

  def test_vmap_over_batches(self):
    r = np.random.default_rng(1).uniform(size=(5, 8)).astype(np.float32)
    got = jax.vmap(functools.partial(adv.grpo, group_size=4))(r)
    for k in range(5):
      np.testing.assert_allclose(got[k], ref_grpo(r[k], 4), rtol=1e-5, atol=1e-5)

  def test_errors(self):
    r = np.ones(6, np.float32)
    with pytest.raises(ValueError, match="not divisible"):
      adv.grpo(r, 4)
    with pytest.raises(ValueError, match="group_size 1"):
      adv.rloo(r, 1)
    with pytest.raises(ValueError, match="group_size"):
      adv.rloo(r, 0)
    with pytest.raises(ValueError, match="baseline"):
      adv.reinforce(r, baseline="group")
    with pytest.raises(ValueError, match="shape"):
      adv.grpo(np.ones((6, 2)), 2)


class GaeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @given(layout=multi_layouts, seed=st.integers(0, 2**16),
         gamma=st.sampled_from([1.0, 0.99, 0.5]), lam=st.sampled_from([1.0, 0.95, 0.0]))
  def test_matches_reference(self, layout, seed, gamma, lam):
    n, p, t = layout
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, n * p, t)
    rewards = rng.normal(size=mask.shape).astype(np.float32)
    values = rng.normal(size=mask.shape).astype(np.float32)
    fn = self.variant(adv.gae)
    got_a, got_r = fn(rewards, values, mask, jnp.float32(gamma), jnp.float32(lam))
    want_a, want_r = ref_gae(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(got_a, want_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_r, want_r, rtol=1e-4, atol=1e-5)

  def test_gamma_lambda_one_is_return_minus_value(self):
    rng = np.random.default_rng(2)
    mask = ragged_mask(rng, 4, 6)
    rewards = rng.normal(size=mask.shape).astype(np.float32)
    values = rng.normal(size=mask.shape).astype(np.float32)
    a, ret = adv.gae(rewards, values, mask)
    togo = np.flip(np.cumsum(np.flip(rewards * mask, -1), -1), -1) * mask
    np.testing.assert_allclose(a, togo - values * mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, togo, rtol=1e-5, atol=1e-5)


# ---- PRIME ------------------------------------------------------------------------------------


class PrimeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @HEAVY
  @given(layout=multi_layouts, seed=st.integers(0, 2**16),
         mode=st.sampled_from(["code", "paper"]),
         base=st.sampled_from(["rloo", "grpo", "reinforce"]),
         gamma=st.sampled_from([1.0, 0.9]))
  def test_matches_reference(self, layout, seed, mode, base, gamma):
    n, p, t = layout
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, n * p, t)
    # Step scores: non-zero at some tokens only, as `implicit_scores` produces.
    scores = rng.normal(size=mask.shape).astype(np.float32) * (rng.random(mask.shape) < 0.5)
    r_o = outcomes(rng, n * p)

    def both(scores, r_o, mask, gamma):
      kw = dict(group_size=n, mode=mode, base=base, gamma=gamma)
      return adv.prime_returns(scores, r_o, mask, **kw), adv.prime(scores, r_o, mask, **kw)

    got, full = self.variant(both)(scores, r_o, mask, gamma)
    want = ref_prime_returns(scores, r_o, mask, n, mode, gamma, base)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full, ref_whiten(want, mask), rtol=1e-3, atol=1e-4)

  def test_outcome_only_is_constant_rloo_and_modes_agree(self):
    rng = np.random.default_rng(4)
    mask = ragged_mask(rng, 8, 6)
    r_o = rng.integers(0, 2, size=8).astype(np.float32)
    zero = np.zeros(mask.shape, np.float32)
    code = adv.prime_returns(zero, r_o, mask, 4, mode="code")
    paper = adv.prime_returns(zero, r_o, mask, 4, mode="paper")
    np.testing.assert_array_equal(code, paper)
    np.testing.assert_allclose(code, ref_rloo(r_o, 4)[:, None] * mask, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(adv.prime(zero, r_o, mask, 4, mode="code"),
                                  adv.prime(zero, r_o, mask, 4, mode="paper"))

  def test_paper_and_code_modes_differ_on_hand_case(self):
    # n = 2, one prompt, outcomes both 0 (so only the process source counts), gamma = 1.
    #   response 0: process scores [1, 0] (2 tokens)   -> mean m_0 = 0.5
    #   response 1: process scores [0.5] (1 token)     -> mean m_1 = 0.5;  S = m_0 + m_1 = 1
    # paper (Eq. 5): r_t - m_other/(n-1)
    #   response 0: [1 - 0.5, 0 - 0.5] = [0.5, -0.5]  -> return-to-go [0.0, -0.5]
    #   response 1: [0.5 - 0.5]        = [0.0]         -> [0.0]
    # code: r_t * n/(n-1) - S/(n-1) = 2 r_t - 1
    #   response 0: [2 - 1, 0 - 1]     = [1, -1]       -> return-to-go [0.0, -1.0]
    #   response 1: [1 - 1]            = [0]           -> [0.0]
    mask = np.array([[1, 1], [1, 0]], np.float32)
    scores = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)
    r_o = np.zeros(2, np.float32)
    paper = adv.prime_returns(scores, r_o, mask, 2, mode="paper")
    code = adv.prime_returns(scores, r_o, mask, 2, mode="code")
    np.testing.assert_allclose(paper, [[0.0, -0.5], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(code, [[0.0, -1.0], [0.0, 0.0]], atol=1e-7)
    # Whitened over the 3 valid tokens: paper values {0, -0.5, 0} have mean -1/6, deviations
    # [1/6, -1/3, 1/6], squared sum 1/6, Bessel variance (1/6)/(3-1) = 1/12, std 1/(2 sqrt 3):
    # A = [1, -2, 1] / sqrt(3). Code values {0, -1, 0} are the paper's doubled: same A.
    want = np.array([[1.0, -2.0], [1.0, 0.0]]) / np.sqrt(3.0)
    np.testing.assert_allclose(adv.prime(scores, r_o, mask, 2, mode="paper"), want, rtol=1e-4)
    np.testing.assert_allclose(adv.prime(scores, r_o, mask, 2, mode="code"), want, rtol=1e-4)

  def test_outcome_gamma_discounts_outcome_only(self):
    mask = np.ones((2, 3), np.float32)
    got = adv.prime_returns(np.zeros((2, 3)), np.array([1.0, 0.0]), mask, 2, gamma=1.0,
                            outcome_gamma=0.5)
    # RLOO outcome advantages [1, -1], discounted back from the last token.
    np.testing.assert_allclose(got, [[0.25, 0.5, 1.0], [-0.25, -0.5, -1.0]])

  def test_errors(self):
    mask = np.ones((4, 3), np.float32)
    scores, r_o = np.zeros((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="mode"):
      adv.prime(scores, r_o, mask, 2, mode="eq5")
    with pytest.raises(ValueError, match="base"):
      adv.prime(scores, r_o, mask, 2, base="ppo")
    with pytest.raises(ValueError, match="group_size 1"):
      adv.prime(scores, r_o, mask, 1)
    with pytest.raises(ValueError, match="not divisible"):
      adv.prime(scores, r_o, mask, 3)
    with pytest.raises(ValueError, match="shape"):
      adv.prime(np.zeros((4, 5)), r_o, mask, 2)
    with pytest.raises(ValueError, match="outcome"):
      adv.prime(scores, np.zeros(3), mask, 2)


# ---- PRL / FRPO -------------------------------------------------------------------------------


class PrlTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @HEAVY
  @given(layout=layouts, seed=st.integers(0, 2**16), mode=st.sampled_from(["orm", "prm"]),
         skip_zeros=st.booleans(), step_len=st.sampled_from([1, 2, 3]),
         eta=st.sampled_from([0.5, 10.0, 100.0]))
  def test_matches_reference(self, layout, seed, mode, skip_zeros, step_len, eta):
    n, p, t = layout
    rng = np.random.default_rng(seed)
    mask = ragged_mask(rng, n * p, t)
    old = rng.normal(size=mask.shape).astype(np.float32) - 2.0
    ref = rng.normal(size=mask.shape).astype(np.float32) - 2.0
    # Exact zeros in the values: equal log-probs at the last tokens give G = 0 there, and a
    # group of tied outcomes gives A = 0.
    ref[:, -2:] = old[:, -2:]
    old[mask == 0] = -np.inf
    r_o = outcomes(rng, n * p)
    end = np.asarray(steps.step_end_mask(mask, "fixed", length=step_len))
    fn = self.variant(adv.prl, static_argnames=("group_size", "mode", "skip_zeros"))
    got = fn(r_o, old, ref, mask, end, group_size=n, eta=eta, mode=mode, skip_zeros=skip_zeros)
    want = ref_prl(r_o, old, ref, mask, end, n, eta, mode, skip_zeros)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  def test_kl_to_go_matches_reference(self):
    rng = np.random.default_rng(5)
    mask = ragged_mask(rng, 6, 8)
    old = rng.normal(size=mask.shape).astype(np.float32)
    ref = rng.normal(size=mask.shape).astype(np.float32)
    old[mask == 0] = -np.inf
    got = jax.jit(kl_to_go)(old, ref, mask)
    np.testing.assert_allclose(got, ref_kl_to_go(old, ref, mask), rtol=1e-5, atol=1e-5)
    # G at the first token is the whole sequence's log-ratio.
    np.testing.assert_allclose(got[:, 0], np.sum(np.where(mask > 0, old - ref, 0), -1),
                               rtol=1e-5, atol=1e-5)

  def test_frpo_is_prl_with_step_length_one(self):  # FRPO: PRL orm with every token a step
    rng = np.random.default_rng(6)
    mask = ragged_mask(rng, 10, 7)
    old = rng.normal(size=mask.shape).astype(np.float32)
    ref = rng.normal(size=mask.shape).astype(np.float32)
    r_o = rng.integers(0, 2, size=10).astype(np.float32)
    frpo = adv.prl(r_o, old, ref, mask, None, 5, eta=100.0, mode="orm")
    for end in (steps.step_end_mask(mask, "fixed", length=1), steps.step_end_mask(mask, "token")):
      np.testing.assert_array_equal(frpo, adv.prl(r_o, old, ref, mask, end, 5, eta=100.0))
    np.testing.assert_allclose(frpo, ref_prl(r_o, old, ref, mask, mask, 5, 100.0, "orm", True),
                               rtol=1e-5, atol=1e-6)

  def test_orm_is_constant_within_steps_and_prm_ignores_steps(self):
    rng = np.random.default_rng(7)
    mask = np.ones((4, 8), np.float32)
    old = rng.normal(size=mask.shape).astype(np.float32)
    ref = rng.normal(size=mask.shape).astype(np.float32)
    r_o = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    end = steps.step_end_mask(mask, "fixed", length=4)
    a = np.asarray(adv.prl(r_o, old, ref, mask, end, 2, eta=10.0))
    np.testing.assert_array_equal(a[:, :4], np.repeat(a[:, 3:4], 4, 1))
    np.testing.assert_array_equal(a[:, 4:], np.repeat(a[:, 7:8], 4, 1))
    prm = adv.prl(r_o, old, ref, mask, end, 2, eta=10.0, mode="prm")
    np.testing.assert_array_equal(prm, adv.prl(r_o, old, ref, mask, None, 2, eta=10.0, mode="prm"))
    np.testing.assert_allclose(prm, r_o[:, None] - ref_kl_to_go(old, ref, mask) / 10.0,
                               rtol=1e-5, atol=1e-6)

  def test_vmap_over_batches(self):
    rng = np.random.default_rng(8)
    masks = np.stack([ragged_mask(rng, 4, 5) for _ in range(3)])
    old = rng.normal(size=masks.shape).astype(np.float32)
    ref = rng.normal(size=masks.shape).astype(np.float32)
    r_o = rng.integers(0, 2, size=(3, 4)).astype(np.float32)
    fn = jax.vmap(lambda o, a, b, m: adv.prl(o, a, b, m, m, 2, eta=2.0))
    got = fn(r_o, old, ref, masks)
    for k in range(3):
      np.testing.assert_allclose(
          got[k], ref_prl(r_o[k], old[k], ref[k], masks[k], masks[k], 2, 2.0, "orm", True),
          rtol=1e-5, atol=1e-6)

  def test_errors(self):
    mask = np.ones((4, 3), np.float32)
    z, r_o = np.zeros((4, 3)), np.zeros(4)
    for eta in (0.0, -1.0):
      with pytest.raises(ValueError, match="eta"):
        adv.prl(r_o, z, z, mask, None, 2, eta=eta)
    with pytest.raises(ValueError, match="mode"):
      adv.prl(r_o, z, z, mask, None, 2, eta=1.0, mode="token")
    with pytest.raises(ValueError, match="shape"):
      adv.prl(r_o, z, z, np.ones((4, 4)), None, 2, eta=1.0)
    with pytest.raises(ValueError, match="not divisible"):
      adv.prl(r_o, z, z, mask, None, 3, eta=1.0)
    with pytest.raises(ValueError, match="shape"):
      kl_to_go(z, np.zeros((4, 2)), mask)
