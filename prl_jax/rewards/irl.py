"""rePIRL: a process reward model learned by max-entropy inverse RL (arXiv 2602.07832, section 6).

There is no public code; this follows the reconstruction in the design notes. Trajectories are
token sequences; a learned token reward r_phi(s_t, a_t) gives the return R_phi(tau) = sum_t r_phi.
Maximum-entropy IRL models p_phi(tau) proportional to p(tau) exp(R_phi(tau)) and maximises

    J(phi) = (1/E) sum_{e} R_phi(tau_e)  -  log Z(phi)

over expert trajectories tau_e. Z is estimated by importance sampling from the current policy:
with M policy samples tau_j and self-normalised weights

    w_j = exp(R_phi(tau_j) - log pi_theta(tau_j)) / sum_k exp(R_phi(tau_k) - log pi_theta(tau_k)),

    grad J = (1/E) sum_e grad R_phi(tau_e) - sum_j w_j grad R_phi(tau_j).

The policy is then trained with reward r_o + lambda * R_phi (`prl_jax.algorithms.repirl`).
"""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
from prl_jax.ops.checks import shape_errors as _shape_errors


def sequence_reward(token_rewards: chex.Array, mask: chex.Array) -> chex.Array:
  """Trajectory return R(tau_b) = sum_t r_{b,t} mask_{b,t} (rePIRL section 6).

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
  """Maximum-entropy IRL loss with an importance-sampled partition function (rePIRL section 6).

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


