"""Generic update machinery every job shares: strided row splits, micro-batch gradient accumulation,
mini-batch and epoch updates.

Every loss returns (numerator, (denominator, metric sums)); a mini-batch's gradient is
sum_micro grad(numerator) / sum_micro denominator. Splitting a batch into micro-batches therefore
changes nothing but memory: the same rule as verl's `agg_loss` and Tunix's GRPO loss. A
`RowsLossFn` also returns a per-row output of its forward, which the update hands back.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from prl_jax.run.state import ModelState

LossFn = Callable[[Any, Any], tuple[jax.Array, tuple[jax.Array, dict]]]
# A loss that also returns a per-row output of its forward, [rows, ...] (e.g. the log-probs it
# was computed from): (params, batch) -> (numerator, (denominator, metric sums, per-row output)).
RowsLossFn = Callable[[Any, Any], tuple[jax.Array, tuple[jax.Array, dict, Any]]]


def split_rows(tree, num_chunks: int, block: int = 1):
  """[B, ...] leaves -> [num_chunks, B/num_chunks, ...], chunk j holding the blocks j, j+k, j+2k,
  ... of `block` consecutive rows (block 1: rows j, j+k, ...).

  Strided, not contiguous, because batches are sharded over devices by contiguous row blocks:
  a strided chunk takes B/(k R) rows from each of the R blocks, so every chunk stays spread
  over all devices and a scan over chunks needs no communication. (A contiguous chunk would sit
  on R/k devices; XLA then gathers it and every device computes the whole chunk.) A `block` of
  the group size keeps every group of responses whole inside one chunk.
  """
  def split(x):
    if x.shape[0] % (num_chunks * block):
      raise ValueError(f"Batch of {x.shape[0]} rows does not split into {num_chunks} chunks"
                       f"{f' of whole {block}-row groups' if block > 1 else ''}; make "
                       "train.mini_batch_size / micro_batch_size divide the batch.")
    blocks = x.reshape(x.shape[0] // (num_chunks * block), num_chunks, block, *x.shape[1:])
    return blocks.swapaxes(0, 1).reshape(num_chunks, x.shape[0] // num_chunks, *x.shape[1:])
  return jax.tree_util.tree_map(split, tree)


def merge_rows(tree, block: int = 1):
  """The inverse of `split_rows`: [k, B/k, ...] -> [B, ...] in the original row order."""
  def merge(x):
    k, rows = x.shape[0], x.shape[1]
    blocks = x.reshape(k, rows // block, block, *x.shape[2:]).swapaxes(0, 1)
    return blocks.reshape(k * rows, *x.shape[2:])
  return jax.tree_util.tree_map(merge, tree)


def chunked_rows(fn: Callable[[Any], Any], batch, num_chunks: int, block: int = 1):
  """fn(batch) computed `num_chunks` row chunks (of whole `block`-row groups) at a time (memory
  of one chunk), same result."""
  if num_chunks == 1:
    return fn(batch)
  return merge_rows(jax.lax.map(fn, split_rows(batch, num_chunks, block)), block)


def without_rows(loss_fn: LossFn) -> RowsLossFn:
  """loss_fn with a None per-row output: (params, batch) -> (num, (den, metrics, None))."""
  def loss(params, batch):
    num, (den, metrics) = loss_fn(params, batch)
    return num, (den, metrics, None)
  return loss


def dropping_rows(loss_fn: RowsLossFn) -> LossFn:
  """A `RowsLossFn` as a plain `LossFn`: its per-row output dropped (XLA then never keeps it)."""
  def loss(params, batch):
    num, (den, metrics, _) = loss_fn(params, batch)
    return num, (den, metrics)
  return loss


def accumulate_gradients_and_rows(loss_fn: RowsLossFn, params, batch, num_micro: int,
                                  block: int = 1):
  """Sums over micro-batches m of grad num_m, num_m, den_m and metric sums, and the per-row
  outputs of the micro-batches merged back to the rows of `batch` (`merge_rows`).

  The per-row output is an auxiliary of the same forward that the gradient differentiates, so
  a caller that needs the model's output on these rows under these parameters reads it here
  instead of running a second forward. Micro-batches take whole `block`-row groups.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_micro == 1:
    (num, (den, metrics, rows)), grads = grad_fn(params, batch)
    return grads, num, den, metrics, rows

  def micro(carry, micro_batch):
    (num, (den, metrics, rows)), grads = grad_fn(params, micro_batch)
    return jax.tree_util.tree_map(jnp.add, carry, (grads, num, den, metrics)), rows

  micro_batches = split_rows(batch, num_micro, block)
  zero_metrics = jax.eval_shape(lambda: loss_fn(params, jax.tree_util.tree_map(
      lambda x: x[0], micro_batches))[1][1])
  init = (jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros(()), jnp.zeros(()),
          jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zero_metrics))
  (grads, num, den, metrics), rows = jax.lax.scan(micro, init, micro_batches)
  return grads, num, den, metrics, merge_rows(rows, block)


def accumulate_gradients(loss_fn: LossFn, params, batch, num_micro: int):
  """Sum of numerator gradients, numerators, denominators and metric sums over micro-batches."""
  return accumulate_gradients_and_rows(without_rows(loss_fn), params, batch, num_micro)[:4]


def _optimizer_step(state: ModelState, tx: optax.GradientTransformation, loss_fn: RowsLossFn,
                    minibatch, num_micro: int, block: int = 1):
  """One optimizer step on the mean loss of a mini-batch: (new state, metrics, the loss's
  per-row output under the parameters before the step). Micro-batches take whole `block`-row
  groups when their size allows (a loss that runs a group's prompt once is only given a `block`
  that does, `train.batch_split.prompt_group`); otherwise strided rows."""
  rows_per_micro = jax.tree_util.tree_leaves(minibatch)[0].shape[0] // num_micro
  micro_block = block if rows_per_micro % block == 0 else 1
  grads, num, den, metric_sums, rows = accumulate_gradients_and_rows(
      loss_fn, state.params, minibatch, num_micro, micro_block)
  state, metrics = apply_gradient_sums(state, tx, grads, num, den, metric_sums)
  return state, metrics, rows


def apply_gradient_sums(state: ModelState, tx: optax.GradientTransformation, grads, num, den,
                        metric_sums):
  """The optimizer step on the mean loss from its sums over a mini-batch's micro-batches:
  gradient sum_m grad num_m / sum_m den_m (den floored at 1e-8); returns (new state, metrics
  divided by that denominator, with the loss and the gradient and update norms)."""
  den = jnp.maximum(den, 1e-8)
  grads = jax.tree_util.tree_map(lambda g: g / den, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {k: v / den for k, v in metric_sums.items()}
  # How far the step moved the parameters: under Adam its size does not follow the gradient's
  # (a 1000x smaller gradient moves them as far), so grad_norm alone cannot say how large it was.
  metrics.update(loss=num / den, grad_norm=optax.global_norm(grads),
                 update_norm=optax.global_norm(updates))
  return ModelState(params=params, opt_state=opt_state), metrics


def minibatch_updates(state: ModelState, tx: optax.GradientTransformation, loss_fn: LossFn, batch,
                      num_minibatches: int, num_micro: int, block: int = 1):
  """One optimizer step per mini-batch (`split_rows` with `block`), in order; returns the new
  state and mean metrics."""
  state, metrics, _ = minibatch_updates_with_rows(state, tx, without_rows(loss_fn), batch,
                                                  num_minibatches, num_micro, block)
  return state, metrics


def minibatch_updates_with_rows(state: ModelState, tx: optax.GradientTransformation,
                                loss_fn: RowsLossFn, batch, num_minibatches: int, num_micro: int,
                                block: int = 1):
  """`minibatch_updates` with a `RowsLossFn`: also its per-row output, merged back to the rows
  of `batch`. Rows of mini-batch k are read by the parameters after k-1 updates, the ones its
  gradient is taken at (PRIME's single forward, from the update's own forward)."""

  def update(state, minibatch):
    state, metrics, rows = _optimizer_step(state, tx, loss_fn, minibatch, num_micro, block)
    return state, (metrics, rows)

  state, (metrics, rows) = jax.lax.scan(update, state, split_rows(batch, num_minibatches, block))
  return state, jax.tree_util.tree_map(jnp.mean, metrics), merge_rows(rows, block)


def scored_minibatch_updates(state: ModelState, tx: optax.GradientTransformation, loss_fn: LossFn,
                             batch, num_minibatches: int, num_micro: int, score_fn, scored,
                             block: int = 1):
  """`minibatch_updates`, and before step k, score_fn(params, chunk k of `scored`).

  Both `batch` and `scored` are split into `num_minibatches` chunks with `block`; chunk k of
  `scored` is read by the parameters after k-1 updates (PRIME's single forward). Returns the
  new state, mean metrics and the scores merged back to the rows of `scored`. When the scored
  rows are the batch's and the loss computes the scores, `minibatch_updates_with_rows` saves
  score_fn's forward.
  """
  loss_fn = without_rows(loss_fn)

  def update(state, chunks):
    minibatch, rows = chunks
    out = score_fn(state.params, rows)
    state, metrics, _ = _optimizer_step(state, tx, loss_fn, minibatch, num_micro, block)
    return state, (metrics, out)

  state, (metrics, out) = jax.lax.scan(
      update, state, (split_rows(batch, num_minibatches, block),
                      split_rows(scored, num_minibatches, block)))
  return state, jax.tree_util.tree_map(jnp.mean, metrics), merge_rows(out, block)


def group_permutation(key, rows: int, block: int = 1):
  """A random order of `rows` that moves whole groups of `block` consecutive rows, each group's
  rows kept consecutive and in order (block 1: `jax.random.permutation(key, rows)`)."""
  groups = jax.random.permutation(key, rows // block)
  return (groups[:, None] * block + jnp.arange(block)).reshape(-1)


def epoch_updates(state: ModelState, tx: optax.GradientTransformation, loss_fn: LossFn, batch, key,
                  num_epochs: int, num_minibatches: int, num_micro: int, block: int = 1):
  """PPO's update phase: `num_epochs` passes over the batch, each in `num_minibatches` steps.

  Rows are shuffled before every pass (a fresh permutation from `key` per epoch) so mini-batches
  differ between epochs; with one pass over one mini-batch the order cannot matter and the batch
  is used as is. With `block` > 1 whole groups of `block` consecutive rows are shuffled and
  every mini- and micro-batch holds whole groups (a loss that runs a group's prompt once needs
  them). Metrics are means over all optimizer steps.
  """
  if num_epochs < 1:
    raise ValueError(f"train.ppo_epochs must be >= 1, got {num_epochs}.")
  if num_epochs == 1 and num_minibatches == 1:
    return minibatch_updates(state, tx, loss_fn, batch, 1, num_micro, block)
  rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
  all_metrics = []
  for epoch in range(num_epochs):
    order = group_permutation(jax.random.fold_in(key, epoch), rows, block)
    shuffled = jax.tree_util.tree_map(lambda x: x[order], batch)
    state, metrics = minibatch_updates(state, tx, loss_fn, shuffled, num_minibatches, num_micro,
                                       block)
    all_metrics.append(metrics)
  return state, jax.tree_util.tree_map(lambda *m: jnp.mean(jnp.stack(m)), *all_metrics)
