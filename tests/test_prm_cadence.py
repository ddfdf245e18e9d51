"""PRIME's PRM cadence against a hand loop of optimizer steps (official `dp_prime.py`).

The PRM walks the rollouts in mini-batches (whole groups, strided over the batch), one AdamW step
each. Single forward: the scores of mini-batch k come from the PRM after k-1 of the step's
updates; double forward: every score comes from the PRM after all of them.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.models.logprobs import response_logprobs
from prl_jax.run.batch import make_sequences
from prl_jax.run.context import build_context
from prl_jax.run.state import init_state, optimizers
from prl_jax.train.loop import build_functions

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")
PROMPTS, N, LENGTH = 4, 4, 6


def _config(**overrides):
  config = load_config_file(os.path.join(CONFIGS, "prime.py"))
  config.rollout.prompts_per_step, config.rollout.n = PROMPTS, N
  config.rollout.max_new_tokens = LENGTH
  config.train.mini_batch_size = 0
  config.task.num_train, config.task.num_eval = 16, 4
  config.mesh.num_devices = 1
  config.optim.prm_lr = 3e-2  # large steps, so every update visibly moves the scores
  config.algo.prime.beta = 1.0
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


OUTCOME = (1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0)


def _rollouts(ctx, seed: int = 0, outcome=OUTCOME):
  """PROMPTS x N random responses (2..LENGTH tokens) to the first training prompts, placed."""
  rng = np.random.default_rng(seed)
  prompts = [ctx.tokenizer.encode(ex["prompt"]) for ex in ctx.train_examples[:PROMPTS]]
  rows = [p for p in prompts for _ in range(N)]
  vocab = ctx.model_cfg.vocab_size
  responses = [rng.integers(3, vocab, rng.integers(2, LENGTH + 1)).tolist() for _ in rows]
  outcome = np.asarray(outcome, np.float32)
  seq = make_sequences(rows, responses, ctx.prompt_len, LENGTH, ctx.tokenizer.pad_id)
  return ctx.place_batch(seq), ctx.place_batch(outcome)


def _reference(ctx, params, seq, ref_logp, outcome, num_mini):
  """A plain loop: rows of group g form mini-batch g mod K; score, then one AdamW step on the
  mean cross-entropy of that mini-batch. Returns (single-forward scores, final params)."""
  config, cfg = ctx.config, ctx.model_cfg
  _, tx, _ = optimizers(config)  # global-norm clipping, then AdamW
  opt_state = tx.init(params)
  beta = config.algo.prime.beta
  logp = jax.jit(lambda p, rows: response_logprobs(cfg, p, seq.tokens[rows],
                                                   seq.token_mask[rows], seq.prompt_len))
  scores = np.zeros(seq.response_mask.shape, np.float32)

  def loss(p, rows):
    mask = seq.response_mask[rows]
    z = beta * jnp.sum((logp(p, rows) - ref_logp[rows]) * mask, axis=1)
    r = outcome[rows]
    return -jnp.mean(r * jax.nn.log_sigmoid(z) + (1 - r) * jax.nn.log_sigmoid(-z))

  grad = jax.jit(jax.grad(loss))
  for k in range(num_mini):
    rows = np.asarray([i for i in range(PROMPTS * N) if (i // N) % num_mini == k])
    scores[rows] = np.asarray(logp(params, rows))
    grads = grad(params, rows)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return scores, params


@pytest.fixture(scope="module")
def context(tmp_path_factory):
  return build_context(_config(), str(tmp_path_factory.mktemp("prime")))


def _run(context, **overrides):
  config = _config(**overrides)
  ctx = dataclasses.replace(context, config=config)
  recipe = get_recipe("prime")
  fns = build_functions(ctx, recipe)
  state = ctx.place_state(init_state(ctx, recipe))
  seq, outcome = _rollouts(ctx)
  ref_logp = fns.logprobs(state.ref_params, seq)
  before = jax.tree_util.tree_map(np.asarray, state.prm.params)
  batch, _ = recipe.prm.batch(config.algo, _Inputs(seq, ref_logp, outcome))
  prm_state, scores, metrics = fns.prm_update(state.prm, batch, seq)
  if scores is None:
    scores = fns.prm_token(prm_state.params, seq)
  return ctx, before, seq, ref_logp, outcome, prm_state, np.asarray(scores)


class _Inputs:  # the fields PRIME's PRM batch reads
  def __init__(self, seq, ref_logp, outcome):
    self.seq, self.ref_logp, self.outcome = seq, ref_logp, outcome


def _assert_close(a, b):
  # Adam's first steps move near-zero gradients by about +-lr: float noise in such a gradient
  # (scan vs loop) shows up as a small absolute difference, so compare within 1% of lr.
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=3e-4)


def _check_single_forward(context, overrides, num_mini):
  ctx, before, seq, ref_logp, outcome, prm_state, scores = _run(context, **overrides)
  want_scores, want_params = _reference(ctx, before, seq, ref_logp, outcome, num_mini)
  mask = np.asarray(seq.response_mask)
  np.testing.assert_allclose(scores * mask, want_scores * mask, rtol=1e-4, atol=1e-5)
  _assert_close(prm_state.params, want_params)
  return ctx, before, seq, ref_logp, outcome, scores, want_params


def test_single_and_double_forward_against_a_loop_of_optimizer_steps(context):
  """Mini-batches of 8 rows (groups 0 and 2, then 1 and 3), micro-batches of 4 inside."""
  overrides = {"algo.prime.prm_mini_batch_size": 8, "train.micro_batch_size": 4}
  ctx, before, seq, ref_logp, outcome, scores, want_params = _check_single_forward(
      context, overrides, 2)
  # The cadence matters: the second mini-batch is not scored by the PRM before the update.
  mask = np.asarray(seq.response_mask)
  first = np.asarray(jax.jit(lambda p: response_logprobs(
      ctx.model_cfg, p, seq.tokens, seq.token_mask, seq.prompt_len))(before))
  second = np.asarray([(i // N) % 2 == 1 for i in range(PROMPTS * N)])
  np.testing.assert_allclose((scores * mask)[~second], (first * mask)[~second], rtol=1e-4,
                             atol=1e-5)
  assert np.abs((scores - first) * mask)[second].max() > 1e-3

  # Double forward: the same updates, then every rollout scored by the PRM after all of them.
  _, _, _, _, _, prm_state, rescored = _run(
      context, **overrides, **{"algo.prime.double_forward": True})
  _assert_close(prm_state.params, want_params)
  want = jax.jit(lambda p: response_logprobs(ctx.model_cfg, p, seq.tokens, seq.token_mask,
                                             seq.prompt_len))(want_params)
  np.testing.assert_allclose(rescored * mask, np.asarray(want) * mask, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, num_mini", [
    ({"train.mini_batch_size": 4}, 4),  # the policy's mini-batch: one group each
    ({"algo.prime.prm_mini_batch_size": 8}, 2),
    ({}, 1),  # one step over the whole batch, scored before it
])
def test_single_forward_for_other_minibatch_sizes(context, overrides, num_mini):
  _check_single_forward(context, overrides, num_mini)


def test_a_prm_minibatch_that_does_not_divide_the_batch_is_named(context):
  with pytest.raises(ValueError, match="PRM mini-batch"):
    _run(context, **{"algo.prime.prm_mini_batch_size": 6})
