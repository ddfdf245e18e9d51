"""Outcome-reward baselines: RLOO, GRPO, Dr.GRPO, REINFORCE, PPO (critic + GAE) and RAFT.

Each turns the outcome r_o of every response into a token advantage; none needs a reference
model unless a KL loss is configured (docs/algorithms.md: the baselines).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import Advantages, Recipe, RLInputs, register
from prl_jax.ops.returns import masked_whiten
from prl_jax.ops.steps import last_token_mask


def _broadcast(sequence_advantage, mask):
  """A_t = A_b on every valid token (outcome methods give one value per response)."""
  return sequence_advantage[:, None] * mask


def rloo_advantages(options, x: RLInputs) -> Advantages:
  """RLOO: A_i = r_i - mean_{j != i} r_j, constant over the response; with `algo.rloo.whiten`
  then masked_whiten over the batch's valid tokens, as PRIME's RLOO baseline (the PRIME trainer
  with the PRM off whitens its returns)."""
  token = _broadcast(adv.rloo(x.outcome, x.group_size), x.mask)
  if options.rloo.whiten:
    token = masked_whiten(token, x.mask) * x.mask
  return Advantages(token, {})


def grpo_advantages(options, x: RLInputs) -> Advantages:
  """GRPO: (r - mean_g) / (std_g + 1e-6), std with ddof=1."""
  return Advantages(_broadcast(adv.grpo(x.outcome, x.group_size), x.mask), {})


def drgrpo_advantages(options, x: RLInputs) -> Advantages:
  """Dr.GRPO: r - mean_g, no division by the group std."""
  return Advantages(_broadcast(adv.grpo(x.outcome, x.group_size, scale_by_std=False), x.mask),
                    {})


def reinforce_advantages(options, x: RLInputs) -> Advantages:
  """REINFORCE with a batch-mean baseline: A = r - mean_batch r."""
  baseline = adv.reinforce(x.outcome, x.group_size, baseline="batch")
  return Advantages(_broadcast(baseline, x.mask), {})


def ppo_advantages(options, x: RLInputs) -> Advantages:
  """PPO: reward r_o on the last valid token, GAE(gamma, lambda) against the critic, whitened.

  The GAE returns are the critic's regression target (`Advantages.value_target`).
  """
  rewards = x.outcome[:, None] * last_token_mask(x.mask)
  advantages, returns = adv.gae(rewards, x.values, x.mask, gamma=options.gamma, lam=options.lam)
  return Advantages(masked_whiten(advantages, x.mask) * x.mask, {}, value_target=returns)


def best_in_group(scores: jax.Array, group_size: int, keep: int) -> jax.Array:
  """[B] bool: the `keep` highest scores of each group of `group_size` (ties: the earlier one)."""
  grouped = scores.reshape(-1, group_size)
  # Stable descending order: among equal scores the earlier sample wins.
  rank = jnp.argsort(jnp.argsort(-grouped, axis=1, stable=True), axis=1)
  return (rank < keep).reshape(-1)


def raft_advantages(options, x: RLInputs) -> Advantages:
  """RAFT: weight 1 on the best `keep` responses of each prompt by outcome (ties: first), else 0.

  Only correct responses are kept (rejection sampling); the policy loss is then plain SFT on them.
  """
  keep = best_in_group(x.outcome, x.group_size, options.raft.keep_per_prompt) & (x.outcome > 0)
  return Advantages(_broadcast(keep.astype(jnp.float32), x.mask),
                    {"raft/kept_fraction": jnp.mean(keep)})


register(Recipe("rloo", rloo_advantages, min_group_size=2))
register(Recipe("grpo", grpo_advantages, min_group_size=1))
register(Recipe("drgrpo", drgrpo_advantages, min_group_size=1))
register(Recipe("reinforce", reinforce_advantages))
register(Recipe("ppo", ppo_advantages, value=True))
register(Recipe("raft", raft_advantages, policy_loss="nll"))
