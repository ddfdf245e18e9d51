"""Train state: frozen pytrees of parameters and optimizer states, plus the optimizers.

The policy, the PRM and the value model are each a `ModelState` (params + optax state); the
reference is a bare parameter pytree that is never updated. Everything is a pytree of arrays, so
one Orbax call saves it and one `jax.jit` with shardings places it.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from prl_jax.algorithms.recipes import Recipe
from prl_jax.run.context import RunContext, initial_policy_params


@flax.struct.dataclass
class ModelState:
  """Parameters and optimizer state of one trained model."""

  params: Any
  opt_state: Any


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit for bit.

  Attributes:
    step: completed RL (or SFT) steps, int32 scalar.
    policy: the trained policy.
    ref_params: the frozen reference pi_ref (None when no method needs it).
    prm: the process reward model (PRIME, rePIRL) or None.
    value: the PPO critic (backbone + scalar head) or None.
    rng: raw key data (uint32), so the state is a plain array pytree that Orbax can store.
  """

  step: jax.Array
  policy: ModelState
  ref_params: Any
  prm: ModelState | None
  value: ModelState | None
  rng: jax.Array


def learning_rate_schedule(lr: float, schedule: str, warmup_steps: int, total_steps: int):
  """Linear warm-up to `lr`, then constant, cosine or linear decay to 0 at `total_steps`."""
  decay_steps = max(total_steps - warmup_steps, 1)
  if schedule == "constant":
    after = optax.constant_schedule(lr)
  elif schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps)
  elif schedule == "linear":
    after = optax.linear_schedule(lr, 0.0, decay_steps)
  else:
    raise ValueError(f"optim.schedule={schedule!r}; choose constant, cosine or linear.")
  if warmup_steps <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after],
                              [warmup_steps])


def adamw(lr: float, *, grad_clip: float, weight_decay: float = 0.0, b1: float = 0.9,
          b2: float = 0.999, schedule: str = "constant", warmup_steps: int = 0,
          total_steps: int = 1, updates_per_step: int = 1) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW (clip <= 0 disables clipping).

  The schedule counts steps of `updates_per_step` optimizer updates each: the rate of update u
  is schedule(u // updates_per_step), so warm-up and decay are in RL steps whatever the number
  of epochs and mini-batches per step (as verl steps its scheduler once per RL step).
  """
  if updates_per_step < 1:
    raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}.")
  by_step = learning_rate_schedule(lr, schedule, warmup_steps, total_steps)
  sched = by_step if updates_per_step == 1 else (lambda count: by_step(count // updates_per_step))
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  parts.append(optax.adamw(sched, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


def key_data(key: jax.Array) -> jax.Array:
  """Raw uint32 data of a typed PRNG key (what the state stores)."""
  return jax.random.key_data(key)


def wrap_key(data: jax.Array) -> jax.Array:
  return jax.random.wrap_key_data(data)


def value_head_init(hidden_size: int) -> dict:
  """Scalar value head V(h) = h w + b, zero-initialised so PPO starts from a neutral critic."""
  return {"kernel": jnp.zeros((hidden_size,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def optimizers(config: ml_collections.ConfigDict, updates_per_step: tuple[int, int, int] = (1, 1, 1)):
  """(policy, PRM, value) optimizers of a run: AdamW with the optim.* schedule and clipping.

  `updates_per_step`: how many optimizer updates each model makes per RL step (epochs x
  mini-batches), so that the schedule advances once per RL step. The optimizer states' structure
  does not depend on it.
  """
  o = config.optim
  common = dict(b1=o.b1, b2=o.b2, schedule=o.schedule, warmup_steps=o.warmup_steps,
                total_steps=config.train.steps)
  # The PRM may decay differently (rePIRL's official RM: 0 beside the actor's 0.01); < 0: as
  # the policy.
  prm_decay = o.prm_weight_decay if o.prm_weight_decay >= 0 else o.weight_decay
  policy_k, prm_k, value_k = updates_per_step
  return (adamw(o.lr, grad_clip=o.grad_clip, weight_decay=o.weight_decay,
                updates_per_step=policy_k, **common),
          adamw(o.prm_lr, grad_clip=o.prm_grad_clip, weight_decay=prm_decay,
                updates_per_step=prm_k, **common),
          adamw(o.value_lr, grad_clip=o.grad_clip, weight_decay=o.weight_decay,
                updates_per_step=value_k, **common))


def applied_learning_rates(config: ml_collections.ConfigDict, state: TrainState) -> dict:
  """optim/lr (and optim/prm_lr, optim/value_lr when trained): the learning rate of the RL step
  `state` has just completed, the schedule at (state.step - 1) (`optimizers` advances every
  schedule once per RL step, whatever the number of updates in it)."""
  o = config.optim
  step = max(int(jax.device_get(state.step)) - 1, 0)
  rates = {}
  for name, lr, model in (("optim/lr", o.lr, state.policy), ("optim/prm_lr", o.prm_lr, state.prm),
                          ("optim/value_lr", o.value_lr, state.value)):
    if model is None:
      continue
    schedule = learning_rate_schedule(lr, o.schedule, o.warmup_steps, config.train.steps)
    rates[name] = float(schedule(step))
  return rates


def needs_reference(config: ml_collections.ConfigDict, recipe: Recipe) -> bool:
  """Whether the run holds a frozen reference: the recipe asks for one (in the configured mode
  of the method) or the policy loss has a KL term."""
  needs = recipe.needs_ref
  if callable(needs):
    needs = needs(ml_collections.FrozenConfigDict(config.algo))
  return bool(needs) or config.algo.loss.kl_coef != 0.0


def init_state(ctx: RunContext, recipe: Recipe) -> TrainState:
  """Policy from `init_from` / HF / random; the reference starts as a copy of it, and so does the
  PRM unless its recipe initialises it (`PrmTraining.init`, e.g. rePIRL's reward head)."""
  config = ctx.config
  tx_policy, tx_prm, tx_value = optimizers(config)
  params = initial_policy_params(ctx)
  copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # distinct buffers: donation-safe
  prm = value = None
  if recipe.prm is not None:
    if recipe.prm.init is None:
      prm_params = copy(params)
    else:  # split, not fold_in, so it differs from every step key fold_in(run key, step)
      key = jax.random.split(jax.random.key(config.seed))[1]
      prm_params = recipe.prm.init(ctx.model_cfg, ml_collections.FrozenConfigDict(config.algo),
                                   copy(params), key)
    prm = ModelState(prm_params, tx_prm.init(prm_params))
  if recipe.value:
    value_params = {"backbone": copy(params), "head": value_head_init(ctx.model_cfg.hidden_size)}
    value = ModelState(value_params, tx_value.init(value_params))
  needs_ref = needs_reference(config, recipe)
  return TrainState(step=jnp.zeros((), jnp.int32),
                    policy=ModelState(params, tx_policy.init(params)),
                    ref_params=copy(params) if needs_ref else None, prm=prm, value=value,
                    rng=key_data(jax.random.key(config.seed)))
