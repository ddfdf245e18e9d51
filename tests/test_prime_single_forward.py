"""PRIME's PRM update takes the single forward's scores from the loss's own forward.

The loop's PRM update must give the same scores, advantages and updated PRM as the two-pass
computation it replaces: before the update of mini-batch k, a separate PRM forward scores the
rows of mini-batch k with the parameters after k-1 updates; then the update's loss runs its
own forward on the same rows. The reference below is that two-pass path written out with the
shared helpers (same splits, same optimizer), so the comparison can be tight (1e-6 in float32:
the same function of the same rows and parameters, only fused differently).
"""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from prl_jax.algorithms.recipes import RLInputs
from prl_jax.algorithms.registry import get_recipe
from prl_jax.models.logprobs import response_logprobs
from prl_jax.run import updates
from prl_jax.run.context import build_context
from prl_jax.run.state import ModelState, init_state, optimizers
from prl_jax.train.batch_split import prm_prompt_group, prm_rows
from prl_jax.train.loop import build_functions
from tests import test_prm_cadence as prm_cadence

# The PRIME config and random rollouts of tests/test_prm_cadence.py (PROMPTS x N, PRM lr 3e-2:
# large steps, so a score read after the wrong update differs visibly).
_config, PROMPTS, N = prm_cadence._config, prm_cadence.PROMPTS, prm_cadence.N
RTOL = ATOL = 1e-6
# Whitening divides by the batch's std and code mode by the largest |return-to-go|: the scores'
# 1-2 ulp differences come out of the advantages a few times larger (unit-scale advantages).
ADV_TOL = 1e-5


@pytest.fixture(scope="module")
def context(tmp_path_factory):
  return build_context(_config(), str(tmp_path_factory.mktemp("prime_single")))


def _rollouts(ctx):
  outcome = (1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0)
  return prm_cadence._rollouts(ctx, seed=1, outcome=outcome)


class _Inputs:  # the fields PRIME's PRM batch reads
  def __init__(self, seq, ref_logp, outcome):
    self.seq, self.ref_logp, self.outcome = seq, ref_logp, outcome


def _setup(context, overrides):
  # One lane: lanes sum a mini-batch's micro-batches in another order, which the PRM's large
  # Adam steps magnify past 1e-6 (tests/test_update_lanes.py checks lanes against one program).
  config = _config(**{"train.update_lanes": 1, **overrides})
  ctx = dataclasses.replace(context, config=config)
  recipe = get_recipe("prime")
  fns = build_functions(ctx, recipe)
  state = ctx.place_state(init_state(ctx, recipe))
  seq, outcome = _rollouts(ctx)
  ref_logp = fns.logprobs(state.ref_params, seq)
  batch, _ = recipe.prm.batch(config.algo, _Inputs(seq, ref_logp, outcome))
  return ctx, recipe, fns, state, seq, outcome, ref_logp, batch


def _two_pass(ctx, recipe, prm_state, batch, seq, refresh):
  """The reference: a separate scoring forward per mini-batch (single forward) or after all
  updates (double forward), and the loss's own forward inside each update."""
  config = ctx.config
  options = ml_collections.FrozenConfigDict(config.algo)
  # The loop's PRM loss runs each group's prompt once (tests/test_shared_prompts.py checks that
  # against the full forward); the reference does the same, so only the cadence differs here.
  group = prm_prompt_group(config, ctx.model_cfg, recipe)
  assert group == N
  loss = updates.dropping_rows(recipe.prm.loss(ctx.model_cfg, options, 0, group))
  score = lambda p, s: response_logprobs(ctx.model_cfg, p, s.tokens, s.token_mask, s.prompt_len,
                                         group=group)
  num_mini, num_micro, block = prm_rows(config, recipe, seq.tokens.shape[0])
  tx = optimizers(config, updates_per_step=(1, num_mini, 1))[1]
  if refresh:
    state, _ = jax.jit(lambda st, b: updates.minibatch_updates(
        st, tx, loss, b, num_mini, num_micro, block))(prm_state, batch)
    return state, jax.jit(score)(state.params, seq)
  state, _, scores = jax.jit(lambda st, b, s: updates.scored_minibatch_updates(
      st, tx, loss, b, num_mini, num_micro, score, s, block))(prm_state, batch, seq)
  return state, scores


def _advantages(ctx, fns, seq, outcome, ref_logp, prm_token):
  mask = seq.response_mask.astype(np.float32)
  zeros = np.zeros(mask.shape, np.float32)
  x = RLInputs(outcome=outcome, mask=mask, old_logp=zeros, ref_logp=ref_logp,
               prm_token=prm_token, values=zeros, step_end=np.asarray(mask, bool), group_size=N)
  return np.asarray(fns.advantages(x).token)


def _close(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("overrides, num_mini, refresh", [
    # two mini-batches of 8 rows (groups 0 and 2, then 1 and 3), micro-batches of 4 inside
    ({"algo.prime.prm_mini_batch_size": 8, "train.micro_batch_size": 4}, 2, False),
    # four mini-batches of one group, no micro split (slow: the same path with more batches)
    pytest.param({"algo.prime.prm_mini_batch_size": 4}, 4, False, marks=pytest.mark.slow),
    # double forward: slow, as tests/test_prm_cadence.py checks that path in the default suite
    pytest.param({"algo.prime.prm_mini_batch_size": 8, "train.micro_batch_size": 4,
                  "algo.prime.double_forward": True}, 2, True, marks=pytest.mark.slow),
])
def test_prm_update_matches_the_two_pass_path(context, overrides, num_mini, refresh):
  ctx, recipe, fns, state, seq, outcome, ref_logp, batch = _setup(context, overrides)
  assert prm_rows(ctx.config, recipe, seq.tokens.shape[0])[0] == num_mini
  before = jax.tree_util.tree_map(np.array, state.prm)  # the update donates its state
  want_state, want_scores = _two_pass(ctx, recipe, before, batch, seq, refresh)

  prm_state, scores, _ = fns.prm_update(state.prm, batch, seq)
  assert (scores is None) == refresh
  if refresh:
    scores = fns.prm_token(prm_state.params, seq)
  mask = np.asarray(seq.response_mask)
  np.testing.assert_allclose(np.asarray(scores) * mask, np.asarray(want_scores) * mask,
                             rtol=RTOL, atol=ATOL)
  _close(prm_state.params, want_state.params)
  _close(prm_state.opt_state, want_state.opt_state)
  np.testing.assert_allclose(_advantages(ctx, fns, seq, outcome, ref_logp, scores),
                             _advantages(ctx, fns, seq, outcome, ref_logp, want_scores),
                             rtol=ADV_TOL, atol=ADV_TOL)

  if not refresh:
    # The cadence: mini-batch 0 is scored by the PRM before any update, the others after k-1
    # updates, so they differ from the pre-update forward (the check is not vacuous).
    first = np.asarray(jax.jit(lambda p: response_logprobs(
        ctx.model_cfg, p, seq.tokens, seq.token_mask, seq.prompt_len))(before.params))
    group = np.arange(PROMPTS * N) // N
    in_first = group % num_mini == 0
    np.testing.assert_allclose((np.asarray(scores) * mask)[in_first],
                               (first * mask)[in_first], rtol=RTOL, atol=ATOL)
    assert np.abs((np.asarray(scores) - first) * mask)[~in_first].max() > 1e-3


def test_rows_of_the_loss_come_back_in_batch_order():
  """`minibatch_updates_with_rows` merges each micro- and mini-batch's rows back in place."""
  rows, width = 16, 3
  x = np.arange(rows * width, dtype=np.float32).reshape(rows, width)

  def loss(w, batch):
    out = batch * w  # per-row output, tagged by the parameters it was read with
    return out.sum(), (np.float32(batch.shape[0]), {}, out)

  tx = optimizers(_config(), updates_per_step=(1, 2, 1))[1]
  w = np.ones((), np.float32)
  state = ModelState(w, tx.init(w))
  for num_mini, num_micro, block in [(2, 2, 4), (4, 1, 2), (1, 4, 1)]:
    _, _, out = updates.minibatch_updates_with_rows(state, tx, loss, x, num_mini, num_micro,
                                                    block)
    out = np.asarray(out)
    # Rows of mini-batch 0 were read with w = 1 (before any update): exactly x.
    first = updates.merge_rows(np.stack([
        np.ones(rows // num_mini, bool) if k == 0 else np.zeros(rows // num_mini, bool)
        for k in range(num_mini)]), block)
    np.testing.assert_array_equal(out[first], x[first])
    if num_mini > 1:  # later mini-batches after updates: scaled rows of x, never another row
      ratio = out[~first] / np.where(x[~first] == 0, 1, x[~first])
      assert np.all(np.abs(ratio - ratio[:, :1]) < 1e-6) and np.all(ratio != 1)
