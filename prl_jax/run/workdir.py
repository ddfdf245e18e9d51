"""One run per workdir: what a run leaves there, and the checks before a run writes into it.

`checkpoint.resume=false` on a workdir holding an earlier run would append the new run's metrics
to the old history, meet the old checkpoint steps ("already saved; not overwriting") and leave
`eval` to score the old weights beside the new metrics. So it is refused, unless
`checkpoint.overwrite=true` first removes the earlier run's outputs (`RUN_OUTPUTS`; other files in
the workdir are left alone).
"""

from __future__ import annotations

import logging
import os

import ml_collections

from prl_jax import distributed
from prl_jax.config import ConfigError
from prl_jax.run import paths

logger = logging.getLogger(__name__)

# Everything `prl-jax train`, `sft` and `eval` write into a workdir (eval_<split> beside these).
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "sft_metrics.jsonl", "tb", "final_hf", "eval",
               "config.json", "config_changes.jsonl")


def has_checkpoint(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds a finished step (what the loops would resume from).

  Orbax names a finished step by its number; a save in progress has a longer temporary name.
  """
  directory = paths.join(workdir, "checkpoints")
  return any(name.isdigit() and paths.isdir(paths.join(directory, name))
             for name in paths.listdir(directory))


def earlier_run(workdir: str) -> list[str]:
  """The outputs of an earlier run in `workdir` that a fresh run would mix with its own.

  A config.json alone (a run refused or killed before its first step) is not an earlier run.
  """
  found = []
  for name in sorted(paths.listdir(workdir)):
    path = paths.join(workdir, name)
    if name == "checkpoints":
      if has_checkpoint(workdir):
        found.append(name)
    elif name in ("metrics.jsonl", "sft_metrics.jsonl"):
      if paths.getsize(path):
        found.append(name)
    elif name in ("final_hf", "eval") or name.startswith("eval_"):
      found.append(name)
  return found


def check_writable(workdir: str) -> None:
  """A workdir that is a file, or that cannot be created or written, is a user error.

  A URL workdir is checked by the first write into it (object stores have no permission bits to
  read beforehand).
  """
  if paths.is_url(workdir):
    if paths.isfile(workdir):
      raise ConfigError(f"--workdir {workdir} is a file, not a directory; pass a directory.")
    paths.makedirs(workdir)  # an unknown scheme or a missing package is named here
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} is a file, not a directory; pass a directory.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as err:
    raise ConfigError(f"--workdir {workdir} cannot be created ({err.strerror}); pass a "
                      "directory you can write to.") from err
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir {workdir} is not writable; pass a directory you can write to.")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses checkpoint.resume=false on an earlier run; checkpoint.overwrite=true clears it.

  Local and URL workdirs (`gs://...`) alike, through prl_jax.run.paths.
  """
  check_writable(workdir)
  found = earlier_run(workdir)
  if config.checkpoint.get("overwrite", False):
    if distributed.is_main_process():
      cleared = [name for name in paths.listdir(workdir)
                 if name in RUN_OUTPUTS or name.startswith("eval_")]
      for name in cleared:
        paths.remove(paths.join(workdir, name))
      if cleared:
        logger.warning("checkpoint.overwrite=true: removed the earlier run's %s from %s",
                       ", ".join(sorted(cleared)), workdir)
    return
  if found and not config.checkpoint.resume:
    raise ConfigError(
        f"--workdir {workdir} holds an earlier run ({', '.join(found)}) and checkpoint.resume="
        "false would mix the two; use a fresh workdir, resume the run (drop "
        "checkpoint.resume=false), or clear it with --config.checkpoint.overwrite=true.")
