"""Update and log-prob lanes (prl_jax.host_lanes, prl_jax.run.update_lanes): a mini-batch's
gradient taken as row shares on host threads and summed, and a row-wise pass run as row shares,
give what the one-program update (`updates.epoch_updates`) and the whole pass give."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prl_jax import host_lanes
from prl_jax.config import ConfigError
from prl_jax.models import config as model_config
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import init_params
from prl_jax.run import update_lanes, updates
from prl_jax.run.batch import PolicyBatch, SequenceBatch
from prl_jax.run.state import ModelState
from prl_jax.train import objectives
from tests.test_shared_prompts import N_PER, P, _batch

GROUP_ROWS = N_PER  # 3 responses per prompt


@pytest.fixture(scope="module")
def model():
  cfg = model_config.preset("tiny", dtype="float32")
  return cfg, init_params(cfg, jax.random.PRNGKey(0))


def _sequences() -> SequenceBatch:
  """24 rows: 8 prompts (2-7 tokens, left-padded) x 3 responses of 1-9 tokens."""
  a, b = _batch(0), _batch(1)
  return SequenceBatch(*(jnp.concatenate([getattr(a, f), getattr(b, f)])
                         for f in ("tokens", "token_mask", "response_mask")), prompt_len=P)


def _policy_batch(cfg, params) -> PolicyBatch:
  seq = _sequences()
  old = response_logprobs(cfg, params, seq.tokens, seq.token_mask, P) - 0.05
  adv = jax.random.normal(jax.random.PRNGKey(3), seq.response_mask.shape) * seq.response_mask
  return PolicyBatch(seq=seq, old_logp=old, ref_logp=old + 0.02, advantages=adv)


@pytest.mark.parametrize("rows,micro,block,lanes,expected", [
    (64, 1, 4, 2, (2, 1)),  # one micro-batch: two halves of whole groups
    (64, 4, 4, 2, (2, 2)),  # the run's micro-batches shared out
    (24, 3, 1, 2, (2, 2)),  # 3 micro-batches -> 2 per lane of 6 rows (never more than 8)
    (12, 1, 4, 2, (1, 1)),  # halves of 6 rows would split a group of 4
    (64, 2, 4, 1, (1, 2)),
])
def test_lane_split(rows, micro, block, lanes, expected):
  assert update_lanes.lane_split(rows, micro, block, lanes) == expected


@pytest.mark.parametrize("epochs,minibatches,micro,block,lanes,ran", [
    (1, 1, 1, GROUP_ROWS, 2, 2),  # the GRPO step's shape: one update, two halves
    (2, 2, 2, GROUP_ROWS, 2, 2),  # shuffled epochs of mini-batches, groups whole
    (1, 1, 4, 1, 3, 3),  # three lanes of two micro-batches each
    (1, 1, 1, GROUP_ROWS, 3, 0),  # thirds of 24 rows split groups: one program, no lanes
])
def test_lane_updates_equal_the_one_program_update(model, monkeypatch, epochs, minibatches,
                                                    micro, block, lanes, ran):
  cfg, params = model
  batch = _policy_batch(cfg, params)
  loss = objectives.policy_loss_fn(cfg, objectives.PolicyLossConfig(kl_coef=0.1,
                                                                    prompt_group=block))
  # SGD: the parameters move by the gradients themselves (Adam's normalisation would magnify
  # float-rounding differences on near-zero gradients into step-sized ones).
  tx = optax.sgd(0.5)
  state = lambda: ModelState(params=jax.tree_util.tree_map(jnp.copy, params),
                             opt_state=tx.init(params))  # a copy: the lane update donates it
  key = jax.random.PRNGKey(4)
  reference, ref_metrics = jax.jit(lambda s: updates.epoch_updates(
      s, tx, loss, batch, key, epochs, minibatches, micro, block))(state())

  calls = []

  def recorded(fn, count):
    calls.append(count)
    return host_lanes.in_lanes(fn, count)

  monkeypatch.setattr(update_lanes, "in_lanes", recorded)
  update = update_lanes.epoch_update_fn(tx, loss, num_epochs=epochs, num_minibatches=minibatches,
                                        num_micro=micro, block=block, lanes=lanes)
  laned, metrics = update(state(), batch, key)
  assert calls == ([ran] * epochs * minibatches if ran else [])
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(reference.params), jax.tree_util.tree_leaves(params)))
  assert moved > 1e-3  # the updates did something to compare
  for a, b in zip(jax.tree_util.tree_leaves(reference.params),
                  jax.tree_util.tree_leaves(laned.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
  assert set(metrics) == set(ref_metrics)
  for name in metrics:
    np.testing.assert_allclose(float(metrics[name]), float(ref_metrics[name]), rtol=1e-5,
                               atol=1e-7, err_msg=name)


@pytest.mark.parametrize("minibatches,micro,lanes", [(1, 1, 2), (2, 2, 2), (2, 1, 3)])
def test_lane_updates_return_each_rows_output_in_the_batchs_order(model, minibatches, micro,
                                                                  lanes):
  """`minibatch_update_fn`: the loss's per-row output of mini-batch k, read at the parameters
  after k-1 steps, comes back in the rows' order, as `minibatch_updates_with_rows` returns it."""
  cfg, params = model
  batch = _policy_batch(cfg, params)
  policy_loss = objectives.policy_loss_fn(cfg, objectives.PolicyLossConfig(prompt_group=N_PER))

  def loss(p, b):  # the policy loss, and each row's summed log-probs as its per-row output
    num, (den, metrics) = policy_loss(p, b)
    logp = response_logprobs(cfg, p, b.seq.tokens, b.seq.token_mask, P, group=N_PER)
    return num, (den, metrics, jnp.sum(logp * b.seq.response_mask, axis=1))

  tx = optax.sgd(0.5)
  state = lambda: ModelState(params=jax.tree_util.tree_map(jnp.copy, params),
                             opt_state=tx.init(params))
  reference, _, ref_rows = jax.jit(lambda s: updates.minibatch_updates_with_rows(
      s, tx, loss, batch, minibatches, micro, N_PER))(state())
  update = update_lanes.minibatch_update_fn(tx, loss, num_minibatches=minibatches,
                                            num_micro=micro, block=N_PER, lanes=lanes)
  laned, _, rows = update(state(), batch)
  assert rows.shape == (24,)
  np.testing.assert_allclose(np.asarray(rows), np.asarray(ref_rows), rtol=1e-5)
  if minibatches > 1:  # the second mini-batch's rows were read after the first step
    first = updates.split_rows(np.arange(24), minibatches, N_PER)[1]
    before = jax.jit(lambda p: loss(p, batch)[1][2])(params)
    assert np.abs(np.asarray(rows)[first] - np.asarray(before)[first]).max() > 1e-4
  for a, b in zip(jax.tree_util.tree_leaves(reference.params),
                  jax.tree_util.tree_leaves(laned.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


def test_in_lanes_runs_each_lane_on_its_own_thread():
  barrier = threading.Barrier(3, timeout=10)  # returns only if all three run at once

  def lane(i):
    barrier.wait()
    return i, threading.get_ident()

  out = host_lanes.in_lanes(lane, 3)
  assert [i for i, _ in out] == [0, 1, 2] and len({t for _, t in out}) == 3
  assert host_lanes.in_lanes(lambda i: threading.get_ident(), 1) == [threading.get_ident()]


def test_rows_in_lanes_keeps_groups_whole():
  """A function of each row's group: shares of whole groups give the whole batch's output, and a
  split that would cut a group runs the batch in one piece."""
  def centred(params, batch):  # each row minus its group's mean, groups of 4 rows
    x = batch["x"]
    groups = x.reshape(-1, 4, x.shape[1])
    return params * (groups - groups.mean(1, keepdims=True)).reshape(x.shape)

  x = jnp.arange(48.0).reshape(12, 4) ** 1.5
  whole = centred(2.0, {"x": x})
  for lanes in (3, 2):  # shares of 4 rows; 12 rows do not halve into whole groups of 4
    out = host_lanes.rows_in_lanes(centred, lanes, block=4)(2.0, {"x": x})
    np.testing.assert_allclose(np.asarray(out), np.asarray(whole), rtol=1e-6)
  cut = host_lanes.rows_in_lanes(centred, 2, block=1)(2.0, {"x": x[:8]})  # halves of 4: whole
  np.testing.assert_allclose(np.asarray(cut), np.asarray(centred(2.0, {"x": x[:8]})), rtol=1e-6)


@pytest.mark.parametrize("lanes", [2, 4])
def test_log_probs_in_lanes_equal_the_whole_pass(model, lanes):
  cfg, params = model
  seq = _sequences()

  def logprobs(p, s):
    return response_logprobs(cfg, p, s.tokens, s.token_mask, s.prompt_len, group=N_PER)

  whole = jax.jit(logprobs)(params, seq)
  laned = host_lanes.rows_in_lanes(logprobs, lanes, N_PER)(params, seq)
  assert laned.shape == whole.shape
  m = np.asarray(seq.response_mask)
  np.testing.assert_allclose(np.asarray(laned) * m, np.asarray(whole) * m, atol=1e-5)


@pytest.mark.parametrize("method", ["grpo", "prime", "ppo"])
def test_an_rl_step_with_update_lanes_is_the_step_without(tmp_path, method):
  """One RL step (tiny model, forward old log-probs, KL loss) with train.update_lanes=2 and =1:
  the same rollouts, and the same update up to float rounding. PRIME's PRM update runs in lanes
  too, and its scores (from the update's own forward) return in the rollouts' order, or the
  advantages and the policy's update would differ; PPO's value update runs in lanes."""
  from tests.test_old_logp import _config
  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.run.context import build_context
  from prl_jax.run.state import init_state
  from prl_jax.train.loop import build_functions, rl_step
  from prl_jax.train.rollouts import PromptStream

  reward = tmp_path / "length_reward.py"
  reward.write_text("def length_reward(completions, **kwargs):\n"
                    "  return [len(c) % 4 / 3 for c in completions]\n")
  results = {}
  for lanes in (1, 2):
    config = _config(**{"train.old_logp_source": "forward", "algo.loss.kl_coef": 0.04,
                        "model.preset": "tiny", "train.update_lanes": lanes,
                        "task.reward_fn": f"{reward}:length_reward"})
    config.method = method
    ctx = build_context(config, str(tmp_path / str(lanes)))
    recipe = get_recipe(method)
    state = ctx.place_state(init_state(ctx, recipe))
    results[lanes] = rl_step(ctx, recipe, build_functions(ctx, recipe), state,
                             PromptStream(ctx.train_examples, 0))
  (one, one_metrics), (two, two_metrics) = results[1], results[2]
  assert 0 < one_metrics["train/reward"] < 1 and one_metrics["policy/grad_norm"] > 0
  assert two_metrics["train/reward"] == one_metrics["train/reward"]
  # abs 1e-6: at the sampling parameters the policy-gradient loss is a mean of advantages that
  # cancels to ~1e-7 (whitened for PPO), all of it rounding.
  for key in ("policy/pg_loss", "policy/kl", "policy/grad_norm", "policy/entropy",
              "policy/loss"):
    assert two_metrics[key] == pytest.approx(one_metrics[key], rel=1e-4, abs=1e-6), key
  if method == "prime":
    for key in ("prm/loss", "prm/grad_norm", "process/return_mean"):
      assert key in one_metrics, key
      assert two_metrics[key] == pytest.approx(one_metrics[key], rel=1e-4, abs=1e-6), key
  pairs = [(one.policy.params, two.policy.params)]
  if method == "prime":
    pairs.append((one.prm.params, two.prm.params))
  if method == "ppo":
    pairs.append((one.value.params, two.value.params))
  # AdamW's first step moves a weight by about lr * g / (|g| + eps): where a gradient is near
  # eps after cancellation, a float-rounding difference moves it by a few % of the learning rate
  # (1e-4, PRM 2e-4 here; seen: 1.5e-6). A row read twice or dropped moves it by ~lr.
  for one_params, two_params in pairs:
    for a, b in zip(jax.tree_util.tree_leaves(one_params), jax.tree_util.tree_leaves(two_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)


def test_negative_update_lanes_are_a_config_error(tmp_path):
  from prl_jax.run.context import build_context
  from tests.test_train_loop import tiny_config
  with pytest.raises(ConfigError, match="train.update_lanes"):
    build_context(tiny_config("grpo", **{"train.update_lanes": -1}), str(tmp_path))
