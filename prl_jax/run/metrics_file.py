"""Metrics out of a run: one JSON line per step, TensorBoard event files, wandb (log.wandb), rollout
samples (samples.jsonl) and a progress bar.

Only the main process writes (every process computes the same replicated metrics). The JSONL file
is appended to, so a resumed run continues its history; lines of steps past the resume point
(written after the last checkpoint by the run that died) are dropped first, and so is a line torn
by a write that was cut short. Each line is one write, fsynced, so readers see whole rows.

The workdir may be a URL (`gs://bucket/run`): every file goes through prl_jax.run.paths, and
TensorBoard's event files through an fsspec record writer registered for the URL's scheme.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, Mapping

from prl_jax.progress import progress_bar
from prl_jax.run import paths, tracking

logger = logging.getLogger(__name__)


class MetricsWriter:
  """Writes `workdir/metrics.jsonl`, `workdir/tb/` events and a progress bar on stderr.

  The bar (`prl_jax.progress`) counts steps out of `total` with rate and ETA, and shows the
  PROGRESS_KEYS found in the last written metrics; it starts at `resume_step`, so a resumed
  run's ETA covers the steps left. `desc` labels it (default: from `filename`).
  """

  PROGRESS_KEYS = (("train/reward", "reward"), ("rollout/reward", "sampled"),
                   ("policy/loss", "loss"), ("sft/loss", "loss"), ("prm/loss", "loss"),
                   ("prm/step_acc", "acc"), ("prm/pairwise_accuracy", "prm_acc"),
                   ("filter/accepted", "accepted"), ("time/tokens_per_s", "tok/s"))

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               progress: bool = True, total: int | None = None, resume_step: int = 0,
               filename: str = "metrics.jsonl", desc: str | None = None,
               wandb: Mapping[str, Any] | None = None):
    self.enabled, self.progress, self.total = enabled, progress, total
    self.path = paths.join(workdir, filename)
    self.samples_path = paths.join(workdir, tracking.SAMPLES_FILE)
    self._tb = self._wandb = None
    # By default the file names the job: "metrics.jsonl" -> "train", "sft_metrics.jsonl" -> "sft".
    desc = desc or filename.replace("metrics.jsonl", "").rstrip("_") or "train"
    self._bar = progress_bar(total, desc, enabled=enabled and progress, unit="step",
                             initial=resume_step)
    if not enabled:
      return
    paths.makedirs(workdir)
    truncate_after(self.path, resume_step)
    truncate_after(self.samples_path, resume_step)
    if wandb is not None:  # wandb.init arguments (prl_jax.run.tracking.wandb_settings)
      self._wandb = tracking.WandbRun(wandb)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        if paths.is_url(workdir):
          _register_tensorboard_scheme(paths.scheme(workdir))
        # purge_step: TensorBoard hides the old run's events past the resumed step, which
        # would otherwise show twice (once from before the kill, once from the resume).
        self._tb = SummaryWriter(paths.join(workdir, "tb"),
                                 purge_step=resume_step + 1 if resume_step else None)
      except ImportError:  # TensorBoard output is optional; JSONL is always written
        self._tb = None

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    append_line(self.path, json.dumps({"step": step, **metrics}, sort_keys=True))
    if self._tb is not None:
      for key, value in metrics.items():
        self._tb.add_scalar(key, value, step)
    if self._wandb is not None:
      self._wandb.log(step, metrics)
    self._bar.set_postfix({label: metrics[k] for k, label in self.PROGRESS_KEYS if k in metrics},
                          refresh=False)
    self._bar.update(step - self._bar.n)  # steps between writes (log.every > 1) count too

  def write_samples(self, step: int, rows: list[dict]) -> None:
    """A few rollouts of `step` (prl_jax.run.tracking.sample_rows): one line each in
    WORKDIR/samples.jsonl, and a table in wandb when it is on."""
    if not self.enabled or not rows:
      return
    for row in rows:
      append_line(self.samples_path, json.dumps({"step": step, **row}, sort_keys=True))
    if self._wandb is not None:
      self._wandb.log_samples(step, rows)

  def close(self) -> None:
    self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to `path` as one whole row (prl_jax.run.paths.append_line).

  What can still tear a local line (a full disk, a fatal signal inside a very large write, a
  power cut before the fsync) leaves a torn last line, which `truncate_after` drops at resume.
  """
  paths.append_line(path, line)


def truncate_after(path: str, step: int) -> None:
  """Drops JSONL lines with a step greater than `step` (history beyond the restored state).

  A line that does not parse is dropped with a warning: the last line can be the torn tail of a
  write cut short by a kill or a full disk, and a run must still resume. The file is rewritten
  through a temporary file and a rename (one upload on an object store), so a kill during the
  truncation leaves the old file or the new one, never a mix.
  """
  if not paths.exists(path):
    return
  with paths.open(path, "rb") as fh:
    text = fh.read().decode("utf-8", errors="replace")
  lines = text.splitlines(keepends=True)
  kept, torn = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    row = _parse_row(line)
    if row is None:
      torn.append(number)
    elif row.get("step", 0) <= step:
      kept.append(line if line.endswith("\n") else line + "\n")
  if torn:
    logger.warning("%s: dropped line(s) %s that do not parse (torn by an interrupted write).",
                   path, torn)
  if "".join(kept) != text:
    paths.write_atomic(path, "".join(kept))


def _parse_row(line: str) -> dict | None:
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) else None


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file."""
  with paths.open(path) as fh:
    return [json.loads(line) for line in fh if line.strip()]


class _FsspecRecordWriter:
  """TensorBoard's record file on an fsspec URL: the events are kept in memory and every flush
  uploads the whole file (object stores cannot append), as tensorboardX's own gs:// writer does.
  Event files of scalar metrics stay small."""

  def __init__(self, path: str):
    self.path, self.buffer = path, io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    with paths.open(self.path, "wb") as fh:
      fh.write(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _FsspecRecordWriterFactory:
  def open(self, path: str) -> _FsspecRecordWriter:
    return _FsspecRecordWriter(path)

  def directory_check(self, path: str) -> None:
    paths.makedirs(path)


def _register_tensorboard_scheme(scheme: str) -> None:
  """Routes tensorboardX's event files under `scheme://` through prl_jax.run.paths (it would
  otherwise write gs:// only with google-cloud-storage and any other URL to a local directory)."""
  from tensorboardX import record_writer
  record_writer.register_writer_factory(scheme, _FsspecRecordWriterFactory())
