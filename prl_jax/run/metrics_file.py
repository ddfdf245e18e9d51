"""Metrics out of a run: one JSON line per step, TensorBoard event files, and a progress bar.

Only the main process writes (every process computes the same replicated metrics). The JSONL file
is appended to, so a resumed run continues its history; lines of steps past the resume point
(written after the last checkpoint by the run that died) are dropped first, and so is a line torn
by a write that was cut short. Each line is one write, fsynced, so readers see whole rows.
"""

from __future__ import annotations

import json
import logging
import os

from prl_jax.progress import progress_bar

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
        # purge_step: TensorBoard hides the old run's events past the resumed step, which
        # would otherwise show twice (once from before the kill, once from the resume).
        self._tb = SummaryWriter(os.path.join(workdir, "tb"),
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
    self._bar.set_postfix({label: metrics[k] for k, label in self.PROGRESS_KEYS if k in metrics},
                          refresh=False)
    self._bar.update(step - self._bar.n)  # steps between writes (log.every > 1) count too

  def close(self) -> None:
    self._bar.close()
    if self._tb is not None:
      self._tb.close()


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to `path` in one write, then fsyncs it.

  One `os.write` on an O_APPEND descriptor puts the whole line in the file at once, so a killed
  process leaves the line or nothing rather than half a row (Python's buffered file may split a
  long line over several writes); the fsync makes a written line survive a machine crash too.
  What can still tear a line (a full disk, a fatal signal inside a very large write, a power cut
  before the fsync) leaves a torn last line, which `truncate_after` drops at resume.
  """
  data = (line + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    done = os.write(fd, data)
    while done < len(data):  # a short write appends the rest, still before any other line
      done += os.write(fd, data[done:])
    os.fsync(fd)
  finally:
    os.close(fd)


def truncate_after(path: str, step: int) -> None:
  """Drops JSONL lines with a step greater than `step` (history beyond the restored state).

  A line that does not parse is dropped with a warning: the last line can be the torn tail of a
  write cut short by a kill or a full disk, and a run must still resume. The file is rewritten
  through a temporary file and `os.replace`, so a kill during the truncation leaves the old file
  or the new one, never a mix.
  """
  if not os.path.exists(path):
    return
  with open(path, "rb") as fh:
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
    _replace_file(path, "".join(kept))


def _parse_row(line: str) -> dict | None:
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) else None


def _replace_file(path: str, text: str) -> None:
  """Replaces the contents of `path` atomically: write a sibling, fsync it, rename over."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as fh:
    fh.write(text)
    fh.flush()
    os.fsync(fh.fileno())
  os.replace(tmp, path)
  # The rename itself is durable only once the directory entry is synced.
  fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file."""
  with open(path) as fh:
    return [json.loads(line) for line in fh if line.strip()]
