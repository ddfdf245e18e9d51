"""rePIRL's IRL objective against loop references written from ALGORITHMS.md section 6."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from prl_jax.rewards import irl

SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


def ref_irl(expert, samples, logp, valid):
  idx = [j for j in range(len(samples)) if valid[j]]
  a = [samples[j] - logp[j] for j in idx]
  top = max(a)
  z = sum(math.exp(x - top) for x in a)
  w = np.zeros(len(samples))
  for j, x in zip(idx, a):
    w[j] = math.exp(x - top) / z
  loss = -(sum(expert) / len(expert) - sum(w[j] * samples[j] for j in idx))
  log_z = top + math.log(z) - math.log(len(idx))
  ess = 1.0 / sum(v * v for v in w)
  return loss, w, log_z, ess


def ref_sequence_reward(r, mask):
  return np.array([sum(r[b, t] for t in range(r.shape[1]) if mask[b, t])
                   for b in range(r.shape[0])])


def make_problem(seed, num_expert, num_samples, length=5, dim=3):
  rng = np.random.default_rng(seed)
  b = num_expert + num_samples
  lengths = rng.integers(1, length + 1, size=b)
  mask = np.arange(length)[None, :] < lengths[:, None]
  feats = rng.normal(size=(b, length, dim)).astype(np.float32)
  phi = rng.normal(size=dim).astype(np.float32)
  logp = (-rng.uniform(1.0, 20.0, size=num_samples)).astype(np.float32)
  valid = rng.uniform(size=num_samples) < 0.7
  valid[rng.integers(num_samples)] = True
  return feats, mask, phi, logp, valid


def returns_of(phi, feats, mask):
  token_rewards = jnp.tanh(feats @ phi)
  return irl.sequence_reward(token_rewards, mask)


def irl_objective(phi, feats, mask, logp, valid):
  """R_phi(tau) = sum_t tanh(x_t . phi); the first rows of feats are the experts."""
  returns = returns_of(phi, feats, mask)
  num_expert = feats.shape[0] - logp.shape[0]
  return irl.irl_loss(returns[:num_expert], returns[num_expert:], logp, valid)[0]


irl_objective_grad = jax.grad(irl_objective)


class IRLLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), num_expert=st.sampled_from([1, 3]),
                    num_samples=st.sampled_from([1, 4, 8]))
  def test_value_and_metrics(self, seed, num_expert, num_samples):
    feats, mask, phi, logp, valid = make_problem(seed, num_expert, num_samples)
    returns = np.asarray(returns_of(phi, feats, mask))
    expert, samples = returns[:num_expert], returns[num_expert:]
    loss, metrics = self.variant(irl.irl_loss)(expert, samples, logp, valid)
    ref_loss, _, ref_log_z, ref_ess = ref_irl(expert, samples, logp, valid)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics["log_z"], ref_log_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics["ess"], ref_ess, rtol=1e-4)
    self.assertTrue(1.0 - 1e-5 <= float(metrics["ess"]) <= valid.sum() + 1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(SETTINGS, max_examples=12)  # eager autodiff is slow; the map is smooth
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), num_expert=st.sampled_from([1, 3]),
                    num_samples=st.sampled_from([2, 8]))
  def test_gradient_equals_formula(self, seed, num_expert, num_samples):
    feats, mask, phi, logp, valid = make_problem(seed, num_expert, num_samples)
    grad = self.variant(irl_objective_grad)(phi, feats, mask, logp, valid)
    # grad R_b = sum_t mask (1 - tanh^2(x.phi)) x; grad L = -(mean_e grad R_e - sum_j w_j grad R_j).
    grad_r = np.array([sum((1 - np.tanh(feats[b, t] @ phi) ** 2) * feats[b, t]
                           for t in range(feats.shape[1]) if mask[b, t])
                       for b in range(feats.shape[0])])
    returns = np.asarray(returns_of(phi, feats, mask))
    _, w, _, _ = ref_irl(returns[:num_expert], returns[num_expert:], logp, valid)
    expected = -(grad_r[:num_expert].mean(0) - (w[:, None] * grad_r[num_expert:]).sum(0))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)

  def test_no_gradient_into_policy_logp(self):
    feats, mask, phi, logp, valid = make_problem(1, 2, 5)
    returns = returns_of(phi, feats, mask)
    g = jax.grad(lambda lp: irl.irl_loss(returns[:2], returns[2:], lp, valid)[0])(logp)
    np.testing.assert_array_equal(g, 0.0)

  def test_weights_invariant_to_logp_shift(self):
    feats, mask, phi, logp, valid = make_problem(2, 2, 6)
    returns = returns_of(phi, feats, mask)
    a, ma = irl.irl_loss(returns[:2], returns[2:], logp, valid)
    b, mb = irl.irl_loss(returns[:2], returns[2:], logp - 7.0, valid)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(mb["log_z"], ma["log_z"] + 7.0, rtol=1e-5)
    np.testing.assert_allclose(ma["ess"], mb["ess"], rtol=1e-5)

  def test_uniform_weights_hand_case(self):
    # R - logp equal for all samples: w = 1/M, log Z = R - logp, ESS = M.
    loss, m = irl.irl_loss(np.array([2.0, 4.0]), np.array([1.0, 2.0, 3.0]),
                           np.array([0.0, 1.0, 2.0]), None)
    np.testing.assert_allclose(loss, -(3.0 - 2.0), rtol=1e-6)
    np.testing.assert_allclose(m["log_z"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(m["ess"], 3.0, rtol=1e-6)

  def test_no_valid_sample_is_not_nan(self):
    loss, m = irl.irl_loss(np.array([1.0]), np.array([5.0, 6.0]), np.array([0.0, 0.0]),
                           np.array([False, False]))
    np.testing.assert_allclose(loss, -1.0)
    self.assertEqual(float(m["log_z"]), -np.inf)
    self.assertEqual(float(m["ess"]), 0.0)

  def test_vmap(self):
    probs = [make_problem(s, 2, 4) for s in range(3)]
    rets = [np.asarray(returns_of(p[2], p[0], p[1])) for p in probs]
    e = np.stack([r[:2] for r in rets])
    s = np.stack([r[2:] for r in rets])
    lp = np.stack([p[3] for p in probs])
    v = np.stack([p[4] for p in probs])
    loss, m = jax.jit(jax.vmap(irl.irl_loss))(e, s, lp, v)
    for k in range(3):
      ref_loss, _, ref_log_z, _ = ref_irl(e[k], s[k], lp[k], v[k])
      np.testing.assert_allclose(loss[k], ref_loss, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(m["log_z"][k], ref_log_z, rtol=1e-5, atol=1e-5)

  def test_bad_shapes(self):
    with pytest.raises(ValueError, match="irl_loss"):
      irl.irl_loss(np.zeros(2), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="expert"):
      irl.irl_loss(np.zeros(0), np.zeros(3), np.zeros(3))


class SequenceRewardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), batch=st.sampled_from([1, 4]),
                    length=st.sampled_from([1, 6]))
  def test_matches_reference(self, seed, batch, length):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(batch, length)).astype(np.float32)
    lengths = rng.integers(0, length + 1, size=batch)  # empty rows allowed
    mask = np.arange(length)[None, :] < lengths[:, None]
    seq = self.variant(irl.sequence_reward)(r, mask)
    np.testing.assert_allclose(seq, ref_sequence_reward(r, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,num_expert,num_samples", [(0, 3, 5), (1, 1, 1), (2, 4, 9)])
def test_irl_coefficients_surrogate_matches_irl_loss(seed, num_expert, num_samples):
  """The row-separable surrogate sum_b c_b R_b has irl_loss's value and gradient."""
  rng = np.random.default_rng(seed)
  b = num_expert + num_samples + 2  # two padding rows at the end
  features = jnp.asarray(rng.normal(size=(b, 4)), jnp.float32)
  phi = jnp.asarray(rng.normal(size=4), jnp.float32)
  logp = jnp.asarray(rng.normal(size=b) * 3, jnp.float32)
  is_expert = np.zeros(b, bool)
  is_expert[:num_expert] = True
  is_sample = np.zeros(b, bool)
  is_sample[num_expert:num_expert + num_samples] = True
  returns = lambda p: features @ p  # a linear "reward model"
  e, s = slice(0, num_expert), slice(num_expert, b)
  direct = lambda p: irl.irl_loss(returns(p)[e], returns(p)[s], logp[s], is_sample[s])[0]
  coef, metrics = irl.irl_coefficients(returns(phi), logp, is_expert, is_sample)
  surrogate = lambda p: jnp.sum(coef * returns(p))
  np.testing.assert_allclose(surrogate(phi), direct(phi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["loss"], direct(phi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.grad(surrogate)(phi), jax.grad(direct)(phi), rtol=1e-4,
                             atol=1e-5)
  assert np.all(np.asarray(coef)[~(is_expert | is_sample)] == 0.0)
  # Split into any two chunks, the surrogate's gradients add up to the whole.
  half = b // 2
  parts = [jax.grad(lambda p, r=r: jnp.sum(coef[r] * returns(p)[r]))(phi)
           for r in (slice(0, half), slice(half, b))]
  np.testing.assert_allclose(parts[0] + parts[1], jax.grad(direct)(phi), rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
