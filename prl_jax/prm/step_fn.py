"""A step scorer named in the config (`algo.steps.score_fn=path.py:name`): a rule-based or external
PRM as a Python function, in place of a PRM trained here.

    score_fn(response: str, example: dict, steps: list[str]) -> one float per step

`steps` is the response split as the step rewards are placed (`prl_jax.prm.labels.split_steps`
with algo.steps.delimiter, each step keeping its delimiter, so "".join(steps) == response);
`example` is the prompt's example (question, answer, task, and for verl/TRL rows their columns).
The scores reach two methods:

- method=oracle: as the per-step rewards on each step's last token (`RLInputs.step_rewards`,
  instead of the task's step checker), turned into advantages as PRIME's code mode does;
- method=erprm: aggregated with algo.erprm.agg into each response's solution score
  (`RLInputs.prm_score`, instead of a PRM in algo.erprm.prm_dir), which picks RAFT's samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from prl_jax.prm.labels import split_steps
from prl_jax.rewards.plugins import RewardFnError, load_function

KEY = "algo.steps.score_fn"
StepFn = Callable[[str, Mapping[str, Any], list[str]], Sequence[float]]


@functools.lru_cache(maxsize=8)  # read once per run, not once per step
def load_step_fn(spec: str) -> StepFn:
  """The function of `algo.steps.score_fn` ("path.py:name"); RewardFnError names the key."""
  return load_function(spec, KEY)


def step_score_lists(fn: StepFn, texts: Sequence[str], examples: Sequence[Mapping[str, Any]],
                     delimiter: str = "\n") -> list[list[float]]:
  """[B][K_b] the function's scores of every step of every response."""
  out = []
  for i, (text, example) in enumerate(zip(texts, examples)):
    steps = split_steps(text, 0, delimiter)
    scores = [float(s) for s in fn(text, example, list(steps))]
    if len(scores) != len(steps):
      raise RewardFnError(f"{KEY}: returned {len(scores)} scores for the {len(steps)} steps of "
                          f"response {i}; return one float per step (steps split by "
                          f"algo.steps.delimiter={delimiter!r}).")
    out.append(scores)
  return out


def place_on_step_ends(score_lists: Sequence[Sequence[float]], step_end: np.ndarray) -> np.ndarray:
  """[B, N] float32: score k of row b on row b's k-th step end, 0 elsewhere.

  A row with more step ends than scores (e.g. the EOS after a closing newline) gets 0 on the
  extra ends; a step beyond the row's ends (a response cut short) has no token to sit on.
  """
  out = np.zeros(step_end.shape, np.float32)
  for b, scores in enumerate(score_lists):
    ends = np.flatnonzero(step_end[b])
    for end, score in zip(ends, scores):
      out[b, end] = score
  return out
