"""The baselines compared against the process-reward methods, set as their papers' trainers:
RLOO whitened like PRIME's baseline, PPO's clipped critic loss, and the mini configs' shared
filter and dual clip."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from prl_jax.algorithms.recipes import RLInputs
from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import load_config_file
from prl_jax.models.config import preset
from prl_jax.models.transformer import init_params
from prl_jax.run.batch import make_sequences
from prl_jax.train import objectives

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def _rloo_inputs(outcome, lengths, n, width=5):
  b = len(outcome)
  mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
  zeros = jnp.zeros((b, width))
  return RLInputs(outcome=jnp.asarray(outcome, jnp.float32), mask=jnp.asarray(mask),
                  old_logp=zeros, ref_logp=zeros, prm_token=zeros, values=zeros,
                  step_end=jnp.zeros((b, width), bool), group_size=n), mask


def _reference_rloo(outcome, mask, n, whiten):
  """Loops: r_i minus the mean of the other n-1 of its group on every valid token, then (x - mean)
  / sqrt(Bessel variance + 1e-8) over all valid tokens of the batch."""
  adv = np.zeros(mask.shape)
  for i in range(len(outcome)):
    g = i // n
    others = [outcome[j] for j in range(g * n, g * n + n) if j != i]
    adv[i] = (outcome[i] - sum(others) / (n - 1)) * mask[i]
  if not whiten:
    return adv
  values = [adv[b, t] for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]
  mean = sum(values) / len(values)
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return np.where(mask > 0, (adv - mean) / np.sqrt(var + 1e-8), 0.0)


@pytest.mark.parametrize("whiten", [False, True])
def test_rloo_whitens_over_the_batch_like_primes_baseline(whiten):
  rng = np.random.default_rng(0)
  outcome = rng.integers(0, 2, 12).astype(np.float32)
  inputs, mask = _rloo_inputs(outcome, rng.integers(1, 6, 12), 4)
  options = ml_collections.FrozenConfigDict({"rloo": {"whiten": whiten}})
  got = get_recipe("rloo").advantages(options, inputs).token
  np.testing.assert_allclose(got, _reference_rloo(outcome, mask, 4, whiten), rtol=1e-5,
                             atol=1e-6)


def test_value_clip_is_verls_clipped_critic_loss():
  cfg = preset("tiny", vocab_size=32)
  params = {"backbone": init_params(cfg, jax.random.key(0)),
            "head": {"kernel": jax.random.normal(jax.random.key(1), (cfg.hidden_size,)),
                     "bias": jnp.zeros(())}}
  rng = np.random.default_rng(1)
  responses = [rng.integers(3, 32, k).tolist() for k in (3, 5, 1, 4)]
  seq = make_sequences([[1, 2]] * 4, responses, 2, 5)
  values = np.asarray(jax.jit(lambda p, s: objectives.value_forward(cfg, p, s))(params, seq))
  returns = rng.normal(size=values.shape).astype(np.float32)
  old = (values + rng.normal(scale=1.0, size=values.shape)).astype(np.float32)
  mask = seq.response_mask
  for clip in (0.0, 0.5):
    num, (den, _) = jax.jit(objectives.value_loss_fn(cfg, clip))(params, (seq, returns, old))
    total = 0.0
    for b, t in zip(*np.nonzero(mask)):
      v, r, o = float(values[b, t]), float(returns[b, t]), float(old[b, t])
      error = (v - r) ** 2
      if clip:
        clipped = o + min(max(v - o, -clip), clip)
        error = max(error, (clipped - r) ** 2)
      total += 0.5 * error
    assert float(den) == mask.sum()
    np.testing.assert_allclose(float(num), total, rtol=1e-5)


def _mini(name):
  return load_config_file(os.path.join(CONFIGS, f"{name}.py"))


def test_mini_baselines_share_primes_filter_and_prls_dual_clip():
  prime, rloo = _mini("prime"), _mini("rloo")
  assert rloo.algo.rloo.whiten and rloo.filter.to_dict() == prime.filter.to_dict()
  assert prime.filter.enable and (prime.filter.acc_lo, prime.filter.acc_hi) == (0.2, 0.8)
  assert _mini("grpo").algo.loss.dual_clip == _mini("prl").algo.loss.dual_clip == 3.0
  assert _mini("ppo").algo.ppo.value_clip == 0.5
