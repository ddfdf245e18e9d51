"""Experiment tracking beside metrics.jsonl: Weights & Biases (log.wandb) and rollout samples.

`log.wandb=true` sends every metrics row to a wandb run (the optional `wandb` extra). Its id is
made from the workdir, so a resumed run continues the same wandb run; `log.wandb_mode=offline`
keeps it on disk (no network; `wandb sync` uploads it later).

Every `log.samples_every` steps a few rollouts (prompt, response, outcome reward and the
process reward of each step) go to WORKDIR/samples.jsonl, one line per rollout, and to a wandb
table when wandb is on: what the policy writes and how the rewards judged it, beside the curves.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Sequence

import numpy as np

from prl_jax.config import ConfigError
from prl_jax.run import paths

SAMPLES_FILE = "samples.jsonl"
WANDB_MODES = ("", "online", "offline", "disabled")


def samples_due(config, step: int) -> bool:
  """Whether RL step `step` (1-based, the step about to finish) logs its rollout samples."""
  every = config.log.get("samples_every", 0)
  return bool(every) and step % every == 0


def step_values(x: np.ndarray, step_end: np.ndarray, mask: np.ndarray) -> list[float]:
  """The per-step sums of one response's token quantity `x` ([T]), one per step end in order:
  the host-side reading of prl_jax.ops.steps.step_sum for one row (tokens after the last step
  end belong to no step)."""
  out, running = [], 0.0
  for value, end, valid in zip(x, step_end, mask):
    if not valid:
      continue
    running += float(value)
    if end:
      out.append(running)
      running = 0.0
  return out


def sample_rows(prompts: Sequence[str], responses: Sequence[str], outcome: np.ndarray,
                process_reward: np.ndarray | None, step_end: np.ndarray, mask: np.ndarray,
                count: int) -> list[dict[str, Any]]:
  """`count` rollouts spread evenly over the batch: prompt, response, outcome reward and the
  process reward summed over each step ([] for methods without one)."""
  rows = len(responses)
  picks = sorted(set(np.linspace(0, rows - 1, min(count, rows)).round().astype(int).tolist()))
  out = []
  for i in picks:
    steps = ([] if process_reward is None
             else [round(v, 6) for v in step_values(process_reward[i], step_end[i], mask[i])])
    out.append({"prompt": prompts[i], "response": responses[i], "reward": float(outcome[i]),
                "process_rewards": steps})
  return out


def wandb_settings(config, workdir: str) -> dict | None:
  """The wandb.init arguments of a run with log.wandb=true (None when off), checked first."""
  log = config.log
  if not log.get("wandb", False):
    return None
  mode = log.get("wandb_mode", "")
  if mode not in WANDB_MODES:
    raise ConfigError(f"log.wandb_mode={mode!r}; choose one of {WANDB_MODES} ('' = wandb's "
                      "default, WANDB_MODE).")
  # wandb keeps its files on local disk: a URL workdir keeps them in the local cache instead.
  local = (os.path.join(paths.cache_dir(), "wandb") if paths.is_url(workdir)
           else os.path.abspath(workdir))
  run_id = hashlib.sha256(workdir.rstrip("/").encode()).hexdigest()[:16]
  settings = dict(project=log.get("wandb_project", "") or "prl_jax", dir=local, id=run_id,
                  resume="allow", name=log.get("wandb_name", "") or os.path.basename(
                      workdir.rstrip("/")), config=config.to_dict())
  if mode:
    settings["mode"] = mode
  return settings


class WandbRun:
  """One wandb run: scalar rows and sample tables, at the RL step."""

  def __init__(self, settings: Mapping[str, Any]):
    try:
      import wandb
    except ImportError as err:
      raise ConfigError("log.wandb=true needs the wandb package: `pip install wandb` (or the "
                        "wandb extra, `pip install prl_jax[wandb]`), or set log.wandb=false.") from err
    self._wandb = wandb
    os.makedirs(settings["dir"], exist_ok=True)
    self._run = wandb.init(**settings)

  def log(self, step: int, metrics: Mapping[str, float]) -> None:
    self._run.log(dict(metrics), step=step)

  def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = ["prompt", "response", "reward", "process_rewards"]
    table = self._wandb.Table(columns=columns,
                              data=[[r["prompt"], r["response"], r["reward"],
                                     str(r["process_rewards"])] for r in rows])
    self._run.log({"samples": table}, step=step)

  def finish(self) -> None:
    self._run.finish()
