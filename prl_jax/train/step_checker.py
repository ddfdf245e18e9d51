"""Step rewards from a task's step checker, on the step ends of each response (the oracle method).

    step_rewards[b, e_k] = 1 if step k of response b is right, else 0

where e_k is the k-th step end of row b (`prl_jax.ops.steps.step_end_mask`, one step per line) and
step k is the k-th line the task's `step_labels` judges. A response with more step ends than
judged lines (e.g. a trailing empty line) gets 0 on the extra ones. A step scorer in
algo.steps.score_fn replaces the checker (`prl_jax.prm.step_fn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data.registry import get_task
from prl_jax.prm.step_fn import load_step_fn, place_on_step_ends, step_score_lists


def checker_step_rewards(texts: Sequence[str], examples: Sequence[dict],
                         step_end: np.ndarray, steps_options: Any = None) -> np.ndarray:
  """[B, N] float32 step rewards of `texts` (one per row of `step_end` [B, N]).

  With `steps_options.score_fn` set (algo.steps), the scores of that function
  (`prl_jax.prm.step_fn`) instead of the task's step checker.
  """
  if steps_options is not None and steps_options.get("score_fn"):
    fn = load_step_fn(steps_options.score_fn)
    scores = step_score_lists(fn, texts, examples, steps_options.delimiter)
    return place_on_step_ends(scores, step_end)
  out = np.zeros(step_end.shape, np.float32)
  for b, (text, example) in enumerate(zip(texts, examples)):
    task = example.get("task", "")
    try:
      labels = get_task(task).step_labels
    except ValueError:
      labels = None
    if labels is None:
      raise ConfigError(f"method=oracle needs a task with a step checker (task.name='register') "
                        f"or a step scorer (algo.steps.score_fn=path.py:name); the {task!r} "
                        "examples have no checker.")
    ends = np.flatnonzero(step_end[b])
    judged = labels(text, example)
    for end, ok in zip(ends, judged):
      out[b, end] = float(ok)
  return out
