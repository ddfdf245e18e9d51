"""`prl-jax export`: any checkpoint step of a run as an HF directory (the policy, or a trained PRM).

    prl-jax export --workdir runs/prime --step 40 --out exports/prime-40
    prl-jax export --workdir runs/prime --what prm --out exports/prime-prm

The run's model is rebuilt from WORKDIR/config.json, the step's train state restored and the
chosen params written as `RunContext.export_policy` writes final_hf: safetensors in the dtype of
the checkpoint the run started from, its model_type, generation_config.json and special-token
ids, the tokenizer beside them. `--what prm` exports the PRM a PRIME (or implicit-mode rePIRL) run
trained: a causal LM, which loads anywhere an HF model does.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import ml_collections

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import ConfigError, shipped_defaults
from prl_jax.run import paths
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.context import build_context
from prl_jax.run.state import init_state

WHAT = ("policy", "prm")


def _tuples(tree):
  """JSON lists back to the tuples the config was written with (e.g. mesh.rules)."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, list) else tree


def _over_defaults(defaults: dict, recorded: dict) -> dict:
  """The recorded values over the defaults: keys added since the run was recorded read their
  defaults (a new key's default keeps the earlier behaviour)."""
  merged = dict(defaults)
  for key, value in recorded.items():
    both_dicts = isinstance(value, dict) and isinstance(defaults.get(key), dict)
    merged[key] = _over_defaults(defaults[key], value) if both_dicts else value
  return merged


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run recorded in WORKDIR/config.json, over today's defaults
  (configs/base.py) so that a run recorded before a key existed still loads."""
  path = paths.join(workdir, "config.json")
  if not paths.isfile(path):
    raise ConfigError(f"{workdir} has no config.json (written by `prl-jax train`/`sft` when a "
                      "run starts); pass the workdir of a run.")
  recorded = _tuples(json.loads(paths.read_text(path)))
  return ml_collections.ConfigDict(_over_defaults(shipped_defaults(), recorded))


def export_checkpoint(workdir: str, out: str, *, step: int | None = None,
                      what: str = "policy") -> str:
  """Writes checkpoint `step` (default the latest) of the run in `workdir` to `out` in HF layout;
  returns the step written."""
  if what not in WHAT:
    raise ConfigError(f"--what {what}: choose one of {WHAT}.")
  config = run_config(workdir)
  directory = paths.join(workdir, "checkpoints")
  with Checkpointer(directory, read_only=True) as ckpt:
    steps = ckpt.all_steps()
    if not steps:
      raise ConfigError(f"{directory} holds no checkpoint to export.")
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise ConfigError(f"--step {step}: {directory} holds steps {sorted(steps)}.")
    ctx = build_context(config, workdir)
    recipe = get_recipe(config.method)
    if what == "prm" and recipe.prm is None:
      raise ConfigError(f"--what prm: method={config.method} trains no PRM.")
    # Shapes only (nothing is loaded); the real ctx keeps its source for the export's format.
    shell = dataclasses.replace(ctx, hf_dir="")
    abstract = jax.eval_shape(lambda: init_state(shell, recipe))
    state, _ = ckpt.restore(ctx.abstract(abstract), step)
  params = state.policy.params if what == "policy" else state.prm.params
  policy_shapes = jax.tree_util.tree_structure(state.policy.params)
  if jax.tree_util.tree_structure(params) != policy_shapes:
    raise ConfigError(f"--what prm: the PRM of method={config.method} here is not a causal LM "
                      "(rePIRL's code mode puts a reward head on it); only LM PRMs export to HF.")
  ctx.export_policy(params, out)
  return step
