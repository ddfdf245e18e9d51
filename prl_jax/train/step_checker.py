"""Step rewards from a task's step checker, on the step ends of each response (the oracle method).

    step_rewards[b, e_k] = 1 if step k of response b is right, else 0

where e_k is the k-th step end of row b (`prl_jax.ops.steps.step_end_mask`, one step per line) and
step k is the k-th line the task's `step_labels` judges. A response with more step ends than
judged lines (e.g. a trailing empty line) gets 0 on the extra ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data.registry import get_task


def checker_step_rewards(texts: Sequence[str], examples: Sequence[dict],
                         step_end: np.ndarray) -> np.ndarray:
  """[B, N] float32 step rewards of `texts` (one per row of `step_end` [B, N])."""
  out = np.zeros(step_end.shape, np.float32)
  for b, (text, example) in enumerate(zip(texts, examples)):
    task = example.get("task", "")
    try:
      labels = get_task(task).step_labels
    except ValueError:
      labels = None
    if labels is None:
      raise ConfigError(f"method=oracle needs a task with a step checker (task.name='register'); "
                        f"the {task!r} examples have none.")
    ends = np.flatnonzero(step_end[b])
    judged = labels(text, example)
    for end, ok in zip(ends, judged):
      out[b, end] = float(ok)
  return out
