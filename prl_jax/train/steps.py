"""Jitted, donated update steps: SFT, the PPO-style policy update, the PRM and value updates.

Every loss returns (numerator, (denominator, metric sums)); a mini-batch's gradient is
sum_micro grad(numerator) / sum_micro denominator. Splitting a batch into micro-batches therefore
changes nothing but memory: the same rule as verl's `agg_loss` and Tunix's GRPO loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from prl_jax.algorithms import losses
from prl_jax.models.config import ModelConfig
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import Transformer
from prl_jax.rewards import implicit, irl
from prl_jax.train.batch import PolicyBatch, SequenceBatch
from prl_jax.train.state import ModelState

LossFn = Callable[[Any, Any], tuple[jax.Array, tuple[jax.Array, dict]]]


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


def split_rows(tree, num_chunks: int):
  """[B, ...] leaves -> [num_chunks, B/num_chunks, ...], chunk j holding rows j, j+k, j+2k, ...

  Strided, not contiguous, because batches are sharded over devices by contiguous row blocks:
  a strided chunk takes B/(k R) rows from each of the R blocks, so every chunk stays spread
  over all devices and a scan over chunks needs no communication. (A contiguous chunk would sit
  on R/k devices; XLA then gathers it and every device computes the whole chunk.)
  """
  def split(x):
    if x.shape[0] % num_chunks:
      raise ValueError(f"Batch of {x.shape[0]} rows does not split into {num_chunks} chunks; "
                       "make train.mini_batch_size / micro_batch_size divide the batch.")
    return x.reshape(x.shape[0] // num_chunks, num_chunks, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree_util.tree_map(split, tree)


def merge_rows(tree):
  """The inverse of `split_rows`: [k, B/k, ...] -> [B, ...] in the original row order."""
  return jax.tree_util.tree_map(
      lambda x: x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def chunked_rows(fn: Callable[[Any], Any], batch, num_chunks: int):
  """fn(batch) computed `num_chunks` row chunks at a time (memory of one chunk), same result."""
  if num_chunks == 1:
    return fn(batch)
  return merge_rows(jax.lax.map(fn, split_rows(batch, num_chunks)))


def accumulate_gradients(loss_fn: LossFn, params, batch, num_micro: int):
  """Sum of numerator gradients, numerators, denominators and metric sums over micro-batches."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def micro(carry, micro_batch):
    (num, (den, metrics)), grads = grad_fn(params, micro_batch)
    return jax.tree_util.tree_map(jnp.add, carry, (grads, num, den, metrics)), None

  zero_metrics = jax.eval_shape(lambda: loss_fn(params, jax.tree_util.tree_map(
      lambda x: x[0], split_rows(batch, num_micro)))[1][1])
  init = (jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros(()), jnp.zeros(()),
          jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zero_metrics))
  if num_micro == 1:
    (num, (den, metrics)), grads = grad_fn(params, batch)
    return grads, num, den, metrics
  (grads, num, den, metrics), _ = jax.lax.scan(micro, init, split_rows(batch, num_micro))
  return grads, num, den, metrics


def minibatch_updates(state: ModelState, tx: optax.GradientTransformation, loss_fn: LossFn, batch,
                      num_minibatches: int, num_micro: int):
  """One optimizer step per mini-batch, in order; returns the new state and mean metrics."""

  def update(state, minibatch):
    grads, num, den, metric_sums = accumulate_gradients(loss_fn, state.params, minibatch,
                                                        num_micro)
    den = jnp.maximum(den, 1e-8)
    grads = jax.tree_util.tree_map(lambda g: g / den, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: v / den for k, v in metric_sums.items()}
    metrics.update(loss=num / den, grad_norm=optax.global_norm(grads))
    return ModelState(params=params, opt_state=opt_state), metrics

  state, metrics = jax.lax.scan(update, state, split_rows(batch, num_minibatches))
  return state, jax.tree_util.tree_map(jnp.mean, metrics)


def epoch_updates(state: ModelState, tx: optax.GradientTransformation, loss_fn: LossFn, batch, key,
                  num_epochs: int, num_minibatches: int, num_micro: int):
  """PPO's update phase: `num_epochs` passes over the batch, each in `num_minibatches` steps.

  Rows are shuffled before every pass (a fresh permutation from `key` per epoch) so mini-batches
  differ between epochs; with one pass over one mini-batch the order cannot matter and the batch
  is used as is. Metrics are means over all optimizer steps.
  """
  if num_epochs < 1:
    raise ValueError(f"train.ppo_epochs must be >= 1, got {num_epochs}.")
  if num_epochs == 1 and num_minibatches == 1:
    return minibatch_updates(state, tx, loss_fn, batch, 1, num_micro)
  rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
  all_metrics = []
  for epoch in range(num_epochs):
    order = jax.random.permutation(jax.random.fold_in(key, epoch), rows)
    shuffled = jax.tree_util.tree_map(lambda x: x[order], batch)
    state, metrics = minibatch_updates(state, tx, loss_fn, shuffled, num_minibatches, num_micro)
    all_metrics.append(metrics)
  return state, jax.tree_util.tree_map(lambda *m: jnp.mean(jnp.stack(m)), *all_metrics)


def policy_loss_fn(model_cfg: ModelConfig, loss_cfg: PolicyLossConfig) -> LossFn:
  """PPO clipped surrogate (+ entropy bonus, + KL to the reference) or RAFT's weighted NLL."""

  def loss(params, batch: PolicyBatch):
    seq = batch.seq
    need_entropy = loss_cfg.entropy_coef != 0.0
    logp, entropy = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask,
                                      seq.prompt_len, loss_cfg.chunk, with_entropy=True)
    mask = seq.response_mask
    if loss_cfg.kind == "nll":
      num = -jnp.sum(batch.advantages * logp * mask)
      den = jnp.sum((batch.advantages != 0) * mask)
      return num, (den, {"nll": num})
    clip = dict(clip_low=loss_cfg.clip_low, clip_high=loss_cfg.clip_high,
                dual_clip=loss_cfg.dual_clip)
    num, den = losses.ppo_clip(logp, batch.old_logp, batch.advantages, mask, agg=loss_cfg.agg,
                               **clip)
    # Diagnostics are token means; rescale them so the shared division by `den` recovers them.
    stats = losses.ppo_clip_stats(logp, batch.old_logp, batch.advantages, mask, **clip)
    metrics = {"pg_loss": num, **{k: n / jnp.maximum(d, 1.0) * den for k, (n, d) in stats.items()}}
    if need_entropy:
      ent_num, _ = losses.agg_loss(entropy, mask, loss_cfg.agg)
      num = num - loss_cfg.entropy_coef * ent_num
      metrics["entropy"] = ent_num
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


def prime_prm_loss_fn(model_cfg: ModelConfig, beta: float, chunk: int = 0) -> LossFn:
  """PRIME's implicit-PRM cross-entropy on outcome labels, mean over responses (section 3)."""

  def loss(params, batch):
    seq, ref_logp, outcome = batch
    logp = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask, seq.prompt_len,
                             chunk)
    total, count = implicit.prime_ce_loss(logp, ref_logp, seq.response_mask, outcome, beta)
    return total, (count, {})

  return loss


def irl_prm_loss_fn(model_cfg: ModelConfig, beta: float, chunk: int = 0) -> LossFn:
  """rePIRL's max-ent IRL objective as a sum over trajectories, so micro-batches add up.

      L(phi) = sum_b c_b R_phi(tau_b),   R_phi = beta sum_t log(pi_phi(y_t) / pi_ref(y_t))

  with the coefficients c_b of `rewards.irl.irl_coefficients` (-1/E for experts, the importance
  weights for samples, 0 for padding) computed before the update. The batch is
  (seq, ref_logp, coef, share): `share` sums to 1 over the batch, so the accumulated gradient is
  that of L itself.
  """

  def loss(params, batch):
    seq, ref, coef, share = batch
    logp = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask, seq.prompt_len, chunk)
    returns = irl.sequence_reward(beta * (logp - ref), seq.response_mask)
    return jnp.sum(coef * returns), (jnp.sum(share), {})

  return loss


def value_forward(model_cfg: ModelConfig, params, seq: SequenceBatch):
  """Critic values V_t [B, N] at the positions that predict each response token."""
  hidden, _ = Transformer(model_cfg).apply(params["backbone"], seq.tokens,
                                           token_mask=seq.token_mask, return_hidden=True)
  hidden = hidden[:, seq.prompt_len - 1:-1].astype(jnp.float32)
  return hidden @ params["head"]["kernel"] + params["head"]["bias"]


def value_loss_fn(model_cfg: ModelConfig) -> LossFn:
  """Squared error to the GAE returns, token mean: 0.5 sum m (V - R)^2 / sum m."""

  def loss(params, batch):
    seq, returns = batch
    values = value_forward(model_cfg, params, seq)
    num = 0.5 * jnp.sum(jnp.square(values - returns) * seq.response_mask)
    return num, (jnp.sum(seq.response_mask), {})

  return loss
