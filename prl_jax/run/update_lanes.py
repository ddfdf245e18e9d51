"""Updates whose gradients run in lanes: each mini-batch's rows as `lanes` shares, whose
gradients are taken at once on host threads (`prl_jax.host_lanes`), summed, then one jitted
optimizer step.

The math is `prl_jax.run.updates`': the same permutation per epoch, the same mini-batches and the
same sums of numerator gradients, numerators, denominators and metric sums (a lane's sum over
its micro-batches, then the sum over lanes), so only the order of the float additions differs
(tests/test_update_lanes.py). Each lane runs ceil(M / lanes) micro-batches for the run's M, so
the rows in one forward and backward never exceed the run's micro-batch; the lanes run at once,
so with M >= 2 a CPU holds up to `lanes` micro-batches' activations at a time (with M = 1 the
two lanes' halves together hold what the one micro-batch held).

Why: on a CPU, one update program in flight keeps about 1.9 of 2 cores busy; two half-batch
gradients on two threads fill some of the rest (the mini preset's GRPO policy update in 0.95x
its time, PRIME's PRM update in 0.92x; docs/benchmarks.md, "Update lanes"). The cost is a few
host round trips per optimizer step, so with one lane an update stays the single jitted program
of `prl_jax.run.updates`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from prl_jax.host_lanes import in_lanes
from prl_jax.run import updates
from prl_jax.run.state import ModelState

UpdateFn = Callable[[ModelState, Any, jax.Array], tuple[ModelState, dict]]
RowsUpdateFn = Callable[[ModelState, Any], tuple[ModelState, dict, Any]]


def lane_split(rows: int, num_micro: int, block: int, lanes: int) -> tuple[int, int]:
  """(lanes, micro-batches per lane) for a mini-batch of `rows`: every lane's micro-batches hold
  the same number of rows, in whole `block`-row groups; one lane of `num_micro` micro-batches when
  the rows do not split so (or `lanes` is 1)."""
  per_lane = -(-num_micro // lanes)
  if lanes == 1 or rows % (lanes * per_lane * block):
    return 1, num_micro
  return lanes, per_lane


def _lane_steps(tx: optax.GradientTransformation, loss_fn: updates.RowsLossFn, num_minibatches: int,
                num_micro: int, block: int, lanes: int):
  """(lanes_for, steps): lanes_for(batch) -> (lanes, micro-batches per lane) of its mini-batches
  (`lane_split`); steps(state, batch, count, per_lane) -> (state, [metrics of each step],
  per-row output or None): one optimizer step per mini-batch of `batch` (`split_rows` with
  `block`) in order, each mini-batch's gradient in `count` lanes."""

  @functools.partial(jax.jit, static_argnums=(1,))
  def shares(batch, count):
    """[mini-batches, lanes, rows, ...]: each mini-batch split into shares of whole groups."""
    minibatches = updates.split_rows(batch, num_minibatches, block)
    return jax.vmap(lambda mb: updates.split_rows(mb, count, block))(minibatches)

  @functools.partial(jax.jit, static_argnums=(4,))
  def lane_sums(params, parts, minibatch, lane, per_lane):
    """Sums over the lane's micro-batches (grad num, num, den, metric sums) and its rows."""
    part = jax.tree_util.tree_map(lambda x: x[minibatch, lane], parts)
    return updates.accumulate_gradients_and_rows(loss_fn, params, part, per_lane, block)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, lane_sums_):
    grads, num, den, metric_sums = jax.tree_util.tree_map(lambda *x: sum(x), *lane_sums_)
    return updates.apply_gradient_sums(state, tx, grads, num, den, metric_sums)

  @jax.jit
  def merge(rows):
    """rows[k][lane] -> the rows of the batch, in its order (the inverse of `shares`)."""
    stack = lambda trees: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)
    minibatches = [updates.merge_rows(stack(lane_rows), block) for lane_rows in rows]
    return updates.merge_rows(stack(minibatches), block)

  def lanes_for(batch):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0] // num_minibatches
    return lane_split(rows, num_micro, block, lanes)

  def steps(state: ModelState, batch, count: int, per_lane: int):
    parts = shares(batch, count)
    metrics, out = [], []
    for k in range(num_minibatches):
      params = state.params
      sums = in_lanes(lambda lane: lane_sums(params, parts, k, lane, per_lane), count)
      state, step_metrics = step(state, [s[:4] for s in sums])
      metrics.append(step_metrics)
      out.append([s[4] for s in sums])
    has_rows = jax.tree_util.tree_leaves(out)
    return state, metrics, merge(out) if has_rows else None

  return lanes_for, steps


def _mean(metrics: list[dict]) -> dict:
  if len(metrics) == 1:
    return metrics[0]
  return jax.tree_util.tree_map(lambda *m: jnp.mean(jnp.stack(m)), *metrics)


def epoch_update_fn(tx: optax.GradientTransformation, loss_fn: updates.LossFn, *, num_epochs: int,
                    num_minibatches: int, num_micro: int, block: int = 1,
                    lanes: int = 1) -> UpdateFn:
  """(state, batch, key) -> (new state, mean metrics): `updates.epoch_updates` with these
  arguments, its mini-batches' gradients in `lanes` lanes (`lane_split`). The state is donated."""
  if num_epochs < 1:
    raise ValueError(f"train.ppo_epochs must be >= 1, got {num_epochs}.")
  whole = jax.jit(functools.partial(
      updates.epoch_updates, tx=tx, loss_fn=loss_fn, num_epochs=num_epochs,
      num_minibatches=num_minibatches, num_micro=num_micro, block=block), donate_argnums=0)
  lanes_for, steps = _lane_steps(tx, updates.without_rows(loss_fn), num_minibatches, num_micro,
                                 block, lanes)
  shuffle = num_epochs > 1 or num_minibatches > 1  # as epoch_updates: one step needs no order

  @jax.jit
  def shuffled(batch, key, epoch):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
    order = updates.group_permutation(jax.random.fold_in(key, epoch), rows, block)
    return jax.tree_util.tree_map(lambda x: x[order], batch)

  def update(state: ModelState, batch, key: jax.Array):
    count, per_lane = lanes_for(batch)
    if count == 1:  # the mini-batches do not split into lanes
      return whole(state, batch=batch, key=key)
    all_metrics = []
    for epoch in range(num_epochs):
      state, metrics, _ = steps(state, shuffled(batch, key, epoch) if shuffle else batch, count,
                                per_lane)
      all_metrics += metrics
    return state, _mean(all_metrics)

  return update


def minibatch_update_fn(tx: optax.GradientTransformation, loss_fn: updates.RowsLossFn, *,
                        num_minibatches: int, num_micro: int, block: int = 1,
                        lanes: int = 1) -> RowsUpdateFn:
  """(state, batch) -> (new state, mean metrics, per-row output):
  `updates.minibatch_updates_with_rows` with these arguments, its mini-batches' gradients in
  `lanes` lanes (`lane_split`). The state is donated."""
  whole = jax.jit(functools.partial(
      updates.minibatch_updates_with_rows, tx=tx, loss_fn=loss_fn,
      num_minibatches=num_minibatches, num_micro=num_micro, block=block), donate_argnums=0)
  lanes_for, steps = _lane_steps(tx, loss_fn, num_minibatches, num_micro, block, lanes)

  def update(state: ModelState, batch):
    count, per_lane = lanes_for(batch)
    if count == 1:  # the mini-batches do not split into lanes
      return whole(state, batch=batch)
    state, metrics, rows = steps(state, batch, count, per_lane)
    return state, _mean(metrics), rows

  return update
