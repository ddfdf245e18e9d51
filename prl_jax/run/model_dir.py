"""Where a model is expected (`--model`, `init_from`, `model.hf_dir`), a run's workdir works too.

An HF-layout directory (config.json + safetensors) is used as it is; a workdir of `prl-jax sft`
or `prl-jax train` stands for its final export WORKDIR/final_hf; `generate` also takes a workdir
without one, or WORKDIR/checkpoints[/STEP], and reads that checkpoint (`checkpoint_source`).
"""

from __future__ import annotations

import os

from prl_jax.config import ConfigError
from prl_jax.run import paths


def is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json")) and any(
      name.endswith(".safetensors") or name == "model.safetensors.index.json"
      for name in os.listdir(path))


def checkpoint_source(path: str) -> tuple[str, int | None] | None:
  """(workdir, step or None for the latest) when `path` names a run's checkpoints, else None.

  Accepts WORKDIR (holding checkpoints/ and config.json), WORKDIR/checkpoints and
  WORKDIR/checkpoints/STEP.
  """
  path = os.path.normpath(path)
  step = None
  if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
    step, path = int(os.path.basename(path)), os.path.dirname(path)
  if os.path.basename(path) == "checkpoints":
    path = os.path.dirname(path)
  ckpts = os.path.join(path, "checkpoints")
  if os.path.isdir(ckpts) and any(name.isdigit() for name in os.listdir(ckpts)):
    if not os.path.isfile(os.path.join(path, "config.json")):
      raise ConfigError(f"{path} has checkpoints but no config.json (the run's config, which "
                        "says how to rebuild the model); pass its final_hf export instead.")
    return path, step
  return None


def resolve_model_dir(path: str, flag: str) -> str:
  """`path` if it is an HF-layout directory, else WORKDIR/final_hf for a run's workdir.

  `flag` names the option or key in the error (e.g. "init_from"). A URL (gs://...) or a Hugging
  Face Hub id (Qwen/Qwen2.5-Math-7B) is first made a local directory (prl_jax.run.paths).
  """
  path = paths.resolve_input(path, flag)
  if not path:
    return path
  if not os.path.isdir(path):
    raise ConfigError(f"{flag}={path}: no such directory; pass an HF-layout model directory "
                      "(config.json + safetensors) or a run's workdir.")
  if is_hf_dir(path):
    return path
  final = os.path.join(path, "final_hf")
  if os.path.isdir(final) and is_hf_dir(final):
    return final
  what = ("a run's workdir without a final export yet (finish `prl-jax sft`, or train with "
          "checkpoint.save_hf=true)" if os.path.isdir(os.path.join(path, "checkpoints"))
          else "not a model directory (no config.json and safetensors)")
  raise ConfigError(f"{flag}={path} is {what}; pass an HF-layout model directory such as "
                    "WORKDIR/final_hf.")


def locate(path: str, flag: str) -> tuple[str, str | None, int | None]:
  """Where the model `path` names: ("hf", directory, None) for an HF-layout directory or a
  workdir's final_hf; ("checkpoint", workdir, step or None for the latest) for
  WORKDIR/checkpoints[/STEP] or a workdir with checkpoints and no final export."""
  name = os.path.basename(os.path.normpath(path))
  explicit = name == "checkpoints" or name.isdigit()
  if os.path.isdir(path) and not explicit and (
      is_hf_dir(path) or os.path.isdir(os.path.join(path, "final_hf"))):
    return "hf", resolve_model_dir(path, flag), None
  source = checkpoint_source(path) if os.path.isdir(path) else None
  if source is None:
    # a local HF directory, or a URL / Hub id made local; raises, naming what the path is
    return "hf", resolve_model_dir(path, flag), None
  return "checkpoint", source[0], source[1]


def resolve_inputs(config) -> None:
  """Makes every model, tokenizer and data file the config names local, in place: a run's
  workdir stands for its final export, URLs are copied into the cache and Hub ids come from the
  Hugging Face cache (prl_jax.run.paths). Each process resolves its own copy."""
  if config.get("init_from"):
    config.init_from = resolve_model_dir(config.init_from, "init_from")
  if "model" in config and config.model.get("hf_dir"):
    config.model.hf_dir = resolve_model_dir(config.model.hf_dir, "model.hf_dir")
  if "model" in config and config.model.get("tokenizer") not in (None, "", "char"):
    config.model.tokenizer = paths.resolve_input(config.model.tokenizer, "model.tokenizer")
  if "task" in config:
    for key in ("train_file", "eval_file"):
      if config.task.get(key):
        config.task[key] = paths.local_copy(config.task[key], f"task.{key}")
  erprm = config.get("algo", {}).get("erprm", {})
  if erprm.get("prm_dir"):
    config.algo.erprm.prm_dir = paths.resolve_input(erprm.prm_dir, "algo.erprm.prm_dir")
