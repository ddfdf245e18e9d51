"""Progress bars of the long commands: count, rate, ETA and a few key numbers, on stderr.

    with progress_bar(total=len(prompts), desc="eval", unit="problem") as bar:
      for part in chunks:
        ...
        bar.update(len(part))

Training, evaluation, ER-PRM labelling, best-of-N and `prl-jax reproduce` all draw their bars
here, so every command looks the same and the policy lives in one place:
- only process 0 of a multi-process job draws (every process runs the same steps);
- on a terminal the bar redraws in place a few times a second; in a log file or a CI log (not a
  terminal) it writes one plain line at most every LOG_INTERVAL_S seconds, plus the final one,
  so a long job leaves a readable trickle of lines rather than a flood of carriage returns.

It sits at the top of the package, beside distributed.py, so train/, eval/ and rewards/ can all
import it without importing one another.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

import jax
from tqdm import tqdm

TTY_INTERVAL_S = 0.1
LOG_INTERVAL_S = 30.0

# Cursor movement and the carriage return tqdm uses to redraw in place.
_REDRAW = re.compile(r"\r|\x1b\[A")


class _LogLines:
  """A non-terminal stream as tqdm's output: each redraw becomes a line of its own.

  tqdm redraws with "\\r" + text (and cursor-up codes for nested bars); a file would keep them all
  on one ever-growing line. Writes with no text left (clearing, moving) are dropped.
  """

  def __init__(self, stream: TextIO):
    self._stream = stream

  def write(self, text: str) -> int:
    line = _REDRAW.sub("", text).strip()
    if line:
      self._stream.write(line + "\n")
    return len(text)

  def flush(self) -> None:
    self._stream.flush()

  def isatty(self) -> bool:
    return False

  def __getattr__(self, name: str) -> Any:  # encoding, fileno, ... of the real stream
    return getattr(self._stream, name)


def _is_tty(stream: TextIO) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # a closed or file-like object without a terminal
    return False


def _draws_here() -> bool:
  """Process 0 of a `jax.distributed` job, or a lone process.

  Asking jax.process_index() only inside a job: it would start a backend (and take a GPU's
  memory) in a process that runs no JAX work, such as `reproduce`'s parent of worker processes.
  """
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "it",
                 initial: int = 0, file: TextIO | None = None) -> tqdm:
  """A tqdm bar on stderr (or `file`), drawn only where `enabled` and on process 0.

  Args:
    total: units of the whole job (None: count without a percentage or ETA).
    desc: the label before the bar ("train", "eval", ...).
    enabled: False gives a bar that draws nothing (every method still works), so callers need
      no `if` around their updates.
    unit: what one unit is ("step", "problem", ...): the rate reads "unit/s" or "s/unit".
    initial: units already done (a resumed run), so the rate and ETA cover this call's work only.
    file: the stream (default: sys.stderr at the time of the call).

  Returns:
    The bar; close it (or use it as a context manager) to print its final line.
  """
  stream = sys.stderr if file is None else file
  tty = _is_tty(stream)
  return tqdm(total=total, desc=desc, unit=unit, initial=initial,
              file=stream if tty else _LogLines(stream),
              disable=not (enabled and _draws_here()), dynamic_ncols=tty,
              mininterval=TTY_INTERVAL_S if tty else LOG_INTERVAL_S,
              # tqdm's monitor thread redraws after maxinterval: not before a log line is due.
              maxinterval=10.0 if tty else LOG_INTERVAL_S,
              leave=None)  # a nested bar (a run inside `reproduce`) clears itself when done


def say(message: str) -> None:
  """Prints a line on stdout above any live bar (a plain print would cut through the bar)."""
  tqdm.write(message, file=sys.stdout)
  sys.stdout.flush()
