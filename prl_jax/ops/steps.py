"""Step segmentation of responses and segment ops over steps (docs/algorithms.md: Shared pieces).

A step is a run of valid tokens closed by a step end. Every method that scores steps rather than
tokens (PRIME's step granularity, PRL's fixed-length or newline steps, ER-PRM's tagged steps)
goes through `step_end_mask` and the segment ops here.

Conventions: arrays are [B, T] with time last; `mask` is 1/True on valid response tokens; only
valid tokens can be step ends and the last valid token always is one. Segment ops read and
write valid tokens only; padding comes back as 0 (or -1 for indices). They are single scans
along time, never Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.ops.returns import check_mask_like, linear_recurrence
from prl_jax.ops.checks import shape_errors as _shape_errors

STEP_MODES = ("token", "whole", "fixed", "delimiter")


def _valid(mask: chex.Array) -> chex.Array:
  return jnp.asarray(mask) != 0


def last_token_mask(mask: chex.Array) -> chex.Array:
  """True at the last valid token of each row: index L_b - 1 when right-padded (docs/algorithms.md: Shared pieces).

      last[b, t] = mask[b, t] and sum_{j >= t} mask[b, j] == 1

  A row without valid tokens has no last token.

  Args:
    mask: [B, T] response mask.

  Returns:
    [B, T] bool.
  """
  with _shape_errors("last_token_mask"):
    chex.assert_rank(mask, 2)
  valid = _valid(mask)
  suffix = jnp.flip(jnp.cumsum(jnp.flip(valid.astype(jnp.int32), -1), axis=-1), -1)
  return valid & (suffix == 1)


def step_end_mask(mask: chex.Array, mode: str, *, length: int | None = None,
                  delimiter_ids: Sequence[int] | None = None,
                  token_ids: chex.Array | None = None) -> chex.Array:
  """Marks the last token of every step (docs/algorithms.md: Shared pieces).

  Modes:
    "token":     every valid token is a step (PRIME's default, FRPO);
    "whole":     the response is one step;
    "fixed":     step ends at positions with (t + 1) % length == 0 (PRL's step_len);
    "delimiter": a token whose id is in `delimiter_ids` closes a step (e.g. "\\n", "\\n\\n" or a
                 step tag); needs `token_ids`.
  In every mode the result is restricted to valid tokens and the last valid token is added.

  Args:
    mask: [B, T] response mask.
    mode: one of STEP_MODES.
    length: step length for "fixed", a positive int.
    delimiter_ids: ids that end a step, for "delimiter".
    token_ids: [B, T] response token ids, for "delimiter".

  Returns:
    [B, T] step-end mask with the dtype of `mask`.
  """
  with _shape_errors("step_end_mask"):
    chex.assert_rank(mask, 2)
  valid = _valid(mask)
  t = mask.shape[-1]
  if mode == "token":
    ends = valid
  elif mode == "whole":
    ends = jnp.zeros_like(valid)
  elif mode == "fixed":
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
      raise ValueError(f"step_end_mask: mode 'fixed' needs an int length >= 1, got {length!r}")
    closes = (jnp.arange(1, t + 1) % int(length)) == 0
    ends = valid & closes[None, :]
  elif mode == "delimiter":
    if token_ids is None:
      raise ValueError("step_end_mask: mode 'delimiter' needs token_ids ([B, T] response ids)")
    if delimiter_ids is None or np.size(delimiter_ids) == 0:
      raise ValueError("step_end_mask: mode 'delimiter' needs a non-empty delimiter_ids")
    with _shape_errors("step_end_mask"):
      chex.assert_rank(token_ids, 2)
    check_mask_like("step_end_mask", mask, token_ids=token_ids)
    ids = jnp.asarray(np.asarray(delimiter_ids).reshape(-1), jnp.asarray(token_ids).dtype)
    ends = valid & jnp.any(jnp.asarray(token_ids)[..., None] == ids, axis=-1)
  else:
    raise ValueError(f"step_end_mask: unknown mode {mode!r}; expected one of {STEP_MODES}")
  ends = ends | last_token_mask(mask)
  return ends.astype(jnp.asarray(mask).dtype)


def next_marked_index(marked: chex.Array) -> chex.Array:
  """Index of the first marked position at or after t, or T when there is none.

      idx_t = min{u >= t : marked_u}

  A reverse cumulative minimum: exact, and it compiles to one reduce-window, not a loop.

  Args:
    marked: [..., T] bool.

  Returns:
    [..., T] int32.
  """
  t = marked.shape[-1]
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), marked.shape)
  return jax.lax.cummin(jnp.where(marked, positions, t), axis=marked.ndim - 1, reverse=True)


def _valid_ends(step_end: chex.Array, mask: chex.Array) -> chex.Array:
  return (jnp.asarray(step_end) != 0) & _valid(mask)


def step_ids(step_end: chex.Array, mask: chex.Array) -> chex.Array:
  """Index of the step each valid token belongs to, step_id of docs/algorithms.md: Shared pieces.

      id_t = number of step ends strictly before t

  Args:
    step_end: [B, T] step-end mask.
    mask: [B, T] response mask.

  Returns:
    [B, T] int32, -1 on padding.
  """
  with _shape_errors("step_ids"):
    chex.assert_rank([step_end, mask], 2)
  check_mask_like("step_ids", mask, step_end=step_end)
  ends = _valid_ends(step_end, mask).astype(jnp.int32)
  before = jnp.cumsum(ends, axis=-1) - ends
  return jnp.where(_valid(mask), before, -1)


def step_sum(x: chex.Array, step_end: chex.Array, mask: chex.Array) -> chex.Array:
  """Sum of a token quantity over each step, placed at the step's last token (section 1.4).

      out_e = sum_{t in step(e)} x_t  at each step end e,  0 elsewhere

  A segmented forward scan (the running sum restarts after every step end) rather than a
  difference of cumsums, so long responses lose no precision to cancellation. Valid tokens after
  the last step end (possible only with a hand-made `step_end`) belong to no step and are dropped.

  Args:
    x: [B, T] token quantity (e.g. PRIME's q_t).
    step_end: [B, T] step-end mask.
    mask: [B, T] response mask.

  Returns:
    [B, T] float32.
  """
  with _shape_errors("step_sum"):
    chex.assert_rank([x, step_end, mask], 2)
  check_mask_like("step_sum", mask, x=x, step_end=step_end)
  valid = _valid(mask)
  ends = _valid_ends(step_end, mask)
  xm = jnp.where(valid, jnp.asarray(x, jnp.float32), 0.0)
  # The carry into t survives unless t - 1 closed a step.
  ended_before = jnp.pad(ends[:, :-1], ((0, 0), (1, 0)))
  running = linear_recurrence(jnp.where(ended_before, 0.0, 1.0), xm)
  return jnp.where(ends, running, 0.0)


def fill_from_step_end(x: chex.Array, step_end: chex.Array, mask: chex.Array,
                       skip_zeros: bool = False) -> chex.Array:
  """Broadcast of each step's end value to every token of the step (section 1.4).

      out_t = x_{e(t)},  e(t) = the first step end at or after t

  skip_zeros=True reproduces the PRL code's "left fill by next non-zero" (docs/algorithms.md: PRL):
  a step end whose value is exactly 0 does not count as an end, so its tokens take the next
  non-zero step-end value to the right, and 0 when there is none. Only values at step ends are
  read; x elsewhere is ignored. A valid token with no (counted) step end at or after it gets 0.
  The next end is found by a reverse cumulative minimum over positions and read with a gather,
  so the copy is exact.

  Args:
    x: [B, T] values, meaningful at step ends.
    step_end: [B, T] step-end mask.
    mask: [B, T] response mask.
    skip_zeros: reproduce the zero-skipping of the PRL code.

  Returns:
    [B, T] float32, zero on padding.
  """
  with _shape_errors("fill_from_step_end"):
    chex.assert_rank([x, step_end, mask], 2)
  check_mask_like("fill_from_step_end", mask, x=x, step_end=step_end)
  x = jnp.asarray(x, jnp.float32)
  ends = _valid_ends(step_end, mask)
  if skip_zeros:
    ends = ends & (x != 0)
  at = next_marked_index(ends)
  found = at < x.shape[-1]
  filled = jnp.take_along_axis(x, jnp.minimum(at, x.shape[-1] - 1), axis=-1)
  return jnp.where(_valid(mask) & found, filled, 0.0)


def gather_step_ends(x: chex.Array, step_end: chex.Array, mask: chex.Array,
                     max_steps: int) -> tuple[chex.Array, chex.Array]:
  """Packs the step-end values of each row into a dense [B, max_steps] array (section 1.4).

      values[b, k] = x[b, e_k],  e_k = the k-th step end of row b

  Used to aggregate step scores (min / product / last / mean for best-of-N). Steps beyond
  `max_steps` are dropped; `valid` marks the filled slots.

  Args:
    x: [B, T] values.
    step_end: [B, T] step-end mask.
    mask: [B, T] response mask.
    max_steps: static number of slots per row.

  Returns:
    (values [B, max_steps] float32, valid [B, max_steps] bool).
  """
  with _shape_errors("gather_step_ends"):
    chex.assert_rank([x, step_end, mask], 2)
  check_mask_like("gather_step_ends", mask, x=x, step_end=step_end)
  if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
    raise ValueError(f"gather_step_ends: max_steps must be an int >= 1, got {max_steps!r}")
  ends = _valid_ends(step_end, mask)
  slot = jnp.where(ends, jnp.cumsum(ends.astype(jnp.int32), axis=-1) - 1, max_steps)
  rows = jnp.broadcast_to(jnp.arange(x.shape[0])[:, None], x.shape)
  values = jnp.zeros((x.shape[0], max_steps), jnp.float32)
  values = values.at[rows, slot].set(jnp.asarray(x, jnp.float32), mode="drop")
  count = jnp.sum(ends.astype(jnp.int32), axis=-1, keepdims=True)
  return values, jnp.arange(max_steps)[None, :] < count
