"""Ctrl-C (SIGINT) and preemption (SIGTERM) stop a run at the end of its current step, saved.

Without this a Ctrl-C raised KeyboardInterrupt wherever the loop was, lost up to
`checkpoint.every - 1` steps and printed a traceback. `StopSignals` turns the first signal into a
request the loop reads after each step: it saves that step, then `raise_if_requested` raises
`RunInterrupted`, which the CLI prints as one line with how to resume. A second Ctrl-C aborts at
once (the last saved checkpoint is still good). With several processes the handlers are left
alone: a stop has to be agreed by every process, which a signal to one of them is not.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
  """The run stopped on a signal after saving its last step; rerunning the command resumes."""

  def __init__(self, signal_name: str, step: int, workdir: str):
    super().__init__(f"stopped by {signal_name} after step {step}, which is saved in "
                     f"{workdir}/checkpoints; rerun the same command to resume.")
    self.signal_name, self.step, self.workdir = signal_name, step, workdir

  def __reduce__(self):
    # Rebuilt from its fields, not its message, when it crosses from a worker process.
    return type(self), (self.signal_name, self.step, self.workdir)


class StopSignals:
  """Installed (or as a context manager), SIGINT/SIGTERM request a stop instead of killing the run."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, object] = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame) -> None:
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.signal_name = signal.Signals(signum).name
    logger.warning("%s: stopping after the current step and saving it (Ctrl-C again to abort "
                   "without saving).", self.signal_name)

  def install(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def __enter__(self) -> "StopSignals":
    return self.install()

  def __exit__(self, *exc) -> None:
    self.restore()

  def raise_if_requested(self, step: int, workdir: str) -> None:
    if self.requested:
      raise RunInterrupted(self.signal_name, step, workdir)


def nothing_to_do(step: int, total: int, key: str, workdir: str) -> str:
  """The line a rerun of a finished run prints instead of silently doing nothing."""
  return (f"nothing to do: the run in {workdir} has finished its {total} steps ({key}={total}, "
          f"saved step {step}); raise {key} to continue it, or use a new workdir.")
