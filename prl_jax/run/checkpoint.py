"""Checkpoints: Orbax `CheckpointManager` with two items per step, kept atomically.

Each step directory `<workdir>/<step>/` holds

- `state`: one pytree of `jax.Array`s (policy, PRM and value parameters, optimizer states, the step
  counter, RNG keys), written with `ocp.args.StandardSave` and read back with
  `ocp.args.StandardRestore(abstract_target)`, so every array lands directly in the sharding of the
  target: no host gather, and a checkpoint written on one mesh layout restores into another;
- `meta`: one JSON document (data-iterator position, the config as a dict, metrics, wall time).

Atomicity comes from Orbax: a step is written under `<step>.orbax-checkpoint-tmp` and renamed to
`<step>` only when every array and the JSON are on disk (on object stores, which cannot rename
atomically, Orbax writes a `commit_success.txt` marker instead). A process killed mid-save leaves
only a temporary directory, which `latest_step()` never returns and the next `Checkpointer` on the
same directory removes; the previous complete step is what a restart resumes from.

Retention keeps the last `keep` steps and, when `best_metric` is set, also the `keep_best` steps
with the best value of that metric, so auto-resume always finds the newest step even when it is not
the best one. (Orbax's own `max_to_keep` + `best_fn` keeps only the best N, which can delete the
newest step; that is why this module passes an explicit preservation policy.)

Typed PRNG keys (`jax.random.key`) are stored as their raw `jax.random.key_data` (uint32) so the
files are plain arrays readable by any tool; `restore` re-wraps them when the target leaf has a key
dtype. Targets built by `abstract_like` from a state holding typed keys get this for free.

A checkpoint that cannot be read raises `CheckpointError` naming the step directory and what to
do; nothing is ever deleted on the restore path. `restore_latest_good`, the resume path, falls
back instead: a newest step whose files are truncated or missing is renamed to `<step>.broken`
(kept for inspection, ignored by Orbax) with a warning, and the previous finished step is restored.
A save that fails (disk full, permission denied) raises `CheckpointError` naming the step, the
directory and the OS error; the step stays a temporary directory, so earlier steps are untouched.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

from prl_jax.run import paths
from prl_jax.run.checkpoint_tree import data_to_keys, keys_to_data, storage_target, to_json

logger = logging.getLogger(__name__)

STATE = "state"
META = "meta"


class CheckpointError(RuntimeError):
  """A checkpoint directory or step cannot be used; the message says what to fix."""


class CorruptCheckpointError(CheckpointError):
  """A finished step whose files cannot be read (truncated, deleted); an earlier step may be fine.

  Attributes:
    step: the unreadable step.
    reason: the file-level error, one line.
  """

  def __init__(self, message: str, step: int, reason: str):
    super().__init__(message)
    self.step, self.reason = step, reason


# ----------------------------------------------------------------------------------------------
# The checkpointer.


class Checkpointer:
  """Saves and restores (state pytree, JSON meta) per step under one directory.

  Args:
    directory: the checkpoint directory (local path or `gs://...`); created if missing.
    keep: how many of the newest steps to keep (None keeps all).
    best_metric: name of an entry of the `metrics` passed to `save`; when set, the `keep_best`
      steps with the best value are kept as well as the newest `keep`.
    best_mode: "max" or "min": which direction of `best_metric` is better.
    keep_best: how many best-by-metric steps to keep.
    save_interval_steps: `save` writes only at multiples of this, or when `force=True`, or for
      the first save into an empty directory, or at a JAX preemption sync point (Orbax's
      default policies).
    async_save: write in a background thread; `save` returns once arrays are copied off the
      devices. Call `wait()` (or `close()`) before relying on the files.
    read_only: only restore (e.g. evaluating a run that may still be training): nothing is
      created, saved or deleted, including the temporary directory of a save in progress.

  All processes of a multi-host job must call `save`/`restore` with the same step; each writes
  and reads its own shards and process 0 finalises.
  """

  def __init__(
      self,
      directory: str | os.PathLike,
      keep: int | None = 3,
      best_metric: str | None = None,
      best_mode: str = "max",
      save_interval_steps: int = 1,
      async_save: bool = False,
      keep_best: int = 1,
      read_only: bool = False,
  ):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
    if keep is not None and keep < 1:
      raise ValueError(
          f"keep must be >= 1 (or None to keep every step), got {keep}: the newest step "
          "is what a restarted run resumes from."
      )
    # Orbax wants absolute paths (a relative local path is taken from the working directory)
    # or a URL of its own (gs://); file:// URLs become local paths (prl_jax.run.paths).
    self.directory = epath.Path(paths.orbax_path(str(directory)))
    self.read_only = read_only
    self._write_failed = False
    self.best_metric = best_metric
    self.best_mode = best_mode
    best_fn = self._metric_fn() if best_metric else None
    policies = [ocm.LatestN(n=keep)]
    if best_fn is not None:
      policies.append(
          ocm.BestN(
              get_metric_fn=best_fn,
              reverse=(best_mode == "min"),  # BestN keeps the tail of an ascending sort.
              n=keep_best,
              keep_checkpoints_without_metrics=False,
          )
      )
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        best_fn=best_fn,  # Makes Orbax record metrics per step and answer best_step().
        best_mode=best_mode,
        enable_async_checkpointing=async_save,
        # Only `<step>.orbax-checkpoint-tmp` leftovers of killed saves; never a finished step.
        # A reader must not: the leftover may be a live run's save in progress.
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only,
    )
    try:
      self._manager = ocp.CheckpointManager(
          self.directory,
          options=options,
          item_handlers={
              STATE: ocp.StandardCheckpointHandler(),
              META: ocp.JsonCheckpointHandler(),
          },
      )
    except Exception as e:  # noqa: BLE001 - re-raised with the directory and a remedy.
      raise CheckpointError(
          f"Cannot open checkpoint directory {self.directory}: {_first_line(e)}. Check that "
          "the path is a writable directory (not a file) and that the step directories in it "
          "were written by prl_jax; move foreign or broken directories elsewhere."
      ) from e

  def _metric_fn(self) -> Callable[[Mapping[str, Any]], float]:
    """Metric extractor for ranking; a missing or NaN value ranks worst, never best."""
    worst = -math.inf if self.best_mode == "max" else math.inf
    name = self.best_metric

    def metric(metrics: Mapping[str, Any]) -> float:
      value = metrics.get(name) if isinstance(metrics, Mapping) else None
      if value is None:
        return worst
      value = float(value)
      return worst if math.isnan(value) else value

    return metric

  # -- queries --------------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Finished steps, ascending: those on disk when this object was made, plus its own saves
    (half-written steps of killed runs are never included)."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest finished step, or None for an empty directory."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """The step with the best `best_metric` (the latest step when no metric is configured)."""
    return self._manager.best_step()

  # -- save -----------------------------------------------------------------------------------

  def save(
      self,
      step: int,
      state: Any,
      meta: Mapping[str, Any] | None = None,
      metrics: Mapping[str, Any] | None = None,
      force: bool = False,
  ) -> bool:
    """Saves `state` and `meta` as `step`; returns whether a checkpoint was written.

    Skips (returns False) when `step` is off the save interval and `force` is False, and
    always when `step` is already on disk (a finished step is never overwritten).
    `metrics` are stored in the meta JSON under "metrics" and used for best-by-metric
    retention; "saved_at" (unix time) is added to the meta unless present.
    """
    step = int(step)
    if step in self._manager.all_steps():
      logger.warning("Step %d already saved in %s; not overwriting it.", step, self.directory)
      return False
    meta_json = to_json(dict(meta or {}))
    meta_json.setdefault("saved_at", time.time())
    metrics_json = to_json(dict(metrics), "metrics") if metrics is not None else None
    if metrics_json is not None:
      meta_json.setdefault("metrics", metrics_json)
    args = ocp.args.Composite(
        **{
            STATE: ocp.args.StandardSave(keys_to_data(state)),
            META: ocp.args.JsonSave(meta_json),
        }
    )
    # With a best metric configured, a step saved without metrics ranks worst ({}), which
    # spares Orbax's per-save warning about missing metrics.
    track = (metrics_json or {}) if self.best_metric else None
    self.wait()  # A failed background save is reported as that save, not as this one.
    try:
      return bool(self._manager.save(step, args=args, metrics=track, force=force))
    except Exception as e:  # noqa: BLE001 - OSError, or TensorStore's wrapping of one.
      raise self._write_error(f"Writing checkpoint step {step}", e) from None

  def wait(self) -> None:
    """Blocks until a background save (async_save=True) is finished on disk.

    Raises:
      CheckpointError: the background save failed (the message names the directory and why).
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - see save().
      raise self._write_error("A background checkpoint save", e) from None

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's threads."""
    if self._write_failed:
      # Orbax re-raises a failed background save on every wait; it was reported once already.
      try:
        self._manager.close()
      except Exception:  # noqa: BLE001
        logger.debug("Closing %s after a failed save", self.directory, exc_info=True)
      return
    self.wait()
    self._manager.close()

  def _write_error(self, what: str, e: Exception) -> CheckpointError:
    """The error of a failed save: where, why, and that the earlier steps are intact.

    Raised `from None`: the OS error is the whole story, and Orbax's and TensorStore's frames
    beneath it would bury it (it stays available as `__context__`).
    """
    self._write_failed = True
    try:
      # From disk: a failed background save has already dropped from Orbax's list the older
      # steps its retention would have deleted, though they are still there.
      self._manager.reload()
    except Exception:  # noqa: BLE001 - the listing is only for the message.
      pass
    steps = self.all_steps()
    if steps:
      after = (f"The finished steps {steps} are untouched: a rerun resumes from step "
               f"{steps[-1]}.")
    else:
      after = "No earlier step was finished: a rerun starts afresh."
    return CheckpointError(
        f"{what} to {self.directory} failed: {_first_line(e)}. {after} Free disk space or fix "
        "the directory's permissions first."
    )

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- restore --------------------------------------------------------------------------------

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores (state, meta) of `step` (default: the latest) into the shardings of `target`.

    Args:
      target: pytree of `jax.ShapeDtypeStruct` with `.sharding` (see `prl_jax.run.checkpoint_tree.abstract_like`), the same
        structure as the saved state. Dtypes may differ from the stored ones (values are cast).
      step: the step to restore; None for the latest finished one.

    Raises:
      CheckpointError: no checkpoint, unknown step, structure/shape mismatch, or unreadable
        (corrupt) files. The message names the directory and what to do. Nothing is deleted.
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(
          f"No finished checkpoint in {self.directory}; start without restoring (a fresh "
          "run) or point the workdir at a directory that holds one."
      )
    step = steps[-1] if step is None else int(step)
    if step not in steps:
      raise CheckpointError(
          f"Step {step} is not in {self.directory}; available steps: {steps}."
      )
    step_dir = self.directory / str(step)
    missing = [name for name in (STATE, META) if not (step_dir / name).exists()]
    if missing:
      reason = f"missing {missing}"
      raise CorruptCheckpointError(self._corrupt_message(step, steps, reason), step, reason)
    args = ocp.args.Composite(
        **{
            STATE: ocp.args.StandardRestore(storage_target(target)),
            META: ocp.args.JsonRestore(),
        }
    )
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001 - every failure becomes one actionable error.
      if _is_mismatch(e):
        raise CheckpointError(
            f"The checkpoint {step_dir} does not match the state being restored "
            f"({_first_line(e)}). The model, optimizer or config probably changed since "
            "it was written: restore with the original config, or use a new workdir."
        ) from e
      reason = _first_line(e)
      raise CorruptCheckpointError(self._corrupt_message(step, steps, reason), step,
                                   reason) from e
    state = data_to_keys(restored[STATE], target)
    return state, dict(restored[META])

  def restore_latest_good(self, target: Any) -> tuple[Any, dict]:
    """Restores the newest step that reads back; the resume path of a training run.

    A newer step that is corrupt (files truncated or deleted: a disk fault, an interrupted
    copy) is renamed to `<step>.broken` with a warning naming it and the step used instead.
    The rename keeps its files for inspection and frees the step number, which the resumed
    run saves again (Orbax never saves over an existing step directory). Nothing is renamed
    unless some step restores, and anything but corruption (no checkpoint, a target that does
    not match: a changed config) raises as in `restore`. A `read_only` checkpointer falls
    back the same way but leaves the broken steps in place.
    """
    steps = self.all_steps()
    broken: list[CorruptCheckpointError] = []
    for step in reversed(steps):
      try:
        restored = self.restore(target, step)
      except CorruptCheckpointError as e:
        broken.append(e)
        continue
      for e in broken:
        where = self._set_aside(e.step)
        logger.warning("Checkpoint step %d in %s is unreadable (%s); %s. Resuming from step %d.",
                       e.step, self.directory, e.reason, where, step)
      return restored
    if not broken:
      return self.restore(target)  # Raises: no finished checkpoint.
    reasons = "; ".join(f"step {e.step}: {e.reason}" for e in broken)
    raise CheckpointError(
        f"No finished step in {self.directory} can be read ({reasons}). Nothing was moved or "
        "deleted; move the step directories elsewhere to start afresh."
    )

  def _set_aside(self, step: int) -> str:
    """Renames a broken step to `<step>.broken` (a name Orbax ignores); says what was done."""
    step_dir = self.directory / str(step)
    if self.read_only:
      return f"left in place (read-only), so step {step} cannot be saved again here"
    # Not `<step>.broken_<n>`: Orbax reads a name ending in `_<digits>` as a step.
    dest, n = self.directory / f"{step}.broken", 1
    while dest.exists():
      dest, n = self.directory / f"{step}.broken.{n}", n + 1
    if jax.process_index() == 0:
      step_dir.rename(dest)
    ocp.multihost.sync_global_processes(f"prl_jax_set_aside_{step}")
    self._manager.reload()  # Forget the renamed step, so that it can be saved again.
    return f"moved it to {dest}"

  def _corrupt_message(self, step: int, steps: list[int], reason: str) -> str:
    step_dir = self.directory / str(step)
    earlier = [s for s in steps if s < step]
    # A name that is not an integer is ignored by Orbax (neither listed, restored nor
    # cleaned up), so renaming in place keeps the files for inspection.
    move = f"rename it to {step_dir.name}.broken, e.g. `mv {step_dir} {step_dir}.broken`"
    if earlier:
      fix = (
          f"Set the broken step aside ({move}) and rerun: the run then resumes from "
          f"step {earlier[-1]} (finished steps: {steps}). Restoring the earlier step "
          f"explicitly (`restore(target, step={earlier[-1]})`) also works, but "
          f"while {step_dir} stays in place a later save of step {step} is skipped."
      )
    else:
      fix = f"It is the only finished step: set it aside ({move}) to start afresh."
    return (
        f"Checkpoint {step_dir} is unreadable (corrupt or partly deleted): {reason}. "
        f"Nothing was deleted. {fix}"
    )


def _is_mismatch(e: Exception) -> bool:
  """True for Orbax's tree-structure / shape mismatch errors (a user error, not corruption)."""
  text = str(e)
  return isinstance(e, ValueError) and (
      "tree structures do not match" in text or "not compatible with the stored shape" in text
  )


def _first_line(e: BaseException, limit: int = 300) -> str:
  """`Type: first line` of the innermost cause of `e`: the file-level error (e.g. a missing or
  truncated file), not Orbax's wrapper whose message dumps a whole TensorStore spec."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = str(e).strip().splitlines()
  line = f"{type(e).__name__}: {text[0] if text else ''}"
  return line if len(line) <= limit else line[: limit - 3] + "..."
