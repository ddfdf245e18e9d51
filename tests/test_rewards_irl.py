"""rePIRL's math against loop references and the worked example of docs/algorithms.md (rePIRL):
the official code's token advantages and pooled reward-model loss, and the implicit form's
IRL objective."""

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


# The worked example (docs/algorithms.md, rePIRL): one group of 4 rollouts, T = 5, lam = 0.05.
EX_REWARDS = [[0.2, -0.1, 0.4], [-0.3, 0.1, 0.0, -0.2, 0.7], [0.6, -0.4], [0.1, 0.1, -0.5, 0.3]]
EX_OUTCOME = [1.0, 0.0, 0.0, 1.0]
EX_DEMOS = [[0.5, 0.3, 0.1], [0.2, 0.4]]
EX_LOGP = [[-0.5, -1.0, -0.2], [-1.2, -0.3, -0.8, -0.6, -0.1], [-0.9, -1.5],
           [-0.4, -0.7, -0.3, -1.5]]
EX_ADVANTAGES = [[0.941138, 0.934614, 0.704630],
                 [-0.911778, -0.853059, -1.335861, -1.355435, 0.063612],
                 [-0.924827, -0.983546], [0.875895, 0.882419, 0.616552, 1.345648]]


def ragged(rows, length=5):
  """Right-padded [len(rows), length] values and mask from lists of token values."""
  x = np.zeros((len(rows), length), np.float32)
  m = np.zeros((len(rows), length), np.float32)
  for i, row in enumerate(rows):
    x[i, :len(row)], m[i, :len(row)] = row, 1.0
  return x, m


def ref_token_advantages(r, mask, outcome, n, lam):
  """docs/algorithms.md (rePIRL) written as loops over rows and token indices."""
  b_size, t_size = r.shape
  act = [[bool(mask[b, t]) for t in range(t_size)] for b in range(b_size)]
  go = [[sum(r[b, s] for s in range(t, t_size) if act[b][s]) for t in range(t_size)]
        for b in range(b_size)]
  z = max(abs(go[b][t]) for b in range(b_size) for t in range(t_size) if act[b][t]) + 1e-6
  ahat = np.zeros((b_size, t_size))
  for b in range(b_size):
    group = range(b // n * n, b // n * n + n)
    for t in range(t_size):
      if not act[b][t]:
        continue
      others = [o for o in group if o != b and act[o][t]]
      base_o = sum(outcome[o] for o in others) / max(1, len(others))
      base_p = sum(go[o][t] / z for o in others) / max(1, len(others))
      ahat[b, t] = (outcome[b] - base_o) + lam * (go[b][t] / z - base_p)
  vals = [ahat[b, t] for b in range(b_size) for t in range(t_size) if act[b][t]]
  mean = sum(vals) / len(vals)
  var = sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)
  out = np.zeros_like(ahat)
  for b in range(b_size):
    for t in range(t_size):
      if act[b][t]:
        out[b, t] = (ahat[b, t] - mean) / math.sqrt(var + 1e-8)
  return out, z


def ref_rm_loss(r, mask, logp, expert, pool):
  """The official update_rm loop: one pool (micro-batch) at a time, mean over pools."""
  losses = []
  for start in range(0, r.shape[0], pool):
    rows = [b for b in range(start, start + pool) if mask[b].sum() > 0]
    if not rows:
      continue
    total = {b: float(sum(r[b, t] for t in range(r.shape[1]) if mask[b, t])) for b in rows}
    mean = {b: total[b] / mask[b].sum() for b in rows}
    samples = [b for b in rows if not expert[b]]
    experts = [b for b in rows if expert[b]]
    loss = 0.0
    if samples:
      a = [total[b] - sum(logp[b, t] for t in range(r.shape[1]) if mask[b, t]) for b in samples]
      top = max(a)
      e = [math.exp(x - top) for x in a]
      loss += sum(ei / sum(e) * mean[b] for ei, b in zip(e, samples))
    if experts:
      loss -= sum(mean[b] for b in experts) / len(experts)
    losses.append(loss)
  return sum(losses) / len(losses) if losses else 0.0


def random_batch(seed, groups=2, n=4, length=6, empty_rows=False):
  rng = np.random.default_rng(seed)
  b = groups * n
  lengths = rng.integers(0 if empty_rows else 1, length + 1, size=b)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
  r = np.tanh(rng.normal(size=(b, length))).astype(np.float32)
  logp = (-rng.uniform(0.0, 3.0, size=(b, length))).astype(np.float32)
  outcome = rng.integers(0, 2, size=b).astype(np.float32)
  expert = rng.uniform(size=b) < 0.4
  return r, mask, logp, outcome, expert


class TokenAdvantagesTest(chex.TestCase):

  def test_worked_example(self):
    r, mask = ragged(EX_REWARDS)
    adv = irl.token_advantages(r, mask, np.array(EX_OUTCOME), 4, 0.05)
    for b, row in enumerate(EX_ADVANTAGES):
      np.testing.assert_allclose(adv[b, :len(row)], row, atol=1e-5)
      np.testing.assert_array_equal(adv[b, len(row):], 0.0)
    np.testing.assert_allclose(irl.process_return_scale(r, mask), 0.700001, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @SETTINGS
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([2, 4]),
                    lam=st.sampled_from([0.0, 0.05, 1.0]))
  def test_matches_loop_reference(self, seed, n, lam):
    r, mask, _, outcome, _ = random_batch(seed, n=n)
    adv = self.variant(irl.token_advantages, static_argnums=(3,))(r, mask, outcome, n, lam)
    ref, _ = ref_token_advantages(r, mask, outcome, n, lam)
    np.testing.assert_allclose(adv, ref, rtol=1e-4, atol=1e-4)

  def test_first_token_is_rloo_of_outcome_plus_scaled_return(self):
    r, mask, _, outcome, _ = random_batch(3)
    lam, n = 0.3, 4
    ahat = (irl.leave_one_out_per_token(outcome[:, None] * mask, mask, n)
            + lam * irl.leave_one_out_per_token(
                np.flip(np.cumsum(np.flip(r * mask, 1), 1), 1) / irl.process_return_scale(r, mask),
                mask, n))
    score = (outcome + lam / irl.process_return_scale(r, mask) * (r * mask).sum(1)).reshape(-1, n)
    rloo = score - (score.sum(1, keepdims=True) - score) / (n - 1)
    np.testing.assert_allclose(ahat[:, 0], rloo.reshape(-1), rtol=1e-5, atol=1e-6)

  def test_scale_of_the_rewards_cancels_in_z(self):
    r, mask, _, outcome, _ = random_batch(4)
    a = irl.token_advantages(r, mask, outcome, 4, 0.05)
    b = irl.token_advantages(7.0 * r, mask, outcome, 4, 0.05)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  def test_bad_group_size(self):
    r, mask, _, outcome, _ = random_batch(5)
    with pytest.raises(ValueError, match="group_size"):
      irl.token_advantages(r, mask, outcome, 3, 0.05)


RM_LOSS_GRAD = jax.jit(jax.grad(irl.rm_loss), static_argnums=4)
RM_LOSS_GRAD_LOGP = jax.jit(jax.grad(irl.rm_loss, argnums=2), static_argnums=4)


class RmLossTest(chex.TestCase):

  def example(self):
    r, mask = ragged(EX_REWARDS + EX_DEMOS)
    logp, _ = ragged(EX_LOGP + [[0.0] * 3, [0.0] * 2])
    expert = np.array(EX_OUTCOME + [1.0, 1.0]) > 0.99  # rollouts 0 and 3 are pseudo-experts
    return r, mask, logp, expert

  def test_worked_example(self):
    r, mask, logp, expert = self.example()
    np.testing.assert_allclose(irl.rm_loss(r, mask, logp, expert, 6), -0.118394, atol=1e-6)
    np.testing.assert_allclose(irl.rm_loss(r, mask, logp, expert, 1), -0.101111, atol=1e-6)
    # d loss / d r[b, t] = w_b / L_b on samples, so the gradient reads off the weights.
    grad = jax.grad(lambda x: irl.rm_loss(x, mask, logp, expert, 6))(r)
    np.testing.assert_allclose([grad[1, 0] * 5, grad[2, 0] * 2], [0.668188, 0.331812], atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(SETTINGS, max_examples=12)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), pool=st.sampled_from([1, 2, 4, 8]))
  def test_matches_loop_reference(self, seed, pool):
    r, mask, logp, _, expert = random_batch(seed, empty_rows=True)
    loss = self.variant(irl.rm_loss, static_argnums=(4,))(r, mask, logp, expert, pool)
    np.testing.assert_allclose(loss, ref_rm_loss(r, mask, logp, expert, pool), rtol=1e-5,
                               atol=1e-6)

  @hypothesis.settings(SETTINGS, max_examples=12)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), pool=st.sampled_from([1, 4, 8]))
  def test_no_gradient_through_the_weights(self, seed, pool):
    """d loss_S / d r[b,t] = m (w_b 1[b in P] - 1[b in E] / |E∩S|) / L_b / #pools, w held fixed."""
    r, mask, logp, _, expert = random_batch(seed)
    grad = np.asarray(RM_LOSS_GRAD(r, mask, logp, expert, pool))
    expected = np.zeros_like(r)
    for start in range(0, r.shape[0], pool):
      rows = range(start, start + pool)
      samples = [b for b in rows if not expert[b]]
      experts = [b for b in rows if expert[b]]
      a = np.array([(r[b] * mask[b]).sum() - (logp[b] * mask[b]).sum() for b in samples])
      w = np.exp(a - a.max()) / np.exp(a - a.max()).sum() if samples else []
      for wb, b in zip(w, samples):
        expected[b] = wb * mask[b] / mask[b].sum()
      for b in experts:
        expected[b] = -mask[b] / mask[b].sum() / len(experts)
    np.testing.assert_allclose(grad, expected / (r.shape[0] // pool), rtol=1e-4, atol=1e-6)
    self.assertFalse(np.any(np.asarray(RM_LOSS_GRAD_LOGP(r, mask, logp, expert, pool))))

  def test_common_shift_of_sample_returns(self):
    """A constant c added to every sample's R leaves w, hence the gradient, unchanged; the value
    moves by c sum_b w_b / L_b (Rbar is length-normalised, so the loss itself is not invariant).
    A constant added to every sample's log-prob changes nothing."""
    r, mask, logp, expert = self.example()
    c = 0.8
    shifted = r.copy()
    shifted[~expert, 0] += c  # the first token of each sample row: R_b + c
    loss = lambda x: irl.rm_loss(x, mask, logp, expert, 6)
    grad = lambda x: RM_LOSS_GRAD(x, mask, logp, expert, 6)
    np.testing.assert_allclose(grad(shifted), grad(r), atol=1e-7)
    np.testing.assert_allclose(loss(shifted) - loss(r), c * (0.668188 / 5 + 0.331812 / 2),
                               atol=1e-6)
    lp_shift = logp.copy()
    lp_shift[~expert, 0] -= 2.5
    np.testing.assert_allclose(irl.rm_loss(r, mask, lp_shift, expert, 6), loss(r), atol=1e-7)

  @hypothesis.settings(SETTINGS, max_examples=12)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1), pool=st.sampled_from([1, 2, 4, 8]))
  def test_uniform_reward_shift_moves_only_one_sided_pools(self, seed, pool):
    """Along r -> r + c m (every token of every row), Rbar_b -> Rbar_b + c and w is held fixed,
    so d loss_S / dc = sum_P w - 1[E∩S nonempty] = 1[P∩S nonempty] - 1[E∩S nonempty]: zero for a
    pool holding both sets, +-1 for a one-sided pool. Pools of one row are all one-sided, so the
    loss keeps a slope of (#samples - #experts) / #pools along a constant reward offset."""
    r, mask, logp, _, expert = random_batch(seed)
    _, slope = jax.jvp(lambda x: irl.rm_loss(x, mask, logp, expert, pool), (r,), (mask,))
    want = [float(np.any(~expert[s:s + pool])) - float(np.any(expert[s:s + pool]))
            for s in range(0, len(expert), pool)]
    np.testing.assert_allclose(slope, np.mean(want), atol=1e-6)

  def test_pools_of_one_are_signed_mean_rewards(self):
    r, mask, logp, expert = self.example()
    mean = (r * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(irl.rm_loss(r, mask, logp, expert, 1),
                               np.mean(np.where(expert, -mean, mean)), atol=1e-6)

  def test_padding_rows_and_bad_pool(self):
    r, mask, logp, expert = self.example()
    pad = lambda x: np.concatenate([x, np.zeros_like(x[:2])])
    np.testing.assert_allclose(irl.rm_loss(pad(r), pad(mask), pad(logp), pad(expert), 1),
                               irl.rm_loss(r, mask, logp, expert, 1), atol=1e-7)
    with pytest.raises(ValueError, match="pool_size"):
      irl.rm_loss(r, mask, logp, expert, 4)


if __name__ == "__main__":
  absltest.main()
