"""How well a process reward finds the first wrong step, measured during training.

    prm/step_auroc = P(score of a right step > score of the first wrong step)   (ties 1/2)

over the steps of this batch's responses that a task's step checker can judge: in each response,
the lines before its first wrong line are the positives and the first wrong line the negative;
lines after it are left out (whether they count as right depends on what a PRM is asked to
predict). A line's score is the sum of the method's per-token process reward over the line's
tokens (`Advantages.process_reward`: beta * log-ratio for PRIME, r_phi for rePIRL's reward
head, the checker's labels for the oracle), so every method is judged on the same lines whatever
its own step granularity. 0.5 is chance; None when the batch has no wrong line or no right one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prl_jax.eval.step_auc import first_error_auc


def line_scores(process_reward: np.ndarray, tokens: np.ndarray, mask: np.ndarray,
                newline_ids: Sequence[int]) -> list[list[float]]:
  """Per row, the sum of `process_reward` over each line: a line ends at a newline token or at
  the row's last valid token."""
  out = []
  for reward, row, valid in zip(process_reward, tokens, mask > 0):
    scores, total = [], 0.0
    last = int(np.flatnonzero(valid)[-1]) if valid.any() else -1
    for t in range(last + 1):
      total += float(reward[t])
      if row[t] in newline_ids or t == last:
        scores.append(total)
        total = 0.0
    out.append(scores)
  return out


def step_auroc(process_reward: np.ndarray, tokens: np.ndarray, mask: np.ndarray,
               newline_ids: Sequence[int], texts: Sequence[str],
               examples: Sequence[dict]) -> float | None:
  """`prm/step_auroc` of one batch (see the module docstring); None without a step checker."""
  return first_error_auc(line_scores(process_reward, tokens, mask, newline_ids), texts, examples)
