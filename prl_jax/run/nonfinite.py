"""The non-finite guard: a step whose loss or gradient norm is NaN or inf stops the run, or is
skipped.

Such a step has already written NaNs (or will, through Adam's moments) into the parameters, and
saving that state would make the newest checkpoint, the one a restart resumes from, useless. The
loops look at the scalar metrics they fetch to the host every step anyway, so the guard costs no
device time: by default they write the step's metrics row (for diagnosis) and raise
`NonFiniteError` before saving, so the last good checkpoint stays the latest. With
`train.skip_nonfinite=true` the update is dropped instead (the state before the step is kept,
the data position still advances) and the running count is logged as `train/skipped_updates`
(`sft/skipped_updates` in SFT). The update functions donate their input state, so RL keeps a
device copy of the state during each step to go back to (twice the state memory), while SFT's
single update selects old or new state inside its jitted step (`all_finite`).

Guarded metrics are those named `loss` or `grad_norm` (after the last "/"): every optimizer
update reports both (prl_jax.run.updates.minibatch_updates).
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

GUARDED = ("loss", "grad_norm")


class NonFiniteError(FloatingPointError):
  """A training step produced a NaN or inf loss or gradient norm; the message names it."""


def is_guarded(name: str) -> bool:
  """Whether the metric `name` ("policy/loss", "grad_norm", ...) is a loss or gradient norm."""
  return name.rsplit("/", 1)[-1] in GUARDED


def nonfinite(metrics: Mapping[str, float]) -> dict[str, float]:
  """The guarded host-side metrics whose value is NaN or inf, in the order given."""
  return {k: v for k, v in metrics.items() if is_guarded(k) and not math.isfinite(v)}


def all_finite(metrics: Mapping[str, jax.Array]) -> jax.Array:
  """Device-side twin of `not nonfinite(metrics)`: a scalar bool, for use inside a jitted step."""
  checks = [jnp.all(jnp.isfinite(v)) for k, v in metrics.items() if is_guarded(k)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def error_message(step: int, bad: Mapping[str, float], workdir: str) -> str:
  """"step 7: policy/loss is nan, policy/grad_norm is nan" and what happens next."""
  losses_first = sorted(bad.items(), key=lambda kv: GUARDED.index(kv[0].rsplit("/", 1)[-1]))
  found = ", ".join(f"{k} is {v}" for k, v in losses_first)
  return (f"step {step}: {found}. Stopped before saving this step: the newest checkpoint in "
          f"{workdir}/checkpoints is the last good state. Resume from it with "
          "--config.train.skip_nonfinite=true to skip such updates, or with a change to what "
          "diverged (e.g. a lower learning rate, which needs "
          "--config.checkpoint.allow_changes=KEY).")
