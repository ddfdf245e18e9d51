"""Where SFT demonstrations come from: the task's reference solutions, or a buggy demonstrator.

`task.demonstrator="solver"` trains on each example's `solution`. `"buggy"` (the register task
only) draws a fresh demonstration for every row from the demonstrator of
`prl_jax.data.register.demonstrate`, with the hidden bug types and rates of `task.register.*`, so
the SFT policy inherits its systematic errors -- the starting point of the process-reward lab.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data import register

DEMONSTRATORS = ("solver", "buggy")

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
