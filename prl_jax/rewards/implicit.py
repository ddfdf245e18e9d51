"""PRIME implicit process rewards (Cui et al. 2025, arXiv 2502.01456, section 3).

The implicit PRM is a causal LM pi_phi scored against a frozen reference pi_ref. Per token

    q_t = log pi_phi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)

and the paper's token reward is r_phi(y_t) = beta * q_t. As in the official code, the functions here
work with q (no beta): the PRM loss multiplies the response sum by beta, and the code-mode
normalisation (`normalize_scores`) divides by a batch maximum, which makes beta irrelevant for the
policy. Paper mode (Eq. 5) multiplies the scores by beta itself.

Layout: masks are [B, T] with 1 on valid response tokens; a batch holds P groups of `group_size`
responses stored contiguously. All log-prob math is float32.
"""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.ops.returns import reverse_cumsum
from prl_jax.ops.steps import step_sum
from prl_jax.ops.checks import shape_errors as _shape_errors, is_concrete as _is_concrete

# Added to the normaliser of `normalize_scores`, as in the official batch_norm.
NORM_EPS = 1e-6


def _check_positive(name: str, value) -> None:
  if _is_concrete(value) and not np.all(np.asarray(value) > 0):
    raise ValueError(f"{name} must be > 0, got {value}")


def _check_unit_interval(name: str, x) -> None:
  if _is_concrete(x):
    v = np.asarray(x)
    if not np.all((v >= 0) & (v <= 1)):
      raise ValueError(f"{name} must lie in [0, 1], got min {v.min()} max {v.max()}")


def token_q(logp_prm: chex.Array, logp_ref: chex.Array, mask: chex.Array) -> chex.Array:
  """Masked token log-ratio q_t = (log pi_phi(y_t) - log pi_ref(y_t)) * mask_t (PRIME section 3).

  Args:
    logp_prm: [B, T] log-probs of the response tokens under the implicit PRM.
    logp_ref: [B, T] log-probs of the same tokens under the reference.
    mask: [B, T] response mask.

  Returns:
    [B, T] float32 q, zero on padding.
  """
  with _shape_errors("token_q"):
    chex.assert_rank([logp_prm, logp_ref, mask], 2)
    chex.assert_equal_shape([logp_prm, logp_ref, mask])
  m = mask.astype(jnp.float32)
  return (logp_prm.astype(jnp.float32) - logp_ref.astype(jnp.float32)) * m


def implicit_scores(logp_prm: chex.Array, logp_ref: chex.Array, mask: chex.Array,
                    step_end: chex.Array) -> chex.Array:
  """Step scores of the implicit PRM (PRIME section 3, "step granularity").

      score[b, e] = sum_{t in step(e)} q_t   at each step end e, 0 elsewhere,

  with q_t = log pi_phi(y_t) - log pi_ref(y_t) (no beta, as in the official code). With
  `step_end` from `prl_jax.ops.steps.step_end_mask(mask, "token")` every token is its own step
  (the paper's default granularity); with mode "whole" the response sum sits on the last valid
  token.

  Args:
    logp_prm: [B, T] PRM log-probs of the response tokens.
    logp_ref: [B, T] reference log-probs.
    mask: [B, T] response mask.
    step_end: [B, T] 1 at the last token of each step (the last valid token is always one).

  Returns:
    [B, T] float32 scores, nonzero only at step ends.
  """
  with _shape_errors("implicit_scores"):
    chex.assert_rank([logp_prm, logp_ref, mask, step_end], 2)
    chex.assert_equal_shape([logp_prm, logp_ref, mask, step_end])
  q = token_q(logp_prm, logp_ref, mask)
  return step_sum(q, step_end, mask)


def normalize_scores(scores: chex.Array, mask: chex.Array, shards: int = 1) -> chex.Array:
  """Code-mode normalisation of PRIME's process scores (official `prime_norm=batch_norm`).

      scores / (max_{b,t valid in shard} |G_{b,t}| + 1e-6),   G_{b,t} = sum_{j >= t} scores_{b,j},

  one scalar per shard of B/`shards` contiguous rows: the official trainer normalises inside each
  data-parallel worker, on its own shard of the batch (8 shards in the paper run); shards=1 is
  the whole batch. Relative values are kept, the largest return-to-go of a shard is bounded by 1.
  Not part of the paper's equations (section 3 uses beta * q directly).

  Args:
    scores: [B, T] step scores (e.g. from `implicit_scores`).
    mask: [B, T] response mask.
    shards: contiguous row blocks normalised separately; must divide B.

  Returns:
    [B, T] float32 normalised scores, zero on padding.
  """
  with _shape_errors("normalize_scores"):
    chex.assert_rank([scores, mask], 2)
    chex.assert_equal_shape([scores, mask])
  batch = scores.shape[0]
  if shards < 1 or batch % shards:
    raise ValueError(f"shards={shards} (algo.prime.norm_shards) must divide the batch of {batch} "
                     "responses.")
  valid = mask.astype(bool)
  x = jnp.where(valid, scores.astype(jnp.float32), 0.0)
  togo = jnp.where(valid, jnp.abs(reverse_cumsum(x, mask)), 0.0)
  scale = jnp.max(togo.reshape(shards, -1), axis=1, initial=0.0)
  return x / (jnp.repeat(scale, batch // shards)[:, None] + NORM_EPS)


def prime_ce_loss(logp_prm: chex.Array, logp_ref: chex.Array, mask: chex.Array,
                  outcome: chex.Array, beta: float) -> tuple[chex.Array, chex.Array]:
  """Cross-entropy PRM loss on outcome labels (PRIME section 3, "implicit PRM update").

      z_b = beta * sum_t q_{b,t} mask_{b,t}
      L_b = -[ r_b log sigmoid(z_b) + (1 - r_b) log sigmoid(-z_b) ]

  with soft labels r_b in [0, 1] (fraction of passed tests for code). log_sigmoid keeps large |z|
  finite. Returned as (sum_b L_b, count) so micro-batching cannot change the mean; rows with no
  valid token (batch padding) are not counted.

  Args:
    logp_prm: [B, T] PRM log-probs (the gradient flows through these).
    logp_ref: [B, T] reference log-probs.
    mask: [B, T] response mask.
    outcome: [B] outcome rewards r_o in [0, 1].
    beta: positive reward scale (0.05 in the paper).

  Returns:
    (loss_sum, count), float32 scalars.
  """
  with _shape_errors("prime_ce_loss"):
    chex.assert_rank([logp_prm, logp_ref, mask, outcome], [2, 2, 2, 1])
    chex.assert_equal_shape([logp_prm, logp_ref, mask])
    chex.assert_equal_shape_prefix([logp_prm, outcome], 1)
  _check_positive("beta", beta)
  _check_unit_interval("outcome", outcome)
  z = beta * jnp.sum(token_q(logp_prm, logp_ref, mask), axis=-1)
  r = outcome.astype(jnp.float32)
  per_response = -(r * jax.nn.log_sigmoid(z) + (1.0 - r) * jax.nn.log_sigmoid(-z))
  counted = jnp.any(mask.astype(bool), axis=-1).astype(jnp.float32)
  return jnp.sum(per_response * counted), jnp.sum(counted)


def group_pairwise_accuracy(scores: chex.Array, outcome: chex.Array, mask: chex.Array,
                            group_size: int) -> tuple[chex.Array, chex.Array]:
  """Per-group PRM pairwise accuracy (PRIME section 3; official `compute_dpo_accuracy`).

  For group g with response sums S_i = sum_t scores_{i,t} mask_{i,t} and outcomes r_i, over pairs
  i < j with r_i != r_j:

      acc_g = sum_{i<j} |r_i - r_j| 1[(S_i > S_j) = (r_i > r_j)] / sum_{i<j} |r_i - r_j|

  and acc_g = 0.5 when the group has no such pair. As in the official code, a tie S_i = S_j
  predicts "not greater", so it counts as right exactly when r_i < r_j: with every score 0 (the
  first step, PRM = reference) a group reads the weighted share of its pairs ordered r_i < r_j,
  0.5 in expectation over response orders.

  Args:
    scores: [B, T] token or step scores.
    outcome: [B] outcome rewards.
    mask: [B, T] response mask.
    group_size: responses per prompt n; B must be a multiple of n.

  Returns:
    (acc [P], weight [P]) with weight_g = sum_{i<j} |r_i - r_j|.
  """
  with _shape_errors("group_pairwise_accuracy"):
    chex.assert_rank([scores, outcome, mask], [2, 1, 2])
    chex.assert_equal_shape([scores, mask])
    chex.assert_equal_shape_prefix([scores, outcome], 1)
  batch = scores.shape[0]
  if group_size < 1 or batch % group_size:
    raise ValueError(f"batch size {batch} is not a positive multiple of group_size {group_size}")
  s = jnp.sum(jnp.where(mask.astype(bool), scores.astype(jnp.float32), 0.0), axis=-1)
  s = s.reshape(-1, group_size)
  r = outcome.astype(jnp.float32).reshape(-1, group_size)
  ds = s[:, :, None] - s[:, None, :]  # [g, i, j] = S_i - S_j
  dr = r[:, :, None] - r[:, None, :]
  upper = jnp.triu(jnp.ones((group_size, group_size), dtype=bool), k=1)
  w = jnp.where(upper, jnp.abs(dr), 0.0)
  agree = ((ds > 0) == (dr > 0)).astype(jnp.float32)
  weight = jnp.sum(w, axis=(1, 2))
  hits = jnp.sum(w * agree, axis=(1, 2))
  acc = jnp.where(weight > 0, hits / jnp.where(weight > 0, weight, 1.0), 0.5)
  return acc, weight


def pairwise_accuracy(scores: chex.Array, outcome: chex.Array, mask: chex.Array,
                      group_size: int) -> tuple[chex.Array, chex.Array]:
  """Batch PRM pairwise accuracy: the mean over groups of `group_pairwise_accuracy`, groups
  without a pair of different outcomes counting 0.5 (official `compute_dpo_accuracy`).

  Returns:
    (acc, weight) float32 scalars; weight = sum_g weight_g, the outcome-weighted pair count.
  """
  acc_g, w_g = group_pairwise_accuracy(scores, outcome, mask, group_size)
  return jnp.mean(acc_g), jnp.sum(w_g)
