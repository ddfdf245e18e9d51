"""Checks of single config values that run before anything is built, naming the key to fix.

A choice-valued key with a typo (`algo.prime.mode=Code`, `algo.steps.mode=newline`) used to fail
only where the value was first used, after the first rollout and compile (minutes at paper
scale), naming a function instead of the key. `check_config` runs in the first second of every
command that takes a config; `prl_jax.run.context.validate` still checks the values that must
agree with each other or with the devices.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any

import ml_collections

from prl_jax.algorithms.advantages import PRIME_BASES, PRIME_MODES, PRL_MODES
from prl_jax.algorithms.losses import KL_KINDS
from prl_jax.algorithms.recipes import registered
from prl_jax.algorithms.repirl import MODES as REPIRL_MODES
from prl_jax.config import ConfigError
from prl_jax.data.registry import TASKS
from prl_jax.data.templates import TEMPLATES
from prl_jax.models.config import PRESETS, REMAT_POLICIES
from prl_jax.ops.steps import STEP_MODES
from prl_jax.rewards.er_prm import AGGREGATIONS

import prl_jax.algorithms.registry  # noqa: F401  (registers every method)

logger = logging.getLogger(__name__)

# The data layouts of prl_jax.data.math_files.LOADERS (not imported: it pulls in `datasets`).
LAYOUTS = ("gsm8k", "math", "numina", "eurus2", "verl", "trl")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def choices() -> dict[str, tuple[str, ...]]:
  """Every choice-valued key and its legal values."""
  return {
      "method": tuple(sorted(registered())),
      "model.preset": tuple(sorted(PRESETS)),
      "model.dtype": ("float32", "bfloat16", "float16"),
      "model.remat": REMAT_POLICIES,
      "task.template": tuple(sorted(TEMPLATES)),
      "algo.steps.mode": STEP_MODES,
      "algo.prime.mode": PRIME_MODES,
      "algo.prime.granularity": ("token", "whole", "step"),
      "algo.prime.base": PRIME_BASES,
      "algo.prl.mode": PRL_MODES,
      "algo.repirl.mode": REPIRL_MODES,
      "algo.erprm.agg": AGGREGATIONS,
      "algo.erprm.prm_data_format": ("auto", "trl", "math_shepherd"),  # prl_jax.prm.imports
      "algo.loss.agg": LOSS_AGGS,
      "algo.loss.kl_kind": KL_KINDS,
      "optim.schedule": ("constant", "cosine", "linear"),
  }


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at a dotted key, or None where the config has no such key."""
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return None
    node = node[part]
  return node


def _check_choices(config) -> None:
  for key, legal in choices().items():
    value = _get(config, key)
    if value is None or value in legal:
      continue
    close = difflib.get_close_matches(str(value).lower(), legal, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{key}={value!r} is not one of {', '.join(legal)}{hint}.")


def _check_lengths(config, name: str) -> None:
  """task.min_ops <= task.max_ops, both at least the task's shortest problem (`Task.min_ops`: a
  register chain's answer is its last two values, so it needs two operations); sft.max_ops is 0
  or at least task.max_ops."""
  lo, hi = _get(config, "task.min_ops"), _get(config, "task.max_ops")
  task = TASKS[name]
  if lo is not None and hi is not None and not task.min_ops <= lo <= hi:
    why = f" ({task.min_ops_why})" if task.min_ops_why else ""
    raise ConfigError(f"task.min_ops={lo}, task.max_ops={hi}: task {name!r} needs "
                      f"{task.min_ops} <= min_ops <= max_ops{why}.")
  sft_hi = _get(config, "sft.max_ops")
  if sft_hi and hi is not None and sft_hi < hi:
    raise ConfigError(f"sft.max_ops={sft_hi} < task.max_ops={hi}: it extends the SFT's chains "
                      "beyond the training split's; set it >= task.max_ops, or 0 for the split's.")


def _check_task(config) -> None:
  """A synthetic task by name, or a file read by a data layout (or the loop's own schema)."""
  name, train_file = _get(config, "task.name"), _get(config, "task.train_file")
  if name is None:
    return
  if not train_file:
    if _get(config, "task.eval_file"):
      raise ConfigError("task.eval_file is read only beside task.train_file; the synthetic "
                        f"task {name!r} generates its own eval split (unset task.eval_file, or "
                        "set task.train_file and task.name to the data's layout).")
    if name in LAYOUTS:
      raise ConfigError(f"task.name={name!r} reads data files: set task.train_file (and "
                        "task.eval_file), e.g. --config FILE.py:train_file=PATH for the paper "
                        "configs.")
    if name not in TASKS:
      raise ConfigError(f"task.name={name!r} is not a synthetic task ({', '.join(sorted(TASKS))}); "
                        f"with task.train_file it may be a data layout ({', '.join(LAYOUTS)}).")
    _check_lengths(config, name)
    return
  for key in ("task.train_file", "task.eval_file"):
    path = _get(config, key)
    if path and "://" not in path and not os.path.exists(path):
      raise ConfigError(f"{key}={path}: no such file or directory.")
  # Any other name reads the loop's own jsonl schema; a near miss of a layout is a typo that
  # would silently read the file with the wrong schema.
  close = difflib.get_close_matches(name.lower(), LAYOUTS, n=1, cutoff=0.6)
  if name not in LAYOUTS and close:
    raise ConfigError(f"task.name={name!r} is not a data layout (did you mean {close[0]}?); "
                      f"layouts: {', '.join(LAYOUTS)}; any other name reads prl_jax's own "
                      "jsonl schema.")


def _check_numbers(config) -> None:
  for key in ("optim.lr", "optim.prm_lr", "optim.value_lr", "sft.lr"):
    value = _get(config, key)
    if value is not None and value < 0:
      raise ConfigError(f"{key}={value} is negative; a learning rate must be >= 0.")
  if _get(config, "optim.lr") == 0:
    logger.warning("optim.lr=0: the policy will not change.")
  for key in ("train.steps", "sft.steps"):
    value = _get(config, key)
    if value is not None and value <= 0:
      raise ConfigError(f"{key}={value}: the run needs at least one step.")
  n, method = _get(config, "rollout.n"), _get(config, "method")
  if n is not None and n < 1:
    raise ConfigError(f"rollout.n={n}: at least one response per prompt.")
  # Group-relative advantages are identically zero with one response per prompt: the run would
  # train on nothing.
  if method in ("grpo", "drgrpo") and n == 1:
    raise ConfigError(f"method={method} with rollout.n=1: a group of one response has zero "
                      "advantage (score minus its own group mean); set rollout.n >= 2.")


def check_config(config: ml_collections.ConfigDict, *, data: bool = True) -> None:
  """Raises ConfigError naming the first key whose value is illegal on its own.

  data=False skips the task's data source (`prl-jax memory` plans a run without its data).
  """
  _check_choices(config)
  if data:
    _check_task(config)
  _check_numbers(config)
