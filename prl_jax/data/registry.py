"""Synthetic tasks by name: `get_task("arithmetic")`, `get_task("countdown")`, `get_task("register")`.

A task bundles what the loop needs from it: a generator of training problems, a generator of
held-out (harder) problems, a reference solver and the outcome checker the verifier calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prl_jax.data import arithmetic, countdown, register


@dataclass(frozen=True)
class Task:
  """One synthetic task.

  generate(num, difficulty, seed, **options) -> list of examples
  generate_heldout(num, seed, **options) -> list of examples beyond the training difficulty
  solve(question) -> reference solution text
  check(response, example) -> 1.0 if the response solves the example, else 0.0
  step_labels(response, example) -> per-step correctness, for tasks with a step checker (the
    oracle method and step-level diagnostics); None otherwise
  min_ops, min_ops_why: the fewest operations (task.min_ops) a problem can have, and why
  """

  name: str
  generate: Callable[..., list[dict[str, Any]]]
  generate_heldout: Callable[..., list[dict[str, Any]]]
  solve: Callable[[str], str]
  check: Callable[[str, Mapping[str, Any]], float]
  step_labels: Callable[[str, Mapping[str, Any]], list[bool]] | None = None
  min_ops: int = 1
  min_ops_why: str = ""


TASKS: dict[str, Task] = {
  m.TASK: Task(m.TASK, m.generate, m.generate_heldout, m.solve, m.check,
               getattr(m, "step_labels", None), getattr(m, "MIN_OPS", 1),
               getattr(m, "MIN_OPS_WHY", ""))
  for m in (arithmetic, countdown, register)
}


def get_task(name: str) -> Task:
  """The synthetic task called `name`; an unknown name lists the known ones."""
  try:
    return TASKS[name]
  except KeyError:
    raise ValueError(
      f"unknown task {name!r}; synthetic tasks are {sorted(TASKS)} "
      "(real math data is loaded from local files with prl_jax.data.math_files)"
    ) from None
