"""The losses of the trained models, wired to the model: policy (PPO / RAFT), SFT and the PPO critic
(a PRM trained during a run has its loss in its recipe, e.g. `prl_jax.algorithms.prime`).

Each returns (numerator, (denominator, metric sums)) for `prl_jax.run.updates`, so micro-batching
cannot change the math.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from prl_jax.algorithms import losses
from prl_jax.models.config import ModelConfig
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import Transformer
from prl_jax.run.batch import PolicyBatch, SequenceBatch
from prl_jax.run.updates import LossFn


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  """Static options of the policy loss (a hashable copy of config.algo.loss)."""

  kind: str = "ppo"  # ppo: clipped surrogate; nll: advantage-weighted likelihood (RAFT)
  clip_low: float = 0.2
  clip_high: float = 0.2
  dual_clip: float | None = None
  agg: str = "token-mean"
  entropy_coef: float = 0.0
  kl_coef: float = 0.0
  kl_kind: str = "k3"
  chunk: int = 0
  prompt_group: int = 1  # rows per prompt of a batch whose groups stay whole (response_logprobs)
  # log pi_old = stop_gradient(log pi_theta) of this forward, not batch.old_logp: the update's
  # one optimizer step runs at the sampling parameters (train.rollouts.resolve_old_logp).
  old_from_update: bool = False


def policy_loss_fn(model_cfg: ModelConfig, loss_cfg: PolicyLossConfig) -> LossFn:
  """PPO clipped surrogate (+ entropy bonus, + KL to the reference) or RAFT's weighted NLL."""

  def loss(params, batch: PolicyBatch):
    seq = batch.seq
    need_entropy = loss_cfg.entropy_coef != 0.0
    logp, entropy = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask,
                                      seq.prompt_len, loss_cfg.chunk, with_entropy=True,
                                      group=loss_cfg.prompt_group)
    mask = seq.response_mask
    if loss_cfg.kind == "nll":
      num = -jnp.sum(batch.advantages * logp * mask)
      kept = (batch.advantages != 0) * mask
      den = jnp.sum(kept)
      # Entropy of the tokens trained on: divided by `den` downstream, a token mean like PPO's.
      return num, (den, {"nll": num, "entropy": jnp.sum(entropy * kept)})
    clip = dict(clip_low=loss_cfg.clip_low, clip_high=loss_cfg.clip_high,
                dual_clip=loss_cfg.dual_clip)
    old_logp = jax.lax.stop_gradient(logp) if loss_cfg.old_from_update else batch.old_logp
    num, den = losses.ppo_clip(logp, old_logp, batch.advantages, mask, agg=loss_cfg.agg, **clip)
    # Diagnostics are token means; rescale them so the shared division by `den` recovers them.
    stats = losses.ppo_clip_stats(logp, old_logp, batch.advantages, mask, **clip)
    metrics = {"pg_loss": num, **{k: n / jnp.maximum(d, 1.0) * den for k, (n, d) in stats.items()}}
    # The entropy is computed with the log-probs anyway, so it is always logged (collapse shows).
    ent_num, _ = losses.agg_loss(entropy, mask, loss_cfg.agg)
    metrics["entropy"] = ent_num
    if need_entropy:
      num = num - loss_cfg.entropy_coef * ent_num
    if loss_cfg.kl_coef != 0.0:
      kl_num, _ = losses.agg_loss(losses.kl(logp, batch.ref_logp, loss_cfg.kl_kind), mask,
                                   loss_cfg.agg)
      num = num + loss_cfg.kl_coef * kl_num
      metrics["kl"] = kl_num
    return num, (den, metrics)

  return loss


def sft_loss_fn(model_cfg: ModelConfig, chunk: int = 0) -> LossFn:
  """Token-mean negative log-likelihood of the response tokens: -sum m log p / sum m."""

  def loss(params, seq: SequenceBatch):
    logp = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask, seq.prompt_len,
                             chunk)
    num = -jnp.sum(logp * seq.response_mask)
    return num, (jnp.sum(seq.response_mask), {})

  return loss


def value_forward(model_cfg: ModelConfig, params, seq: SequenceBatch):
  """Critic values V_t [B, N] at the positions that predict each response token."""
  hidden, _ = Transformer(model_cfg).apply(params["backbone"], seq.tokens,
                                           token_mask=seq.token_mask, return_hidden=True)
  hidden = hidden[:, seq.prompt_len - 1:-1].astype(jnp.float32)
  return hidden @ params["head"]["kernel"] + params["head"]["bias"]


def value_loss_fn(model_cfg: ModelConfig, value_clip: float = 0.0) -> LossFn:
  """Squared error to the GAE returns, token mean: 0.5 sum m (V - R)^2 / sum m.

  With value_clip c > 0 (verl's critic `cliprange_value`, 0.5), the clipped form of PPO's critic:
  0.5 sum m max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) / sum m, with V_old the values
  at rollout time. The batch is (seq, returns, old values).
  """

  def loss(params, batch):
    seq, returns, old_values = batch
    values = value_forward(model_cfg, params, seq)
    error = jnp.square(values - returns)
    if value_clip > 0:
      clipped = old_values + jnp.clip(values - old_values, -value_clip, value_clip)
      error = jnp.maximum(error, jnp.square(clipped - returns))
    num = 0.5 * jnp.sum(error * seq.response_mask)
    return num, (jnp.sum(seq.response_mask), {})

  return loss
