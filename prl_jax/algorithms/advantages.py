"""Advantage estimators (docs/algorithms.md: Shared pieces, the baselines, PRIME, PRL).

Batch layout: B = P * n responses with the n responses of a prompt contiguous
([p0r0, ..., p0r(n-1), p1r0, ...]), so every group operation is a reshape to [P, n]. Sequence
scores are [B]; token arrays are [B, T] with a response mask of 1/True on valid tokens.

The estimators are plain functions with their own signatures; a method's recipe
(`prl_jax.algorithms.recipes`, chosen by the `method` config string) says which one it calls
and with which options.

Interpretations of the specification, in one place:
- PRIME's GRPO and REINFORCE variants (paper Eq. 7, 8; no official code): see `prime_returns`.
- PRIME's discount: `gamma` discounts the process source, `outcome_gamma` the outcome source, the
  code's `reward_model_gamma` and `verifier_gamma` (both 1 in the published runs). Eq. 5 leaves
  the outcome term undiscounted, i.e. outcome_gamma = 1.
- PRL `prm` mode ignores `step_end`: the official code applies the step mask only for `adv=orm`
  and then fills by the next non-zero value at token level (`prl`).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.ops.returns import check_mask_like, linear_recurrence, masked_whiten, reverse_cumsum
from prl_jax.ops.steps import fill_from_step_end, last_token_mask, next_marked_index
from prl_jax.rewards.kl_to_go import kl_to_go
from prl_jax.ops.checks import shape_errors as _shape_errors, is_concrete as _is_concrete

# Added to the group std in GRPO (docs/algorithms.md: Shared pieces).
GRPO_EPS = 1e-6

PRIME_MODES = ("code", "paper")
PRIME_BASES = ("rloo", "grpo", "reinforce")
PRL_MODES = ("orm", "prm")
REINFORCE_BASELINES = ("none", "batch")


def _check_choice(fn_name: str, name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{fn_name}: unknown {name} {value!r}; expected one of {choices}")


def _check_eta(fn_name: str, eta) -> None:
  if _is_concrete(eta):
    v = np.asarray(eta, dtype=np.float64)
    if np.any(np.isnan(v)) or not np.all(v > 0):
      raise ValueError(f"{fn_name}: eta must be > 0 (the KL weight is 1/eta), got {eta}")


def _check_gamma(fn_name: str, name: str, gamma) -> None:
  if _is_concrete(gamma) and not 0.0 <= float(gamma) <= 1.0:
    raise ValueError(f"{fn_name}: {name} must lie in [0, 1], got {gamma}")


def group_view(x: chex.Array, group_size: int, fn_name: str = "group_view") -> chex.Array:
  """Reshapes a contiguous batch [B, ...] to groups [P, n, ...] (docs/algorithms.md: Shared pieces).

  Raises ValueError unless group_size is an int >= 1 that divides B.
  """
  if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
    raise ValueError(f"{fn_name}: group_size must be a Python int, got {group_size!r}")
  if group_size < 1:
    raise ValueError(f"{fn_name}: group_size must be >= 1, got {group_size}")
  b = x.shape[0]
  if b % group_size:
    raise ValueError(f"{fn_name}: batch size {b} is not divisible by group_size {group_size}; "
                     "the batch must hold whole groups of responses")
  return jnp.reshape(x, (b // group_size, int(group_size)) + tuple(x.shape[1:]))


def _group_mean_std(g: chex.Array) -> tuple[chex.Array, chex.Array]:
  """Group mean and ddof=1 std over axis 1 of [P, n]; a group of one gets mean 0 and std 1."""
  if g.shape[1] == 1:
    return jnp.zeros_like(g[:, :1]), jnp.ones_like(g[:, :1])
  # Averaging offsets from a group member makes a tied group's mean exactly that value. A plain
  # mean may round (XLA can multiply by 1/n), and in a tied group the rounding error would be
  # divided by std + 1e-6 ~ 1e-6, turning "no signal" into advantages of order 0.1.
  pivot = g[:, :1]
  offsets = g - pivot
  return pivot + jnp.mean(offsets, axis=1, keepdims=True), jnp.std(offsets, axis=1, ddof=1,
                                                                   keepdims=True)


def _per_sequence(fn_name: str, scores: chex.Array) -> chex.Array:
  with _shape_errors(fn_name):
    chex.assert_rank(scores, 1)
  return jnp.asarray(scores, jnp.float32)


def grpo(scores: chex.Array, group_size: int, scale_by_std: bool = True,
         epsilon: float = GRPO_EPS) -> chex.Array:
  """GRPO group-normalised score (DeepSeekMath, arXiv 2402.03300, Sec. 4.1.2; section 1.6).

      A_i = (r_i - mean_g(r)) / (std_g(r) + eps),   std with ddof = 1

  A group of one has mean 0 and std 1. scale_by_std=False gives Dr. GRPO's A_i = r_i - mean_g(r)
  (arXiv 2503.20783).

  Args:
    scores: [B] sequence scores.
    group_size: responses per prompt n.
    scale_by_std: divide by the group std.
    epsilon: added to the std.

  Returns:
    [B] float32 advantages.
  """
  g = group_view(_per_sequence("grpo", scores), group_size, "grpo")
  mean, std = _group_mean_std(g)
  adv = g - mean
  if scale_by_std:
    adv = adv / (std + epsilon)
  return adv.reshape(-1)


def rloo(scores: chex.Array, group_size: int) -> chex.Array:
  """REINFORCE leave-one-out (Ahmadian et al., arXiv 2402.14740; section 1.6).

      A_i = r_i - (1/(n-1)) sum_{j != i} r_j

  Args:
    scores: [B] sequence scores.
    group_size: responses per prompt n >= 2.

  Returns:
    [B] float32 advantages.
  """
  if isinstance(group_size, (int, np.integer)) and not isinstance(group_size, bool) \
      and group_size == 1:
    raise ValueError("rloo: group_size 1 leaves no other response for the baseline; "
                     "sample n >= 2 responses per prompt or use grpo/reinforce")
  g = group_view(_per_sequence("rloo", scores), group_size, "rloo")
  n = g.shape[1]
  others = (jnp.sum(g, axis=1, keepdims=True) - g) / (n - 1)
  return (g - others).reshape(-1)


def reinforce(scores: chex.Array, group_size: int | None = None,
              baseline: str = "none") -> chex.Array:
  """REINFORCE on the outcome (Williams 1992; docs/algorithms.md: the baselines).

      A_i = r_i                  baseline="none"
      A_i = r_i - mean_batch(r)  baseline="batch"

  Args:
    scores: [B] sequence scores.
    group_size: only checked (B must hold whole groups) so every estimator takes the same
      arguments; None skips the check.
    baseline: "none" or "batch".

  Returns:
    [B] float32 advantages.
  """
  r = _per_sequence("reinforce", scores)
  _check_choice("reinforce", "baseline", baseline, REINFORCE_BASELINES)
  if group_size is not None:
    group_view(r, group_size, "reinforce")
  if baseline == "batch":
    return r - jnp.mean(r)
  return r


def gae(rewards: chex.Array, values: chex.Array, mask: chex.Array, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[chex.Array, chex.Array]:
  """Generalised advantage estimation (Schulman et al., arXiv 1506.02438; section 2).

      delta_t = r_t + gamma V_{t'} - V_t,   A_t = delta_t + gamma lam A_{t'},   returns = A + V

  with t' the next valid position (V and A are 0 past the end). Masked holes pass V and A
  through, as verl does for observation tokens. No whitening here; the registry adapter
  whitens by default, as PRIME's and verl's PPO baselines do.

  Args:
    rewards: [B, T] token rewards (outcome on the last valid token for the PPO baseline).
    values: [B, T] value estimates.
    mask: [B, T] response mask.
    gamma: discount in [0, 1].
    lam: GAE lambda in [0, 1].

  Returns:
    (advantages [B, T], returns [B, T]) float32, zero on padding.
  """
  with _shape_errors("gae"):
    chex.assert_rank([rewards, values, mask], 2)
  check_mask_like("gae", mask, rewards=rewards, values=values)
  _check_gamma("gae", "gamma", gamma)
  _check_gamma("gae", "lam", lam)
  return _gae(rewards, values, mask, jnp.asarray(gamma, jnp.float32),
              jnp.asarray(lam, jnp.float32))


@jax.jit
def _gae(rewards, values, mask, gamma, lam):
  valid = jnp.asarray(mask) != 0
  v = jnp.where(valid, jnp.asarray(values, jnp.float32), 0.0)
  r = jnp.where(valid, jnp.asarray(rewards, jnp.float32), 0.0)
  # V at the first valid position after t: the next valid index from t + 1 on, T if none.
  t_size = v.shape[-1]
  after = jnp.pad(next_marked_index(valid)[:, 1:], ((0, 0), (0, 1)), constant_values=t_size)
  v_next = jnp.where(after < t_size,
                     jnp.take_along_axis(v, jnp.minimum(after, t_size - 1), axis=-1), 0.0)
  delta = r + gamma * v_next - v
  decay = jnp.where(valid, gamma * lam, 1.0)
  adv = linear_recurrence(decay, jnp.where(valid, delta, 0.0), reverse=True)
  adv = jnp.where(valid, adv, 0.0)
  return adv, jnp.where(valid, adv + v, 0.0)


def _response_means(x: chex.Array, valid: chex.Array) -> chex.Array:
  """[B] mean of x over each response's valid tokens (0 for an empty row)."""
  count = jnp.maximum(jnp.sum(valid.astype(jnp.float32), axis=-1), 1.0)
  return jnp.sum(jnp.where(valid, x, 0.0), axis=-1) / count


def _prime_process_rewards(r: chex.Array, valid: chex.Array, group_size: int, mode: str,
                           base: str) -> chex.Array:
  """Process rewards after PRIME's baseline, before the return-to-go (section 3)."""
  if base == "reinforce":
    return jnp.where(valid, r, 0.0)
  n = group_size
  m = group_view(_response_means(r, valid), n, "prime")        # [P, n]
  rg = group_view(r, n, "prime")                                  # [P, n, T]
  vg = group_view(valid, n, "prime")
  if base == "grpo":
    mean, std = _group_mean_std(m)
    out = (rg - mean[..., None]) / (std[..., None] + GRPO_EPS)
  elif mode == "paper":
    others = (jnp.sum(m, axis=1, keepdims=True) - m) / (n - 1)
    out = rg - others[..., None]
  else:
    total = jnp.sum(m, axis=1, keepdims=True)
    out = rg * (n / (n - 1)) - total[..., None] / (n - 1)
  return jnp.where(vg, out, 0.0).reshape(r.shape)


def prime_returns(process_scores: chex.Array, outcome: chex.Array, mask: chex.Array,
                  group_size: int, mode: str = "code", gamma: float = 1.0, base: str = "rloo",
                  outcome_gamma: float = 1.0) -> chex.Array:
  """PRIME's returns before whitening (arXiv 2502.01456, Eq. 5; docs/algorithms.md: PRIME).

  Each reward source gets its own baseline and return-to-go; the two are added 1:1.

  Outcome source (every base): r_o on the last valid token, the base's sequence baseline
  (`rloo`, `grpo` or `reinforce` = none), then the return-to-go (constant over the response when
  outcome_gamma = 1).

  Process source, base="rloo" (r_t = process score of token t, m_j = mean of r over the valid
  tokens of response j, S = sum_j m_j over the group):
    paper (Eq. 5):  r_t - (1/(n-1)) sum_{j != i} m_j
    code:           r_t * n/(n-1) - S/(n-1) = r_t - (S - r_t)/(n-1)
                    (the token's own reward replaces m_i in the leave-one-out sum S - m_i)
  The two agree whenever r_t = m_i, in particular for all-zero process scores.

  Eq. 7/8 variants (no official code; our reading of the paper, independent of `mode`):
    base="grpo":       (r_t - mean_g(m)) / (std_g(m) + 1e-6), outcome GRPO-normalised, i.e. the
                       paper's per-token-average baseline of Eq. 5 with GRPO's group mean and std;
    base="reinforce":  r_t and r_o unchanged, no baseline.

  Then R_t = sum_{s >= t} gamma^{s-t} r'_s + sum_{s >= t} outcome_gamma^{s-t} o'_s.

  Args:
    process_scores: [B, T] process rewards (step scores placed at step ends, e.g. from
      `prl_jax.rewards.implicit.implicit_scores`), zero elsewhere.
    outcome: [B] outcome rewards r_o.
    mask: [B, T] response mask.
    group_size: responses per prompt n (>= 2 for base="rloo").
    mode: "code" (default, the published runs) or "paper"; only affects base="rloo".
    gamma: discount of the process source.
    base: "rloo", "grpo" or "reinforce".
    outcome_gamma: discount of the outcome source.

  Returns:
    [B, T] float32 returns, zero on padding.
  """
  with _shape_errors("prime"):
    chex.assert_rank([process_scores, mask], 2)
    chex.assert_rank(outcome, 1)
  check_mask_like("prime", mask, process_scores=process_scores)
  if outcome.shape[0] != mask.shape[0]:
    raise ValueError(f"prime: outcome has {outcome.shape[0]} entries but mask has "
                     f"{mask.shape[0]} rows")
  _check_choice("prime", "mode", mode, PRIME_MODES)
  _check_choice("prime", "base", base, PRIME_BASES)
  _check_gamma("prime", "gamma", gamma)
  _check_gamma("prime", "outcome_gamma", outcome_gamma)
  if base == "rloo" and group_size == 1:
    rloo(outcome, group_size)  # raises with the RLOO message
  group_view(outcome, group_size, "prime")
  return _prime_returns(process_scores, outcome, mask, jnp.asarray(gamma, jnp.float32),
                        jnp.asarray(outcome_gamma, jnp.float32), group_size=int(group_size),
                        mode=mode, base=base)


# Jitted so a host-side call compiles one program instead of dispatching op by op.
@functools.partial(jax.jit, static_argnames=("group_size", "mode", "base"))
def _prime_returns(process_scores, outcome, mask, gamma, outcome_gamma, *, group_size, mode,
                   base):
  if base == "rloo":
    out_adv = rloo(outcome, group_size)
  elif base == "grpo":
    out_adv = grpo(outcome, group_size)
  else:
    out_adv = reinforce(outcome, group_size)
  valid = jnp.asarray(mask) != 0
  r = jnp.where(valid, jnp.asarray(process_scores, jnp.float32), 0.0)
  process = _prime_process_rewards(r, valid, group_size, mode, base)
  outcome_tok = jnp.where(last_token_mask(mask), out_adv[:, None], 0.0)
  return reverse_cumsum(process, mask, gamma) + reverse_cumsum(outcome_tok, mask, outcome_gamma)


def prime(process_scores: chex.Array, outcome: chex.Array, mask: chex.Array, group_size: int,
          mode: str = "code", gamma: float = 1.0, base: str = "rloo",
          outcome_gamma: float = 1.0, whiten: bool = True) -> chex.Array:
  """PRIME advantages (arXiv 2502.01456, Eq. 5; docs/algorithms.md: PRIME).

      A = masked_whiten(prime_returns(...), mask)    over all valid tokens of the batch

  Arguments as in `prime_returns`; whiten=False returns the returns themselves.

  Returns:
    [B, T] float32 advantages, zero on padding.
  """
  returns = prime_returns(process_scores, outcome, mask, group_size, mode=mode, gamma=gamma,
                          base=base, outcome_gamma=outcome_gamma)
  return masked_whiten(returns, mask) if whiten else returns


def prl(outcome: chex.Array, logp_old: chex.Array, logp_ref: chex.Array, mask: chex.Array,
        step_end: chex.Array | None, group_size: int, eta: float, mode: str = "orm",
        skip_zeros: bool = True, scale_by_std: bool = True) -> chex.Array:
  """PRL advantages (Process Reward Learning, arXiv 2601.10201; docs/algorithms.md: PRL).

  With G_t the KL-to-go (`kl_to_go`: sum_{j >= t} (log pi_old - log pi_ref)_j):
    mode="orm" (the published PRL):
        A_b = GRPO-normalised outcome (ddof 1, eps 1e-6)
        R_t = A_b * mask_t - G_t / eta,   read at step ends and filled back over each step;
    mode="prm":
        R_t = r_o * mask_t - G_t / eta    at token level, no group normalisation.
  `prm` ignores `step_end`: the official code applies step masks for `orm` only; both modes then
  fill by the next non-zero value (skip_zeros=True reproduces that; False fills by step end
  alone). No whitening.

  Args:
    outcome: [B] outcome rewards r_o.
    logp_old: [B, T] rollout-policy log-probs of the response tokens.
    logp_ref: [B, T] frozen initial-model log-probs.
    mask: [B, T] response mask.
    step_end: [B, T] step-end mask (`step_end_mask`); None means every token is a step.
    group_size: responses per prompt n.
    eta: > 0; the KL weight is 1/eta.
    mode: "orm" or "prm".
    skip_zeros: reproduce the code's "left fill by next non-zero".
    scale_by_std: divide by the group std in `orm` (False: Dr. GRPO centring).

  Returns:
    [B, T] float32 advantages, zero on padding.
  """
  with _shape_errors("prl"):
    chex.assert_rank([logp_old, logp_ref, mask], 2)
    chex.assert_rank(outcome, 1)
  check_mask_like("prl", mask, logp_old=logp_old, logp_ref=logp_ref, step_end=step_end)
  if outcome.shape[0] != mask.shape[0]:
    raise ValueError(f"prl: outcome has {outcome.shape[0]} entries but mask has "
                     f"{mask.shape[0]} rows")
  _check_choice("prl", "mode", mode, PRL_MODES)
  _check_eta("prl", eta)
  group_view(outcome, group_size, "prl")
  return _prl(outcome, logp_old, logp_ref, mask, step_end, jnp.asarray(eta, jnp.float32),
              group_size=int(group_size), mode=mode, skip_zeros=bool(skip_zeros),
              scale_by_std=bool(scale_by_std))


@functools.partial(jax.jit, static_argnames=("group_size", "mode", "skip_zeros", "scale_by_std"))
def _prl(outcome, logp_old, logp_ref, mask, step_end, eta, *, group_size, mode, skip_zeros,
         scale_by_std):
  valid = jnp.asarray(mask) != 0
  penalty = kl_to_go(logp_old, logp_ref, mask) / eta
  if mode == "orm":
    seq = grpo(outcome, group_size, scale_by_std=scale_by_std)
    ends = valid if step_end is None else step_end
  else:
    seq = reinforce(outcome, group_size)
    ends = valid
  values = jnp.where(valid, seq[:, None], 0.0) - penalty
  return fill_from_step_end(values, ends, mask, skip_zeros=skip_zeros)


