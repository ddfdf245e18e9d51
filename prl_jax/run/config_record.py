"""The resolved config of a run, kept in WORKDIR/config.json, and the check that a resume
continues the same experiment.

`prl-jax train` and `prl-jax sft` write their config (after `--config.a.b=value` overrides) to
`WORKDIR/config.json` before building the model. Resuming from a checkpoint in a workdir whose
config.json differs is refused at that point, within seconds and before anything is compiled,
with every changed key, its old and new value, and the flag that forces it: a silently changed
learning rate, seed, method or batch would otherwise splice two experiments into one curve.

Keys that may change on resume without forcing (`RESUMABLE`): how long the run lasts and how it
is evaluated, logged and checkpointed. None of them changes the math or the randomness of a
training step.

- `train.steps`, `sft.steps`: the run's length. The optimizer schedule's horizon is this count,
  so with a decaying schedule (optim.schedule cosine/linear, SFT's cosine) the learning rates of
  the remaining steps follow the new length; a constant schedule is unaffected.
- `eval.*`: periodic evaluation, seeded by the step and never fed back into training.
- `log.*`: the metrics file, TensorBoard and the progress line.
- `checkpoint.every`, `checkpoint.keep`, `checkpoint.best_metric`, `checkpoint.save_hf`,
  `checkpoint.resume`, `checkpoint.overwrite`, `checkpoint.allow_changes`: what is saved and
  when, not what is trained.
- `train.skip_nonfinite`: decides only what happens at a step with a NaN/inf loss, which a run
  without it would not survive; a run stopped by one resumes with it turned on
  (prl_jax.run.nonfinite).

A key the recorded config lacks (added to the project after the run started) is no change while
it keeps its default (configs/base.py), which by the project's convention is the earlier
behaviour; set to anything else it is refused like any other change.

Everything else is refused, memory knobs included (mesh.*, micro-batch sizes, model.remat,
rollout.max_rows): they change reduction orders or, for rollout.max_rows, the sampling keys, so a
resumed run would no longer equal an uninterrupted one. Force a change with
`--config.checkpoint.allow_changes=KEY[,KEY...]` (shell patterns such as `mesh.*` work); the
resume then logs a warning, rewrites config.json and appends the change to
`WORKDIR/config_changes.jsonl`, so the run's history shows where its config moved. A workdir
without a checkpoint just writes config.json; checkpoint.resume=false on a workdir holding an
earlier run is refused unless checkpoint.overwrite=true clears it (prl_jax.run.workdir).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from typing import Any, Mapping

import ml_collections

from prl_jax import distributed
from prl_jax.config import ConfigError, shipped_defaults
from prl_jax.run import paths
from prl_jax.run.config_checks import check_config
from prl_jax.run.workdir import has_checkpoint, prepare_workdir

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
RESUMABLE = ("train.steps", "sft.steps", "eval.*", "log.*", "checkpoint.every", "checkpoint.keep",
             "checkpoint.best_metric", "checkpoint.save_hf", "checkpoint.resume",
             "checkpoint.overwrite", "checkpoint.allow_changes", "train.skip_nonfinite")


class _Absent:
  """The value of a key that one of the two configs does not have."""

  def __repr__(self) -> str:
    return "(absent)"


ABSENT = _Absent()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys that `--config.a.b=...` names."""
  flat = {}
  for name, value in tree.items():
    key = f"{prefix}{name}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, key + "."))
    else:
      flat[key] = value
  return flat


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                   defaults: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old value, new value)} for every key that differs, sorted by key.

  A key only one side has counts as changed (its other value is ABSENT), except a key the old
  config lacks whose new value is its default in `defaults`: keys added to the project default
  to the earlier behaviour, so a run recorded before one existed ran as with its default.
  """
  a, b = flatten(old), flatten(new)
  known = flatten(defaults or {})
  return {key: (a.get(key, ABSENT), b.get(key, ABSENT)) for key in sorted(a.keys() | b.keys())
          if a.get(key, ABSENT) != b.get(key, ABSENT)
          and not (key not in a and key in known and known[key] == b[key])}


def matches(key: str, patterns) -> bool:
  """Whether `key` is one of `patterns` (exact keys or shell patterns such as "eval.*")."""
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def allowed_changes(config: ml_collections.ConfigDict) -> list[str]:
  """The keys (or patterns) of checkpoint.allow_changes, a comma-separated string."""
  return [part.strip() for part in config.checkpoint.allow_changes.split(",") if part.strip()]


def refusal_message(workdir: str, changes: Mapping[str, tuple[Any, Any]],
                    refused: list[str], allowed: list[str]) -> str:
  """Names every refused key with its old and new value, and the flag that forces them."""
  lines = "\n".join(f"  {key}: {changes[key][0]!r} -> {changes[key][1]!r}" for key in refused)
  force = ",".join([*allowed, *refused])
  return (f"Refusing to resume the run in {workdir}: this config differs from its "
          f"{CONFIG_FILE} in keys that change the experiment:\n{lines}\n"
          f"Resume with the original values, start a fresh workdir, or force the change with "
          f"--config.checkpoint.allow_changes={force} (recorded in {CONFIG_FILE} and "
          f"{CHANGES_FILE}).")


def _read(path: str) -> dict:
  try:
    return json.loads(paths.read_text(path))
  except (OSError, ValueError) as err:
    raise ConfigError(f"{path} cannot be read ({err}); it records the config of the run being "
                      "resumed. Restore it, or delete it to resume without the check.") from err


def record_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, tuple[Any, Any]]:
  """Checks a resume against WORKDIR/config.json, then writes this run's config there.

  Call it before building the model. Raises ConfigError when the run would resume from a
  checkpoint with changed keys outside RESUMABLE and not forced by checkpoint.allow_changes.
  Returns the changes since the recorded config ({} for a fresh run). Every process checks;
  only process 0 writes.
  """
  check_config(config)  # an illegal value names its key before anything is written
  prepare_workdir(config, workdir)  # resume=false on an earlier run: refused or cleared
  new = json.loads(json.dumps(config.to_dict()))  # as it reads back: tuples become lists
  path = paths.join(workdir, CONFIG_FILE)
  changes = {}
  if config.checkpoint.resume and has_checkpoint(workdir) and paths.exists(path):
    defaults = json.loads(json.dumps(shipped_defaults()))  # compared as they read back
    changes = config_changes(_read(path), new, defaults)
  allowed = allowed_changes(config)
  refused = [key for key in changes if not matches(key, RESUMABLE) and not matches(key, allowed)]
  if refused:
    raise ConfigError(refusal_message(workdir, changes, refused, allowed))
  forced = [key for key in changes if not matches(key, RESUMABLE)]
  if forced:
    logger.warning("Resuming %s with changed config (forced by checkpoint.allow_changes): %s",
                   workdir, "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}"
                                      for k in forced))
  if distributed.is_main_process():
    paths.makedirs(workdir)
    paths.write_atomic(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
    if changes:
      record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "forced": forced,
                "changes": {k: {"old": None if old is ABSENT else old,
                                "new": None if value is ABSENT else value}
                            for k, (old, value) in changes.items()}}
      paths.append_line(paths.join(workdir, CHANGES_FILE), json.dumps(record, sort_keys=True))
  return changes
