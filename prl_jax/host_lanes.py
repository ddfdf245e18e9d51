"""Lanes: a computation run as several programs at once, each on its own host thread.

On the CPU backend one XLA program in flight does not keep both cores of a small machine busy: a
decode step is a chain of small kernels (about 1.5 of 2 cores busy), and an update's forward and
backward leave gaps between their large kernels too. A second program dispatched from another
host thread fills them. Two programs dispatched from one thread, or two halves inside one
program, run in turn on the CPU runtime and gain nothing. Measured: docs/benchmarks.md, "Sampler
lanes" and "Update lanes".

`resolve_lanes` is the one rule for how many lanes a run uses (the sampler's `rollout.lanes`, the
update's and the log-prob passes' `train.update_lanes`); `in_lanes` runs the lanes;
`rows_in_lanes` runs a jitted row-wise function as lanes of row shares.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp

T = TypeVar("T")


def resolve_lanes(lanes: int, mesh: jax.sharding.Mesh | None = None) -> int:
  """Programs run at once: `lanes` when positive; 0 (auto) is 2 on a CPU backend without a
  multi-device mesh, else 1.

  Why 2 on a CPU and 1 elsewhere: see the module docstring. One accelerator runs one program at a
  time, and a mesh already spreads a computation over its devices.
  """
  if lanes < 0:
    raise ValueError(f"lanes must be >= 0 (0: auto), got {lanes}.")
  if lanes:
    return lanes
  single = mesh is None or mesh.size == 1
  return 2 if single and jax.default_backend() == "cpu" else 1


def in_lanes(fn: Callable[[int], T], lanes: int) -> list[T]:
  """[fn(0), ..., fn(lanes - 1)], each called on its own host thread (one lane: in this one)."""
  if lanes == 1:
    return [fn(0)]
  with concurrent.futures.ThreadPoolExecutor(lanes) as pool:
    return list(pool.map(fn, range(lanes)))


def rows_in_lanes(fn: Callable[[Any, Any], Any], lanes: int, block: int = 1):
  """jit(fn) for a row-wise fn(params, batch) -> a tree of [B, ...] (every leaf of `batch` is
  [B, ...] too), run as `lanes` contiguous shares of the rows in whole `block`-row groups at once
  (`in_lanes`), their outputs concatenated; in one piece when the rows do not split so.

  Row-wise: row i of the output depends on row i of the batch alone, so the shares give the
  whole batch's result (up to the rounding of a smaller matmul).
  """
  whole = jax.jit(fn)
  if lanes == 1:
    return whole

  @functools.partial(jax.jit, static_argnums=(3,))
  def share(params, batch, lane, count):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0] // count
    part = jax.tree_util.tree_map(
        lambda x: jax.lax.dynamic_slice_in_dim(x, lane * rows, rows), batch)
    return fn(params, part)

  concatenate = jax.jit(lambda parts: jax.tree_util.tree_map(lambda *x: jnp.concatenate(x),
                                                              *parts))

  def run(params, batch):
    if jax.tree_util.tree_leaves(batch)[0].shape[0] % (lanes * block):
      return whole(params, batch)
    return concatenate(in_lanes(lambda lane: share(params, batch, lane, lanes), lanes))

  return run
