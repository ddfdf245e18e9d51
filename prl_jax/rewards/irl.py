"""rePIRL: a process reward model learned by max-entropy inverse RL (arXiv 2602.07832).

Trajectories are token sequences; a learned token reward r_phi(s_t, a_t) gives the return
R_phi(tau) = sum_t r_phi. Maximum-entropy IRL models p_phi(tau) proportional to
p(tau) exp(R_phi(tau)) and maximises

    J(phi) = (1/E) sum_{e} R_phi(tau_e)  -  log Z(phi)

over expert trajectories tau_e. Z is estimated by importance sampling from the current policy:
with M policy samples tau_j and self-normalised weights

    w_j = exp(R_phi(tau_j) - log pi_theta(tau_j)) / sum_k exp(R_phi(tau_k) - log pi_theta(tau_k)),

    grad J = (1/E) sum_e grad R_phi(tau_e) - sum_j w_j grad R_phi(tau_j).

Two forms live here:
- the official code's (github.com/ucsb-mlsec/irl, recipe/irl, commit 0159023): `rm_loss`, the
  length-normalised objective over pools of rows that share one softmax, and `token_advantages`,
  the token-level advantage with per-token-index leave-one-out (`algo.repirl.mode="code"`);
- the earlier reconstruction from the abstract: `irl_loss` / `irl_coefficients` on unnormalised
  returns over the whole batch, with a sequence-level bonus (`algo.repirl.mode="implicit"`).
"""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.ops.checks import shape_errors as _shape_errors
from prl_jax.ops.returns import check_mask_like, masked_whiten, reverse_cumsum

# Added to the normaliser Z of the process returns (the official `compute_advantage_return`).
Z_EPS = 1e-6


def sequence_reward(token_rewards: chex.Array, mask: chex.Array) -> chex.Array:
  """Trajectory return R(tau_b) = sum_t r_{b,t} mask_{b,t} (docs/algorithms.md, rePIRL).

  Args:
    token_rewards: [B, T] token rewards (e.g. beta * (log pi_phi - log pi_ref) for the implicit PRM,
      or a scalar head's per-token output).
    mask: [B, T] response mask.

  Returns:
    [B] float32 returns.
  """
  with _shape_errors("sequence_reward"):
    chex.assert_rank([token_rewards, mask], 2)
    chex.assert_equal_shape([token_rewards, mask])
  valid = mask.astype(bool)
  return jnp.sum(jnp.where(valid, token_rewards.astype(jnp.float32), 0.0), axis=-1)


def irl_loss(expert_returns: chex.Array, sample_returns: chex.Array, sample_logp: chex.Array,
             sample_valid: chex.Array | None = None) -> tuple[chex.Array, dict[str, chex.Array]]:
  """Maximum-entropy IRL loss with an importance-sampled partition function (docs/algorithms.md,
  rePIRL, implicit mode).

      w   = softmax_j( R_phi(tau_j) - log pi_theta(tau_j) )        over valid samples j
      L   = -( mean_e R_phi(tau_e) - sum_j stop_gradient(w_j) R_phi(tau_j) )

  so grad L = -(mean_e grad R_phi(tau_e) - sum_j w_j grad R_phi(tau_j)), the self-normalised
  estimate of -grad J. The weights carry no gradient (neither into R nor into log pi_theta).
  The normaliser couples all samples, so the loss is a scalar, not a (sum, count) pair: compute
  it over the whole set of samples of an update, not per micro-batch.

  Metrics: log_z = logsumexp_j(R_j - log pi_j) - log M (the importance-sampling estimate of
  log Z, M valid samples) and ess = 1 / sum_j w_j^2 (effective sample size, in [1, M]). With no
  valid sample the weights are 0, log_z = -inf and ess = 0.

  Args:
    expert_returns: [E] R_phi of expert (and pseudo-expert) trajectories; E >= 1.
    sample_returns: [M] R_phi of policy samples.
    sample_logp: [M] sequence log-probs log pi_theta(tau_j) of the samples.
    sample_valid: optional [M] bool, False for padding samples.

  Returns:
    (loss, {"log_z": scalar, "ess": scalar}), float32.
  """
  if sample_valid is None:
    sample_valid = jnp.ones(jnp.shape(sample_returns), dtype=bool)
  with _shape_errors("irl_loss"):
    chex.assert_rank([expert_returns, sample_returns, sample_logp, sample_valid], 1)
    chex.assert_equal_shape([sample_returns, sample_logp, sample_valid])
  if expert_returns.shape[0] < 1:
    raise ValueError("irl_loss: need at least one expert trajectory")
  if sample_returns.shape[0] < 1:
    raise ValueError("irl_loss: need at least one policy sample")
  valid = sample_valid.astype(bool)
  r_samples = jnp.where(valid, sample_returns.astype(jnp.float32), 0.0)
  log_ratio = jnp.where(valid, r_samples - sample_logp.astype(jnp.float32), -jnp.inf)
  any_valid = jnp.any(valid)
  lse = jax.nn.logsumexp(log_ratio)
  lse = jnp.where(any_valid, lse, 0.0)
  w = jnp.where(valid, jnp.exp(log_ratio - lse), 0.0)
  w = jax.lax.stop_gradient(w)
  expert_term = jnp.mean(expert_returns.astype(jnp.float32))
  loss = -(expert_term - jnp.sum(w * r_samples))
  num_valid = jnp.sum(valid.astype(jnp.float32))
  log_z = jnp.where(any_valid, lse - jnp.log(jnp.maximum(num_valid, 1.0)), -jnp.inf)
  ess = jnp.where(any_valid, 1.0 / jnp.maximum(jnp.sum(w * w), np.finfo(np.float32).tiny), 0.0)
  metrics = {"log_z": jax.lax.stop_gradient(log_z), "ess": ess}
  return loss, metrics


def irl_coefficients(returns: chex.Array, logp: chex.Array, is_expert: chex.Array,
                     is_sample: chex.Array) -> tuple[chex.Array, dict[str, chex.Array]]:
  """Per-trajectory weights c_b that make the IRL loss a sum over rows (micro-batchable).

  With E = #experts and w the self-normalised importance weights of `irl_loss` over the samples,

      c_b = -1/E                                          for an expert trajectory b,
      c_b = w_b = softmax_{j in samples}(R_j - log pi_j)_b for an importance sample b,
      c_b = 0                                             otherwise (padding),

  so that L(phi) = sum_b c_b R_phi(tau_b), with the c_b held fixed, has the value and the gradient
  of `irl_loss` at the phi the returns were computed with. Computing the c_b once, forward only,
  lets the gradient pass run over micro-batches of any size.

  Args:
    returns: [B] R_phi(tau_b) at the current phi (no gradient is taken through them).
    logp: [B] log pi_theta(tau_b) of the policy that sampled them (ignored for experts).
    is_expert, is_sample: [B] bool, disjoint.

  Returns:
    ([B] float32 coefficients, {"loss", "log_z", "ess"} of `irl_loss`).
  """
  with _shape_errors("irl_coefficients"):
    chex.assert_rank([returns, logp, is_expert, is_sample], 1)
    chex.assert_equal_shape([returns, logp, is_expert, is_sample])
  returns = jax.lax.stop_gradient(jnp.asarray(returns, jnp.float32))
  expert = jnp.asarray(is_expert, bool)
  sample = jnp.asarray(is_sample, bool) & ~expert
  num_expert = jnp.maximum(jnp.sum(expert.astype(jnp.float32)), 1.0)
  expert_returns = jnp.where(expert, returns, 0.0)
  loss, metrics = irl_loss(jnp.sum(expert_returns)[None] / num_expert, returns, logp, sample)
  log_ratio = jnp.where(sample, returns - logp.astype(jnp.float32), -jnp.inf)
  lse = jnp.where(jnp.any(sample), jax.nn.logsumexp(log_ratio), 0.0)
  weights = jnp.where(sample, jnp.exp(log_ratio - lse), 0.0)
  coef = jnp.where(expert, -1.0 / num_expert, weights)
  return coef, {"loss": loss, **metrics}


def _groups(x: chex.Array, group_size: int, fn_name: str) -> chex.Array:
  """[B, ...] -> [B/n, n, ...] (groups of n responses are contiguous rows)."""
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
      or group_size < 1:
    raise ValueError(f"{fn_name}: group_size must be a Python int >= 1, got {group_size!r}")
  if x.shape[0] % group_size:
    raise ValueError(f"{fn_name}: batch size {x.shape[0]} is not divisible by group_size "
                     f"{group_size}; the batch must hold whole groups of responses")
  return jnp.reshape(x, (x.shape[0] // group_size, int(group_size)) + tuple(x.shape[1:]))


def leave_one_out_per_token(returns: chex.Array, mask: chex.Array,
                            group_size: int) -> chex.Array:
  """Leave-one-out baseline at every token index, over the other responses of the group that are
  still active there (the official `masked_rloo`):

      LOO(G)[b,t] = m[b,t] (G[b,t] - sum_{b' != b} m[b',t] G[b',t] / max(1, sum_{b' != b} m[b',t]))

  with b' over b's group. A token that no other response reaches keeps its own G (baseline 0).

  Args:
    returns: [B, T] returns-to-go G.
    mask: [B, T] response mask.
    group_size: responses per prompt n (groups are contiguous rows).

  Returns:
    [B, T] float32, zero where the mask is 0.
  """
  with _shape_errors("leave_one_out_per_token"):
    chex.assert_rank([returns, mask], 2)
  check_mask_like("leave_one_out_per_token", mask, returns=returns)
  m = (jnp.asarray(mask) != 0).astype(jnp.float32)
  g = jnp.where(m > 0, jnp.asarray(returns, jnp.float32), 0.0)
  gg = _groups(g, group_size, "leave_one_out_per_token")
  mg = _groups(m, group_size, "leave_one_out_per_token")
  others = jnp.sum(gg, axis=1, keepdims=True) - gg
  count = jnp.sum(mg, axis=1, keepdims=True) - mg
  return ((gg - others / jnp.maximum(count, 1.0)) * mg).reshape(g.shape)


def token_advantages(token_rewards: chex.Array, mask: chex.Array, outcome: chex.Array,
                     group_size: int, lam: float) -> chex.Array:
  """rePIRL's token advantages (the official `compute_advantage_return`, estimator rloo):

      Z        = max_{b,t} |sum_{s>=t} r[b,s] m[b,s]| + 1e-6          over the whole batch
      Gp[b,t]  = sum_{s>=t} r[b,s] m[b,s] / Z                          process return-to-go
      Go[b,t]  = y_b m[b,t]                  the outcome on the last token, as a return-to-go
      Ahat     = LOO(Go) + lam LOO(Gp)       (`leave_one_out_per_token`, per group)
      A        = masked_whiten(Ahat, m)      over the valid tokens of the batch

  At t = 0 every row is active and Ahat[b,0] = RLOO_b(y + (lam/Z) R_b), R_b = sum_t r[b,t].

  Args:
    token_rewards: [B, T] r_phi of the reward model (after this step's update).
    mask: [B, T] response mask (right-padded).
    outcome: [B] verifier scores y.
    group_size: responses per prompt n (groups are contiguous rows).
    lam: weight of the process term (0.05 in the official Qwen2.5-3B run).

  Returns:
    [B, T] float32 whitened advantages, zero where the mask is 0.
  """
  with _shape_errors("token_advantages"):
    chex.assert_rank([token_rewards, mask, outcome], [2, 2, 1])
    chex.assert_equal_shape_prefix([token_rewards, outcome], 1)
  check_mask_like("token_advantages", mask, token_rewards=token_rewards)
  m = (jnp.asarray(mask) != 0).astype(jnp.float32)
  process = reverse_cumsum(token_rewards, mask)
  z = jnp.max(jnp.abs(process)) + Z_EPS  # `process_return_scale`, without a second cumsum
  outcome_return = jnp.asarray(outcome, jnp.float32)[:, None] * m
  ahat = (leave_one_out_per_token(outcome_return, mask, group_size)
          + lam * leave_one_out_per_token(process / z, mask, group_size))
  return masked_whiten(ahat, mask)


def process_return_scale(token_rewards: chex.Array, mask: chex.Array) -> chex.Array:
  """Z = max_{b,t} |sum_{s>=t} r[b,s] m[b,s]| + 1e-6, the normaliser of `token_advantages`."""
  return jnp.max(jnp.abs(reverse_cumsum(token_rewards, mask))) + Z_EPS


def pool_losses(token_rewards: chex.Array, mask: chex.Array, old_logp: chex.Array,
                is_expert: chex.Array, pool_size: int) -> tuple[chex.Array, chex.Array]:
  """The official reward-model loss of every pool of `pool_size` consecutive rows
  (`DataParallelIRLRewardModel.update_rm`, a pool being one micro-batch there):

      R_b = sum_t r[b,t] m[b,t],   L_b = sum_t m[b,t],   Rbar_b = R_b / L_b
      lp_b = sum_t old_logp[b,t] m[b,t]             (the rollout policy's sequence log-prob)
      w_b = softmax_{b in P∩S}(R_b - lp_b)          no gradient through w
      loss_S = sum_{b in P∩S} w_b Rbar_b  -  mean_{b in E∩S} Rbar_b

  over a pool S, E the experts (`is_expert`) and P the other rows; a term whose set is empty in
  the pool is dropped. Rows without a valid token (L_b = 0, padding) belong to neither set, and
  a pool of padding only is not a pool (`valid` False).

  Args:
    token_rewards: [B, T] r_phi.
    mask: [B, T] response mask.
    old_logp: [B, T] token log-probs of the policy that produced each row (read for P only).
    is_expert: [B] bool.
    pool_size: rows per pool; must divide B.

  Returns:
    ([B/pool_size] pool losses, [B/pool_size] bool valid), float32 losses.
  """
  with _shape_errors("pool_losses"):
    chex.assert_rank([token_rewards, mask, old_logp, is_expert], [2, 2, 2, 1])
    chex.assert_equal_shape_prefix([token_rewards, is_expert], 1)
  check_mask_like("pool_losses", mask, token_rewards=token_rewards, old_logp=old_logp)
  rows = token_rewards.shape[0]
  if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) \
      or pool_size < 1 or rows % pool_size:
    raise ValueError(f"pool_losses: pool_size must be an int >= 1 dividing the {rows} rows, "
                     f"got {pool_size!r} (algo.repirl.pool_size)")
  valid_tok = jnp.asarray(mask) != 0
  length = jnp.sum(valid_tok.astype(jnp.float32), axis=1)
  returns = jnp.sum(jnp.where(valid_tok, jnp.asarray(token_rewards, jnp.float32), 0.0), axis=1)
  lp = jnp.sum(jnp.where(valid_tok, jnp.asarray(old_logp, jnp.float32), 0.0), axis=1)
  present = length > 0
  mean_reward = returns / jnp.maximum(length, 1.0)
  expert = jnp.asarray(is_expert, bool) & present
  sample = ~jnp.asarray(is_expert, bool) & present
  pools = lambda x: jnp.reshape(x, (rows // pool_size, pool_size))
  expert, sample, mean_reward = pools(expert), pools(sample), pools(mean_reward)
  logits = jnp.where(sample, jax.lax.stop_gradient(pools(returns) - pools(lp)), -jnp.inf)
  top = jnp.max(logits, axis=1, keepdims=True)
  e = jnp.where(sample, jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
  w = e / jnp.maximum(jnp.sum(e, axis=1, keepdims=True), np.finfo(np.float32).tiny)
  num_expert = jnp.sum(expert.astype(jnp.float32), axis=1)
  sample_term = jnp.sum(jnp.where(sample, w * mean_reward, 0.0), axis=1)
  expert_term = jnp.sum(jnp.where(expert, mean_reward, 0.0), axis=1) / jnp.maximum(num_expert, 1.0)
  valid = jnp.any(sample | expert, axis=1)
  return sample_term - expert_term, valid


def rm_loss(token_rewards: chex.Array, mask: chex.Array, old_logp: chex.Array,
            is_expert: chex.Array, pool_size: int) -> chex.Array:
  """rePIRL's reward-model loss: the mean over pools of consecutive rows of `pool_losses`,

      loss = (1/#pools) sum_S loss_S

  (the official mini-batch loss, each micro-batch of `pool_size` rows divided by the number of
  micro-batches). Pools of one row (the shipped run) give the mean of s_b Rbar_b with s_b = +1
  for samples and -1 for experts. Pools of padding only are left out of the mean.

  Returns:
    float32 scalar (0 when no pool holds a valid row).
  """
  losses, valid = pool_losses(token_rewards, mask, old_logp, is_expert, pool_size)
  count = jnp.sum(valid.astype(jnp.float32))
  return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.maximum(count, 1.0)
