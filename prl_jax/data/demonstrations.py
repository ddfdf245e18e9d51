"""Where SFT demonstrations come from: the task's reference solutions, or a buggy demonstrator.

`task.demonstrator="solver"` trains on each example's `solution`. `"buggy"` (the register task
only) draws a fresh demonstration for every row from the demonstrator of
`prl_jax.data.register.demonstrate`, with the hidden bug types and rates of `task.register.*`, so
the SFT policy inherits its systematic errors -- the starting point of the process-reward lab.
`"uniform"` (the countdown task only) draws each row's demonstration uniformly among all of the
problem's distinct solutions (`prl_jax.data.countdown_solutions`), so the SFT policy spreads its
probability over many ways to the target -- the starting point of the countdown sub-lab.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data import countdown, countdown_solutions, register

DEMONSTRATORS = ("solver", "buggy", "uniform")

Demonstrator = Callable[[dict, np.random.Generator], dict]


def demonstrator(task_config) -> Demonstrator:
  """`demo(example, rng) -> example` whose `solution` is the demonstration to train on.

  The buggy demonstrator draws one seed from `rng` per row, so the demonstrations follow the
  SFT's data generator (saved with its checkpoints: resume stays exact).
  """
  kind = task_config.demonstrator
  if kind not in DEMONSTRATORS:
    raise ConfigError(f"task.demonstrator={kind!r}; choose one of {DEMONSTRATORS}.")
  if kind == "solver":
    return lambda example, rng: example
  if kind == "uniform":
    return _uniform(task_config)
  if task_config.name != register.TASK:
    raise ConfigError(f"task.demonstrator='buggy' is the register task's demonstrator; "
                      f"task.name is {task_config.name!r} (use 'solver').")
  r = task_config.register
  bugs = register.configured_bugs(r)

  def demo(example: dict, rng: np.random.Generator) -> dict:
    draw = random.Random(int(rng.integers(2**63)))
    text = register.demonstrate(example["question"], draw, bugs, bug_rate=r.bug_rate,
                                slip_rate=r.slip_rate, rule=r.rule)
    return {**example, "solution": text}

  return demo


def _uniform(task_config) -> Demonstrator:
  """Countdown's uniform demonstrator; one seed drawn from `rng` per row, as the buggy one."""
  if task_config.name != countdown.TASK:
    raise ConfigError(f"task.demonstrator='uniform' is the countdown task's demonstrator; "
                      f"task.name is {task_config.name!r} (use 'solver').")

  def demo(example: dict, rng: np.random.Generator) -> dict:
    draw = random.Random(int(rng.integers(2**63)))
    return {**example, "solution": countdown_solutions.uniform_demonstration(example["question"],
                                                                             draw)}

  return demo
