"""How well per-line scores find a response's first wrong line, judged by a task's step checker.

    first-error AUROC = P(score of a right line > score of the first wrong line)   (ties 1/2)

over the responses' lines that the checker can judge: in each response the lines before its
first wrong line are the positives and the first wrong line the negative; lines after it are left
out (whether they count as right depends on what a scorer is asked to predict). 0.5 is chance.
Used for the process rewards logged during training (`prm/step_auroc`) and for the PRMs of the
best-of-N experiment, so both are judged on the same lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prl_jax.data.registry import get_task
from prl_jax.eval.best_of_n import roc_auc


def step_checker(example: dict):
  """The example's task's step checker, or None (a task without one, or not a synthetic task)."""
  try:
    return get_task(example.get("task", "")).step_labels
  except ValueError:
    return None


def first_error_auc(line_values: Sequence[Sequence[float]], texts: Sequence[str],
                    examples: Sequence[dict]) -> float | None:
  """The first-error AUROC of per-line values (one list per response, a value per line).

  None when a response's task has no step checker, or without both a right and a wrong line.
  """
  scores, labels = [], []
  for values, text, example in zip(line_values, texts, examples):
    check = step_checker(example)
    if check is None:
      return None
    judged = check(text, example)
    first = next((i for i, ok in enumerate(judged) if not ok), len(judged))
    for i in range(min(first + 1, len(judged), len(values))):
      scores.append(values[i])
      labels.append(i < first)
  return roc_auc(np.asarray(scores, np.float64), np.asarray(labels, np.float64))
