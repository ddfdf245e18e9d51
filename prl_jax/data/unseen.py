"""Eval splits of the synthetic tasks never repeat a training question.

A task generator skips the questions it is told to exclude and draws again; `unseen_budget`
bounds those extra draws so that a task too small for the requested split stops with what to
change instead of looping forever.
"""

from __future__ import annotations

from collections.abc import Collection

# Draws allowed per requested problem (plus a floor): ample while at least ~1% of the problem
# space is unseen, and a quick stop when the training set covers all of it.
DRAWS_PER_PROBLEM = 100
MIN_DRAWS = 10_000


def unseen_budget(draws: int, num: int, found: int, exclude: Collection[str], split: str) -> int:
  """`draws + 1`, or a ValueError once the draws for `num` problems run past the budget."""
  if draws >= DRAWS_PER_PROBLEM * num + MIN_DRAWS:
    raise ValueError(
        f"only {found} of the {num} {split} problems asked for are not among the "
        f"{len(exclude)} excluded (training) questions: the task has too few distinct problems; "
        "ask for fewer (task.num_eval, eval.num_problems) or widen the task (task.max_operand, "
        "task.max_ops; register chains: task.register.num_bugs, fewer hard_bugs)")
  return draws + 1
