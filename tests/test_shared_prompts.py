"""A rollout group's prompt run once (`train.share_prompts`): the same log-probs, gradients and
updates as every row running its own prompt, against the full forward as the reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prl_jax.models import config as model_config
from prl_jax.models.logprobs import response_logprobs, shares_prompts
from prl_jax.models.transformer import init_params
from prl_jax.run import updates
from prl_jax.run.batch import PolicyBatch, SequenceBatch
from prl_jax.run.state import ModelState
from prl_jax.train import objectives

GROUPS, N_PER, P, N = 4, 3, 7, 9


def _batch(seed=0):
  """4 prompts of 2-7 real tokens (left-padded), each repeated for 3 responses of 1-9 tokens."""
  rng = np.random.default_rng(seed)
  plen = rng.integers(2, P + 1, GROUPS)
  pmask = np.arange(P)[None] >= (P - plen)[:, None]
  prompts = rng.integers(1, 128, (GROUPS, P)) * pmask
  rlen = rng.integers(1, N + 1, GROUPS * N_PER)
  rmask = np.arange(N)[None] < rlen[:, None]
  tokens = np.concatenate([np.repeat(prompts, N_PER, 0),
                           rng.integers(1, 128, (GROUPS * N_PER, N)) * rmask], 1)
  mask = np.concatenate([np.repeat(pmask, N_PER, 0), rmask], 1)
  return SequenceBatch(tokens=jnp.asarray(tokens, jnp.int32), token_mask=jnp.asarray(mask),
                       response_mask=jnp.asarray(rmask, jnp.float32), prompt_len=P)


@pytest.fixture(scope="module")
def model():
  cfg = model_config.preset("tiny", dtype="float32")
  return cfg, init_params(cfg, jax.random.PRNGKey(0))


@pytest.mark.parametrize("chunk", [0, 4])
def test_log_probs_and_entropies_match_the_full_forward(model, chunk):
  cfg, params = model
  seq = _batch()
  run = jax.jit(lambda p, group: response_logprobs(cfg, p, seq.tokens, seq.token_mask, P, chunk,
                                                   with_entropy=True, group=group),
                static_argnums=1)
  (full, full_h), (shared, shared_h) = run(params, 1), run(params, N_PER)
  m = np.asarray(seq.response_mask)
  np.testing.assert_allclose(np.asarray(shared) * m, np.asarray(full) * m, atol=1e-5)
  np.testing.assert_allclose(np.asarray(shared_h) * m, np.asarray(full_h) * m, atol=1e-5)


def test_gradients_match_the_full_forward(model):
  """The repeat's transpose sums each response's gradient into its group's one prompt pass."""
  cfg, params = model
  seq = _batch(1)
  weights = jax.random.normal(jax.random.PRNGKey(1), seq.response_mask.shape) * seq.response_mask
  grad = jax.jit(jax.grad(lambda p, group: jnp.sum(weights * response_logprobs(
      cfg, p, seq.tokens, seq.token_mask, P, group=group))), static_argnums=1)
  full, shared = grad(params, 1), grad(params, N_PER)
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(shared)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5 * float(jnp.max(
        jnp.abs(a))) + 1e-7)


def test_a_batch_that_is_not_whole_groups_is_refused(model):
  cfg, params = model
  seq = _batch()
  with pytest.raises(ValueError, match="groups of 5"):
    response_logprobs(cfg, params, seq.tokens, seq.token_mask, P, group=5)


def test_shuffled_epochs_keep_groups_whole_and_update_as_the_full_forward(model):
  """Two epochs of two mini-batches of two micro-batches: groups are shuffled whole, so the
  shared loss sees whole groups and its updates equal the full forward's under the same order."""
  cfg, params = model
  seq = _batch(2)
  rows = seq.tokens.shape[0]
  adv = jax.random.normal(jax.random.PRNGKey(3), seq.response_mask.shape)
  old = response_logprobs(cfg, params, seq.tokens, seq.token_mask, P) - 0.05
  batch = PolicyBatch(seq=seq, old_logp=old, ref_logp=old, advantages=adv)
  # SGD: the parameters move by the gradients themselves (Adam's normalisation would magnify
  # float-rounding differences on near-zero gradients into step-sized ones).
  tx = optax.sgd(0.5)
  state = ModelState(params=params, opt_state=tx.init(params))

  def run(group):
    loss = objectives.policy_loss_fn(cfg, dataclasses.replace(
        objectives.PolicyLossConfig(kl_coef=0.1), prompt_group=group))
    return jax.jit(lambda s: updates.epoch_updates(s, tx, loss, batch, jax.random.PRNGKey(4), 2,
                                                   2, 1, N_PER))(state)

  (full, full_metrics), (shared, shared_metrics) = run(1), run(N_PER)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(full.params), jax.tree_util.tree_leaves(params)))
  assert moved > 1e-3  # the updates did something to compare
  for a, b in zip(jax.tree_util.tree_leaves(full.params), jax.tree_util.tree_leaves(
      shared.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
  np.testing.assert_allclose(float(shared_metrics["loss"]), float(full_metrics["loss"]),
                             atol=1e-6)
  assert rows == GROUPS * N_PER


def test_group_shuffle_moves_whole_groups():
  """`updates.group_permutation`, the epochs' shuffle: every run of N_PER rows is one group, in
  its own order, and mini-batches of it hold whole groups; block 1 is the row permutation the
  shuffle always was."""
  rows = GROUPS * N_PER
  key = jax.random.PRNGKey(7)
  order = np.asarray(updates.group_permutation(key, rows, N_PER))
  assert sorted(order.tolist()) == list(range(rows))
  for start in range(0, rows, N_PER):
    chunk = order[start:start + N_PER]
    assert chunk[0] % N_PER == 0 and list(np.diff(chunk)) == [1] * (N_PER - 1)
  split = updates.split_rows(jnp.asarray(order), 2, N_PER)
  assert all(len(set(np.asarray(c) // N_PER)) == 2 for c in split)  # two whole groups each
  np.testing.assert_array_equal(np.asarray(updates.group_permutation(key, rows)),
                                np.asarray(jax.random.permutation(key, rows)))


def test_which_configs_share_prompts():
  from configs import base
  from prl_jax.train.batch_split import prompt_group

  cfg = model_config.preset("tiny")
  c = base.get_config()
  c.rollout.prompts_per_step, c.rollout.n = 8, 4
  assert prompt_group(c, cfg) == 4
  c.train.micro_batch_size = 6  # a micro-batch would split a group
  assert prompt_group(c, cfg) == 1
  c.train.micro_batch_size = 8
  assert prompt_group(c, cfg) == 4
  c.train.share_prompts = False
  assert prompt_group(c, cfg) == 1
  c.train.share_prompts = True
  assert not shares_prompts(dataclasses.replace(cfg, attention_impl="fused"), 4)
  assert not shares_prompts(dataclasses.replace(cfg, attention_chunk=8), 4)
  assert not shares_prompts(cfg, 1)


def test_which_prm_losses_share_prompts():
  """PRIME's PRM batch is the rollouts (its loss reads them in order): it shares when its
  mini-batches hold whole groups; rePIRL's interleaves demonstrations: never."""
  from configs import base
  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.train.batch_split import prm_prompt_group

  cfg = model_config.preset("tiny")
  c = base.get_config()
  c.rollout.prompts_per_step, c.rollout.n = 8, 4
  assert prm_prompt_group(c, cfg, get_recipe("prime")) == 4
  assert prm_prompt_group(c, cfg, get_recipe("repirl")) == 1
  c.algo.prime.prm_mini_batch_size = 6
  assert prm_prompt_group(c, cfg, get_recipe("prime")) == 1
