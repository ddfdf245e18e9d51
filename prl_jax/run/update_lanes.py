"""An update whose gradients run in lanes: each mini-batch's rows as `lanes` shares, whose
gradients are taken at once on host threads (`prl_jax.host_lanes`), summed, then one jitted
optimizer step.

The math is `updates.epoch_updates`': the same permutation per epoch, the same mini-batches and
the same sums of numerator gradients, numerators, denominators and metric sums (a lane's sum over
its micro-batches, then the sum over lanes), so only the order of the float additions differs
(tests/test_update_lanes.py). Each lane runs ceil(M / lanes) micro-batches for the run's M, so
the rows in one forward and backward never exceed the run's micro-batch: with M = 1 the two
lanes' halves together hold what the one micro-batch held.

Why: on a CPU, one update program in flight keeps about 1.9 of 2 cores busy; two half-batch
gradients on two threads fill the rest (the mini preset's GRPO and PRIME policy updates in
0.96x and 0.87x the time, docs/benchmarks.md, "Update lanes"). The cost is a few host round
trips per optimizer step, so with one lane the update stays the single jitted program of
`epoch_updates`.
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


def lane_split(rows: int, num_micro: int, block: int, lanes: int) -> tuple[int, int]:
  """(lanes, micro-batches per lane) for a mini-batch of `rows`: every lane's micro-batches hold
  the same number of rows, in whole `block`-row groups; one lane of `num_micro` micro-batches when
  the rows do not split so (or `lanes` is 1)."""
  per_lane = -(-num_micro // lanes)
  if lanes == 1 or rows % (lanes * per_lane * block):
    return 1, num_micro
  return lanes, per_lane


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
  plain_loss = updates.without_rows(loss_fn)

  @functools.partial(jax.jit, static_argnums=(3,))
  def shares(batch, key, epoch, lanes):
    """[mini-batches, lanes, rows, ...]: epoch `epoch`'s mini-batches (epoch_updates' order),
    each split into `lanes` shares of whole groups."""
    if num_epochs > 1 or num_minibatches > 1:
      rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
      order = updates.group_permutation(jax.random.fold_in(key, epoch), rows, block)
      batch = jax.tree_util.tree_map(lambda x: x[order], batch)
    minibatches = updates.split_rows(batch, num_minibatches, block)
    return jax.vmap(lambda mb: updates.split_rows(mb, lanes, block))(minibatches)

  @functools.partial(jax.jit, static_argnums=(4,))
  def lane_sums(params, parts, minibatch, lane, per_lane):
    """Sums over the lane's micro-batches: (grad num, num, den, metric sums)."""
    part = jax.tree_util.tree_map(lambda x: x[minibatch, lane], parts)
    return updates.accumulate_gradients_and_rows(plain_loss, params, part, per_lane, block)[:4]

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, lane_outputs):
    grads, num, den, metric_sums = jax.tree_util.tree_map(lambda *x: sum(x), *lane_outputs)
    return updates.apply_gradient_sums(state, tx, grads, num, den, metric_sums)

  def update(state: ModelState, batch, key: jax.Array):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0] // num_minibatches
    count, per_lane = lane_split(rows, num_micro, block, lanes)
    if count == 1:
      return whole(state, batch=batch, key=key)
    step_metrics = []
    for epoch in range(num_epochs):
      parts = shares(batch, key, epoch, count)
      for k in range(num_minibatches):
        params = state.params
        outputs = in_lanes(lambda lane: lane_sums(params, parts, k, lane, per_lane), count)
        state, metrics = step(state, outputs)
        step_metrics.append(metrics)
    if len(step_metrics) == 1:
      return state, step_metrics[0]
    return state, jax.tree_util.tree_map(lambda *m: jnp.mean(jnp.stack(m)), *step_metrics)

  return update
