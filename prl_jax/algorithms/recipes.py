"""A method is a recipe: which models it trains and how its token advantages are computed.

The training loop never branches on a method's name; it asks the recipe. A recipe's
`advantages(options, inputs)` is a pure function of arrays (jitted once by the loop), so adding a
method means adding one small file that registers a `Recipe` (`prl_jax.algorithms.registry` finds
it). This module imports nothing of its own package: method files import it, never the reverse.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax


@flax.struct.dataclass
class RLInputs:
  """Everything an advantage computation may read, for B = P*n responses (groups contiguous).

  Arrays the method does not use are zeros (`prm_score` is None). `prm_logp` is log pi_phi(y_t)
  of the implicit PRM; `prm_score` is a frozen PRM's solution score of each response (ER-PRM).
  """

  outcome: jax.Array  # [B] in [0, 1]
  mask: jax.Array  # [B, N] float
  old_logp: jax.Array  # [B, N]
  ref_logp: jax.Array  # [B, N]
  prm_logp: jax.Array  # [B, N]
  values: jax.Array  # [B, N] critic values (PPO)
  step_end: jax.Array  # [B, N] bool
  group_size: int = flax.struct.field(pytree_node=False)
  prm_score: jax.Array | None = None  # [B]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a method composes.

  Attributes:
    name: the `method` config string.
    advantages: (options, RLInputs) -> ([B, N] token advantages, dict of scalar metrics).
    needs_ref: computes reference log-probs (KL terms, implicit rewards, PRL's KL-to-go).
    prm: None, "prime_ce" (PRIME's implicit PRM on outcome labels) or "irl" (rePIRL): a PRM
      trained during the run.
    frozen_prm: a PRM trained beforehand (algo.erprm.prm_dir) scores every response into
      `RLInputs.prm_score`; it is never updated (ER-PRM's RAFT).
    value: trains a PPO critic and passes its values to `advantages`.
    policy_loss: "ppo" (clipped surrogate) or "nll" (RAFT: likelihood of the selected samples).
    min_group_size: smallest rollout.n the advantage is defined for.
  """

  name: str
  advantages: Callable[[Any, RLInputs], tuple[jax.Array, dict]]
  needs_ref: bool = False
  prm: str | None = None
  frozen_prm: bool = False
  value: bool = False
  policy_loss: str = "ppo"
  min_group_size: int = 1


_RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
  if recipe.name in _RECIPES:
    raise ValueError(f"Method {recipe.name!r} is registered twice.")
  _RECIPES[recipe.name] = recipe
  return recipe


def registered() -> dict[str, Recipe]:
  """Name -> recipe of every method registered so far (`prl_jax.algorithms.registry` imports them
  all; look methods up with its `get_recipe`)."""
  return dict(_RECIPES)
