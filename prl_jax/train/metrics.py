"""Metrics out of a run: one JSON line per step, TensorBoard event files, and a progress bar.

Only the main process writes (every process computes the same replicated metrics). The JSONL file
is appended to, so a resumed run continues its history; lines of steps past the resume point
(written after the last checkpoint by the run that died) are dropped first.
"""

from __future__ import annotations

import json
import os

from prl_jax.progress import progress_bar


class MetricsWriter:
  """Writes `workdir/metrics.jsonl`, `workdir/tb/` events and a progress bar on stderr.

  The bar (`prl_jax.progress`) counts steps out of `total` with rate and ETA, and shows the
  PROGRESS_KEYS found in the last written metrics; it starts at `resume_step`, so a resumed
  run's ETA covers the steps left. `desc` labels it (default: from `filename`).
  """

  PROGRESS_KEYS = (("train/reward", "reward"), ("rollout/reward", "sampled"),
                   ("policy/loss", "loss"), ("sft/loss", "loss"), ("prm/loss", "loss"),
                   ("prm/step_acc", "acc"), ("time/tokens_per_s", "tok/s"))

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               progress: bool = True, total: int | None = None, resume_step: int = 0,
               filename: str = "metrics.jsonl", desc: str | None = None):
    self.enabled, self.progress, self.total = enabled, progress, total
    self.path = os.path.join(workdir, filename)
    self._tb = None
    # By default the file names the job: "metrics.jsonl" -> "train", "sft_metrics.jsonl" -> "sft".
    desc = desc or filename.replace("metrics.jsonl", "").rstrip("_") or "train"
    self._bar = progress_bar(total, desc, enabled=enabled and progress, unit="step",
                             initial=resume_step)
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    truncate_after(self.path, resume_step)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # TensorBoard output is optional; JSONL is always written
        self._tb = None

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as fh:
      fh.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
    if self._tb is not None:
      for key, value in metrics.items():
        self._tb.add_scalar(key, value, step)
    self._bar.set_postfix({label: metrics[k] for k, label in self.PROGRESS_KEYS if k in metrics},
                          refresh=False)
    self._bar.update(step - self._bar.n)  # steps between writes (log.every > 1) count too

  def close(self) -> None:
    self._bar.close()
    if self._tb is not None:
      self._tb.close()


def truncate_after(path: str, step: int) -> None:
  """Drops JSONL lines with a step greater than `step` (history beyond the restored state)."""
  if not os.path.exists(path):
    return
  with open(path) as fh:
    lines = [line for line in fh if line.strip()]
  kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
  if len(kept) != len(lines):
    with open(path, "w") as fh:
      fh.writelines(kept)


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file."""
  with open(path) as fh:
    return [json.loads(line) for line in fh if line.strip()]
