"""The learning-rate schedule advances once per RL step, however many optimizer updates a step
makes (epochs x mini-batches): warm-up and decay lengths are RL steps, as in verl."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prl_jax.run.state import adamw


def _applied_rates(tx, updates):
  """The rate of each update: with a constant gradient Adam's bias-corrected step m/sqrt(v) is
  exactly 1 (up to eps), so each update's size is its learning rate."""
  params = jnp.zeros(())
  state = tx.init(params)
  rates = []
  for _ in range(updates):
    step, state = tx.update(jnp.ones(()), state, params)
    rates.append(-float(step))
  return np.asarray(rates)


@pytest.mark.parametrize("per_step", [1, 3])
def test_schedule_counts_rl_steps(per_step):
  steps, lr = 5, 0.5
  tx = adamw(lr, grad_clip=0.0, schedule="linear", total_steps=steps, updates_per_step=per_step)
  rates = _applied_rates(tx, steps * per_step)
  want = [lr * (1 - (u // per_step) / steps) for u in range(steps * per_step)]
  np.testing.assert_allclose(rates, want, rtol=1e-4)  # float32 m / sqrt(v)
  assert rates[-1] > 0  # the last RL step still trains


def test_warmup_counts_rl_steps():
  tx = adamw(1.0, grad_clip=0.0, schedule="constant", warmup_steps=2, total_steps=10,
             updates_per_step=4)
  rates = _applied_rates(tx, 12)
  np.testing.assert_allclose(rates, [0.0] * 4 + [0.5] * 4 + [1.0] * 4, rtol=1e-4, atol=1e-7)


def test_rejects_a_step_without_updates():
  with pytest.raises(ValueError, match="updates_per_step"):
    adamw(1.0, grad_clip=1.0, updates_per_step=0)


def test_the_last_rl_step_of_a_decaying_schedule_moves_the_policy(tmp_path):
  """2 RL steps of 2 epochs x 2 mini-batches, linear decay to 0 at the end: the second step
  trains at half the rate. (Counting updates, the schedule reached 0 after the first step's
  second update, and step 2 left the policy as it was.)"""
  import os

  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.run.checkpoint import Checkpointer
  from prl_jax.run.context import build_context
  from prl_jax.run.state import init_state
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  config = tiny_config("grpo", **{"train.steps": 2, "train.ppo_epochs": 2,
                                  "optim.schedule": "linear", "checkpoint.every": 1,
                                  "algo.loss.entropy_coef": 0.01})  # a gradient without rewards
  assert config.rollout.prompts_per_step * config.rollout.n // config.train.mini_batch_size == 2
  workdir = str(tmp_path / "run")
  train(config, workdir)
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    first, second = (ckpt.restore(target, step=s)[0] for s in (1, 2))
  moved = jax.tree_util.tree_reduce(max, jax.tree_util.tree_map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), first.policy.params, second.policy.params))
  assert moved > 1e-6
  count = [x.count for x in jax.tree_util.tree_leaves(
      second.policy.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
      if isinstance(x, optax.ScaleByScheduleState)]
  assert int(count[0]) == 2 * 2 * 2  # steps x epochs x mini-batches
