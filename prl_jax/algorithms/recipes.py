"""A method is a recipe: its token advantages, the models it needs, how a PRM it trains is updated
and in which steps it reads a response.

The training loop never branches on a method's name; it calls the recipe's hooks. A recipe's
`advantages(options, inputs)` is a pure function of arrays (jitted once by the loop), so adding a
method means adding one small file that registers a `Recipe` (`prl_jax.algorithms.registry` finds
it). This module imports nothing of its own package: method files import it, never the reverse.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax


@flax.struct.dataclass
class RLInputs:
  """Everything an advantage computation may read, for B = P*n responses (groups contiguous).

  Arrays the method does not use are zeros (`prm_score` is None). `prm_token` is the per-token
  output of the PRM trained during the run (log pi_phi(y_t) for an implicit PRM, r_phi(y_t) for a
  reward head), read with the cadence of `PrmTraining.refresh`; `prm_score` is a frozen PRM's
  solution score of each response (ER-PRM); `step_rewards` the task's step checker's labels on
  the step ends (1 right, 0 wrong; the oracle control, `Recipe.step_checker`); `prm_steps` the
  frozen PRM's step scores on the step ends (for its diagnostics; None when the PRM splits steps
  otherwise than the loop).
  """

  outcome: jax.Array  # [B] in [0, 1]
  mask: jax.Array  # [B, N] float
  old_logp: jax.Array  # [B, N]
  ref_logp: jax.Array  # [B, N]
  prm_token: jax.Array  # [B, N]
  values: jax.Array  # [B, N] critic values (PPO)
  step_end: jax.Array  # [B, N] bool
  group_size: int = flax.struct.field(pytree_node=False)
  prm_score: jax.Array | None = None  # [B]
  step_rewards: jax.Array | None = None  # [B, N]
  prm_steps: jax.Array | None = None  # [B, N]


@flax.struct.dataclass
class Advantages:
  """What a recipe's advantage function returns.

  Attributes:
    token: [B, N] token advantages for the policy update.
    metrics: scalar diagnostics, logged under `adv/` unless already namespaced.
    value_target: [B, N] regression target of a critic (PPO's GAE returns), None without one.
    process_reward: [B, N] the method's per-token process reward (None without one), for the
      step-level diagnostics of the loop (`prl_jax.train.step_diagnostics`, prm/step_auroc).
  """

  token: jax.Array
  metrics: dict
  value_target: jax.Array | None = None
  process_reward: jax.Array | None = None


@dataclasses.dataclass
class PrmInputs:
  """What a PRM trained during the run may read to build its batch, for B = P*n rollouts.

  Arrays are placed on the mesh; `pack` turns host token lists into a placed sequence batch of
  the run's shapes, and `ref_logprobs` / `prm_token_of` score any such batch (the latter with the
  PRM before this step's update, through `PrmTraining.score`). `prm_token` is that PRM's output
  on the rollouts, computed on first read (a recipe that never reads it costs no forward).
  """

  seq: Any  # the rollouts as a SequenceBatch
  outcome: jax.Array  # [B]
  old_logp: jax.Array  # [B, N]
  ref_logp: jax.Array  # [B, N]
  examples: list[dict]  # one per rollout (groups contiguous)
  prompt_ids: list[list[int]]  # one per rollout
  group_size: int
  micro_rows: int  # rows per micro-batch of the update: the batch must be a multiple of it
  mini_rows: int  # rows per optimizer step (PrmTraining.mini_batch_rows); 0: the whole batch
  tokenizer: Any
  max_new_tokens: int
  pack: Callable[[list[list[int]], list[list[int]]], Any]
  ref_logprobs: Callable[[Any], jax.Array]
  prm_token_of: Callable[[Any], jax.Array]

  @functools.cached_property
  def prm_token(self) -> jax.Array:
    """[B, N] the PRM's per-token output on the rollouts, before this step's update."""
    return self.prm_token_of(self.seq)


def policy_mini_batch(options, config) -> int:
  """The policy's mini-batch (`train.mini_batch_size`; 0: the whole batch)."""
  return config.train.mini_batch_size


@dataclasses.dataclass(frozen=True)
class PrmTraining:
  """A PRM trained during the run, updated every RL step before the advantages are computed.

  The PRM batch is walked in consecutive mini-batches of `mini_batch_rows` rows, one optimizer
  step each (micro-batches accumulated inside each). The advantages read the PRM's per-token
  output `RLInputs.prm_token` on the rollouts with one of two cadences (PRIME's `dp_prime.py`):
  single forward, the rollouts split into as many mini-batches as the PRM batch and mini-batch k
  scored by the PRM after k-1 of this step's updates (meaningful when the PRM batch rows are the
  rollouts); or, with `refresh`, all updates first, then every rollout re-scored.

  Attributes:
    loss: (model_cfg, options, chunk, group) -> loss_fn(params, batch) -> (sum, (count, metric
      sums)), so micro-batches add up (`prl_jax.run.updates`). `group` > 1 (only with
      `loss_scores`, whose rows are the rollouts) says every group of that many consecutive rows
      shares one prompt and stays whole in every micro-batch, so the loss may run it once.
    batch: (options, PrmInputs) -> (the update's batch, scalar metrics); its rows are a multiple
      of `PrmInputs.mini_rows` (or of `micro_rows` when that is 0, one step over the batch).
    refresh: (options) -> True: the advantages read the PRM after all its updates (PRIME's
      double forward, rePIRL); False: single forward (above).
    loss_scores: True: `loss` returns (sum, (count, metric sums, [rows, N] `score`'s output on
      its batch rows)) and the batch rows are the rollouts, in order. A single forward then
      reads the scores from the update's own forward (the same function of the same rows and
      parameters) instead of running `score` again (`prl_jax.run.updates.RowsLossFn`).
    score: (model_cfg, options, chunk) -> fn(params, seq: SequenceBatch) -> [B, N] the PRM's
      per-token output; None: the response log-probs (an implicit PRM's log pi_phi).
    mini_batch_rows: (options, config) -> rows per PRM optimizer step; 0: the whole PRM batch.
    init: (model_cfg, options, policy_params, key) -> the PRM's initial parameters; None: a
      copy of the policy's (an implicit PRM). A reward head returns {"backbone", "head"}.
  """

  loss: Callable[[Any, Any, int], Callable]
  batch: Callable[[Any, PrmInputs], tuple[Any, dict]]
  refresh: Callable[[Any], bool] = lambda options: False
  loss_scores: bool = False
  score: Callable[[Any, Any, int], Callable] | None = None
  mini_batch_rows: Callable[[Any, Any], int] = policy_mini_batch
  init: Callable[[Any, Any, Any, Any], Any] | None = None


def configured_steps(options) -> str:
  """The step mode of `algo.steps.mode` (every method that does not fix its own)."""
  return options.steps.mode


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a method composes.

  Attributes:
    name: the `method` config string.
    advantages: (options, RLInputs) -> Advantages.
    needs_ref: computes reference log-probs (KL terms, implicit rewards, PRL's KL-to-go); a
      bool or (options) -> bool when a mode of the method decides (rePIRL's reward head has none).
    prm: a PRM trained during the run (PRIME's implicit PRM on outcome labels, rePIRL's IRL
      reward), its loss and batch; None for methods without one.
    frozen_prm: a PRM trained beforehand (algo.erprm.prm_dir) scores every response into
      `RLInputs.prm_score`; it is never updated (ER-PRM's RAFT).
    value: trains a PPO critic on `Advantages.value_target` and passes its values to `advantages`.
    policy_loss: "ppo" (clipped surrogate) or "nll" (RAFT: likelihood of the selected samples).
    min_group_size: smallest rollout.n the advantage is defined for.
    step_checker: the task's step checker labels every step of every response into
      `RLInputs.step_rewards` (the oracle; no learned method reads it).
    step_mode: (options) -> the `prl_jax.ops.steps.step_end_mask` mode of `RLInputs.step_end`.
    check: (options) -> a message when the method's options are invalid, else None.
    unit_outcome: the method reads the outcome reward as a probability in [0, 1] (PRIME's CE
      PRM loss, ER-PRM); a task.reward_fn outcome outside it stops the run with a message.
    reads_old_logp: the advantages or the PRM batch read the old policy's log-probs (PRL's
      KL-to-go, rePIRL's sampling weights), so they are computed before the update even where
      the loss alone would not need them (`train.old_logp_source="auto"`).
  """

  name: str
  advantages: Callable[[Any, RLInputs], Advantages]
  needs_ref: bool | Callable[[Any], bool] = False
  prm: PrmTraining | None = None
  frozen_prm: bool = False
  value: bool = False
  policy_loss: str = "ppo"
  min_group_size: int = 1
  step_checker: bool = False
  step_mode: Callable[[Any], str] = configured_steps
  check: Callable[[Any], str | None] = lambda options: None
  unit_outcome: bool = False
  reads_old_logp: bool = False


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
