"""The oracle process reward: the task's own step checker as the PRM (the lab's positive control).

Step reward r_k = 1 if step k is right, 0 if wrong (`Task.step_labels`, e.g. the register task's
line checker), on the step's last token (`RLInputs.step_rewards`, placed by the loop). From there
the advantage is PRIME's code mode, so the two differ only in where the process reward comes from:
scores divided by the batch's largest |return-to-go|, an RLOO baseline per source (outcome and
process), returns added 1:1 (`algo.oracle.coef` = 1), whitened over the batch
(`algorithms.advantages.prime`).

No learned method sees the checker. If the oracle does not learn clearly faster than outcome-only
RLOO, the task leaves no room for process rewards and no PRM method can be judged on it.
"""

from __future__ import annotations

import jax.numpy as jnp

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import Advantages, Recipe, RLInputs, register
from prl_jax.rewards import implicit


def oracle_advantages(options, x: RLInputs) -> Advantages:
  """A = whiten(RLOO(R_outcome) + c RLOO(R_process)), R_process from the checker's step labels.

  c = `algo.oracle.coef` scales the normalised scores (RLOO and the return-to-go are linear in
  them): 1 is PRIME's code mode, where a line of a K-line chain is worth ~1/K of a success.
  """
  scores = options.oracle.coef * implicit.normalize_scores(x.step_rewards * x.mask, x.mask)
  token_adv = adv.prime(scores, x.outcome, x.mask, x.group_size, mode="code", gamma=options.gamma,
                        base="rloo")
  steps = jnp.sum(x.step_end * x.mask)
  right = jnp.sum(x.step_rewards * x.step_end * x.mask)
  return Advantages(token_adv, {"oracle/step_accuracy": right / jnp.maximum(steps, 1.0)},
                    process_reward=x.step_rewards * x.mask)


def _check(options) -> str | None:
  if not options.oracle.coef >= 0:
    return f"algo.oracle.coef={options.oracle.coef} must be >= 0 (1: PRIME's 1:1 weighting)."
  if options.steps.delimiter != "\n":
    return ("the step checker reads one step per line: leave algo.steps.delimiter='\\n' (got "
            f"{options.steps.delimiter!r}).")
  return None


register(Recipe("oracle", oracle_advantages, min_group_size=2, step_checker=True,
                step_mode=lambda options: "delimiter", check=_check))
