"""Prompt-level rollout filters (docs/algorithms.md: Shared pieces).

Both return a [P] keep mask over the P groups of a contiguous batch of B = P * n responses. The
host loop drops the rejected groups and refills the batch from further prompts.
"""

from __future__ import annotations


import chex
import jax.numpy as jnp
import numpy as np

from prl_jax.algorithms.advantages import group_view
from prl_jax.ops.checks import shape_errors as _shape_errors


def accuracy_filter(outcome: chex.Array, group_size: int, lo: float, hi: float) -> chex.Array:
  """Keeps a prompt iff lo <= mean_g(r_o) <= hi (docs/algorithms.md: Shared pieces; PRIME section 3: [0.2, 0.8]).

  Groups that are all right or all wrong carry no group-relative signal, so they are dropped.
  The band is inclusive at both ends.

  Args:
    outcome: [B] outcome rewards.
    group_size: responses per prompt n.
    lo: lower bound of the band.
    hi: upper bound, >= lo.

  Returns:
    [P] bool keep mask.
  """
  with _shape_errors("accuracy_filter"):
    chex.assert_rank(outcome, 1)
  if not np.isfinite(lo) or not np.isfinite(hi) or lo > hi:
    raise ValueError(f"accuracy_filter: need finite lo <= hi, got lo={lo}, hi={hi}")
  mean = jnp.mean(group_view(jnp.asarray(outcome, jnp.float32), group_size, "accuracy_filter"),
                  axis=1)
  return (mean >= lo) & (mean <= hi)


def truncation_filter(truncated: chex.Array, group_size: int) -> chex.Array:
  """Keeps a prompt iff none of its responses hit the length limit (docs/algorithms.md: Shared pieces).

  A truncated response has no verified outcome, and keeping its siblings alone would bias the
  group baseline, so the whole group goes.

  Args:
    truncated: [B] bool (or 0/1), True where a response was cut at the length limit.
    group_size: responses per prompt n.

  Returns:
    [P] bool keep mask.
  """
  with _shape_errors("truncation_filter"):
    chex.assert_rank(truncated, 1)
  cut = group_view(jnp.asarray(truncated) != 0, group_size, "truncation_filter")
  return ~jnp.any(cut, axis=1)
