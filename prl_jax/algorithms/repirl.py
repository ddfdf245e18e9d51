"""rePIRL (arXiv 2602.07832): a process reward model learned by maximum-entropy inverse RL.

`algo.repirl.mode="code"` (default) follows the official code (github.com/ucsb-mlsec/irl,
recipe/irl, commit 0159023):
- the reward model is a tanh-MLP head on a full copy of the policy LM, no reference model
  (`prl_jax.models.reward_head`), r_phi[b, t] in [-1, 1];
- experts are the demonstrations (the task's solution, one row beside every rollout) and the
  rollouts the verifier scores above 0.99 (pseudo-experts); the other rollouts are the samples;
- the RM batch interleaves rollouts and demonstrations 1:1 and is walked in mini-batches of
  `algo.repirl.rm_mini_batch_size` rows, one AdamW step each, on the pooled length-normalised loss
  `prl_jax.rewards.irl.rm_loss` (pools of `algo.repirl.pool_size` consecutive rows);
- then every rollout is re-scored by the updated RM and the policy gets the token advantages
  `prl_jax.rewards.irl.token_advantages` (per-token-index leave-one-out, lam = algo.repirl.lam).

`mode="implicit"` keeps the earlier reconstruction from the abstract: r_phi = beta
log(pi_phi/pi_ref) per token, one PRM step per RL step on `irl.irl_loss` (unnormalised returns,
one softmax over the batch, one demonstration per prompt), scored before the update, and RLOO on
the sequence reward r_o + lam sum_t r_phi.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import (Advantages, PrmInputs, PrmTraining, Recipe, RLInputs,
                                        register)
from prl_jax.models import reward_head
from prl_jax.models.logprobs import response_logprobs
from prl_jax.rewards import irl

MODES = ("code", "implicit")
# A rollout the verifier scores above this is a pseudo-expert (the official `scores > 0.99`).
EXPERT_SCORE = 0.99


def _code(options) -> bool:
  return options.repirl.mode == "code"


def unit_rows(pool_size: int) -> int:
  """Rows the update keeps together: whole pools, and as many demonstrations as rollouts.

  The loop splits a PRM batch into mini- and micro-batches by leading-axis entries, so the batch
  is laid out [units, unit_rows, ...]: a unit is one pool when the pool is even (it then holds
  equal numbers of interleaved rollouts and demonstrations) and two pools when it is odd, so every
  mini-batch holds rollouts and demonstrations 1:1 however the loop strides over units.
  """
  return pool_size if pool_size % 2 == 0 else 2 * pool_size


# --- the official recipe (mode "code") -----------------------------------------------------------


def code_advantages(options, x: RLInputs) -> Advantages:
  """Token advantages from the updated RM's rewards (`irl.token_advantages`); the masked
  r_phi[b, t] itself is the process reward of prm/step_auroc (`Advantages.process_reward`)."""
  r = x.prm_token * x.mask
  token = irl.token_advantages(r, x.mask, x.outcome, x.group_size, options.repirl.lam)
  length = jnp.maximum(jnp.sum(x.mask, axis=1), 1.0)
  mean_reward = jnp.sum(r, axis=1) / length
  expert = (x.outcome > EXPERT_SCORE).astype(jnp.float32)
  mean_over = lambda w: jnp.sum(w * mean_reward) / jnp.maximum(jnp.sum(w), 1.0)
  return Advantages(token, {
      "repirl/z": irl.process_return_scale(r, x.mask),
      "repirl/return_mean": jnp.mean(jnp.sum(r, axis=1)),
      # Length-normalised RM reward of correct and failed rollouts: the RM's separation.
      "repirl/reward_correct": mean_over(expert), "repirl/reward_failed": mean_over(1.0 - expert)},
      process_reward=r)


def rm_score_fn(model_cfg, options, chunk: int = 0):
  """The reward head's r_phi [B, N] of any sequence batch (the PRM's per-token output)."""
  del options, chunk  # the head reads hidden states, not vocabulary logits: nothing to chunk

  def score(params, seq):
    return reward_head.token_rewards(model_cfg, params, seq.tokens, seq.token_mask,
                                     seq.response_mask, seq.prompt_len)

  return score


def rm_loss_fn(model_cfg, options, chunk: int = 0):
  """The pooled RM loss as (sum over pools, (number of pools, {})), so micro-batches add up to
  the official mean over the pools of a mini-batch (`irl.pool_losses`).

  The batch is (seq, old_logp, is_expert) with leaves [units, unit_rows, ...] (`unit_rows`); the
  unit's rows are scored one slot at a time (a checkpointed map), so a micro-batch of m units
  keeps the activations of m sequences, not m * unit_rows.
  """
  pool = options.repirl.pool_size
  score = rm_score_fn(model_cfg, options, chunk)

  def loss(params, batch):
    seq, old_logp, is_expert = batch
    m, u = is_expert.shape
    slots = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), seq)  # [u, m, ...]
    r = jax.lax.map(jax.checkpoint(lambda s: score(params, s)), slots)
    flat = lambda a: jnp.reshape(a, (m * u,) + a.shape[2:])
    losses, valid = irl.pool_losses(flat(jnp.swapaxes(r, 0, 1)), flat(seq.response_mask),
                                    flat(old_logp), flat(is_expert), pool)
    return (jnp.sum(jnp.where(valid, losses, 0.0)),
            (jnp.sum(valid.astype(jnp.float32)), {}))

  return loss


@functools.partial(jax.jit, static_argnames=("unit", "pseudo_experts"))
def code_batch(seq, demos, old_logp, outcome, *, unit: int, pseudo_experts: bool):
  """The RM batch: rollout i then its demonstration, for every i (the official interleaving),
  as (seq, old_logp, is_expert) with leaves [2B / unit, unit, ...], and its metrics.

  Demonstrations are experts; a rollout is a pseudo-expert when its score exceeds 0.99 (and
  `pseudo_experts`); the other rollouts are samples, weighted by their rollout log-probs.
  """
  pair = lambda a, b: jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])
  rows = jax.tree_util.tree_map(pair, seq, demos)
  pseudo = (outcome > EXPERT_SCORE) & pseudo_experts
  is_expert = pair(pseudo, jnp.ones_like(pseudo))
  logp = pair(old_logp, jnp.zeros_like(old_logp))  # never read: every demonstration is an expert
  units = lambda a: jnp.reshape(a, (a.shape[0] // unit, unit) + a.shape[1:])
  batch = (jax.tree_util.tree_map(units, rows), units(logp), units(is_expert))
  return batch, {"pseudo_experts": jnp.mean(pseudo.astype(jnp.float32))}


def demonstrations(x: PrmInputs, per_prompt: int):
  """`per_prompt` rows per prompt of the task's solution + EOS (cut to the response length), in
  the order of the rollouts' groups."""
  n = x.group_size
  rows = []
  for ex in x.examples[::n]:
    demo = (x.tokenizer.encode(ex["solution"]) + [x.tokenizer.eos_id])[:x.max_new_tokens]
    rows += [demo] * per_prompt
  prompts = [p for p in x.prompt_ids[::n] for _ in range(per_prompt)]
  return x.pack(prompts, rows)


def rm_batch(options, x: PrmInputs):
  """A demonstration beside every rollout, in units of `unit_rows` rows."""
  n, o = x.group_size, options.repirl
  if o.demos_per_prompt not in (0, n):
    raise ValueError(f"algo.repirl.demos_per_prompt={o.demos_per_prompt}: code mode pairs one "
                     f"demonstration with every rollout; set it to 0 (or rollout.n={n}).")
  unit = unit_rows(o.pool_size)
  rows = 2 * x.seq.tokens.shape[0]
  if rows % unit:
    raise ValueError(f"The RM batch of {rows} rows (rollouts + demonstrations) does not split "
                     f"into units of {unit} rows; make algo.repirl.pool_size divide the rollouts.")
  if rows % (o.rm_mini_batch_size or rows):
    raise ValueError(f"The RM batch of {rows} rows (rollouts + demonstrations) does not split "
                     f"into mini-batches of algo.repirl.rm_mini_batch_size={o.rm_mini_batch_size} "
                     "rows; make it divide twice the rollouts per step (0: one step).")
  return code_batch(x.seq, demonstrations(x, n), x.old_logp, x.outcome, unit=unit,
                    pseudo_experts=o.pseudo_experts)


# --- the earlier reconstruction (mode "implicit") -----------------------------------------------


def implicit_advantages(options, x: RLInputs) -> Advantages:
  """RLOO over s_b = r_o + lambda * R_phi(y_b), constant over the response; the per-token
  r_phi(y_t) = beta log(pi_phi / pi_ref)(y_t) is the process reward of prm/step_auroc."""
  prm_rewards = options.repirl.beta * (x.prm_token - x.ref_logp) * x.mask
  score = x.outcome + options.repirl.lam * irl.sequence_reward(prm_rewards, x.mask)
  return Advantages(adv.rloo(score, x.group_size)[:, None] * x.mask, {
      "repirl/prm_return": jnp.mean(irl.sequence_reward(prm_rewards, x.mask))},
      process_reward=prm_rewards)


def implicit_loss_fn(model_cfg, options, chunk: int = 0):
  """rePIRL's max-ent IRL objective as a sum over trajectories, so micro-batches add up.

      L(phi) = sum_b c_b R_phi(tau_b),   R_phi = beta sum_t log(pi_phi(y_t) / pi_ref(y_t))

  with the coefficients c_b of `rewards.irl.irl_coefficients` (-1/E for experts, the importance
  weights for samples, 0 for padding) computed before the update. The batch is
  (seq, ref_logp, coef, share): `share` sums to 1 over the batch, so the accumulated gradient is
  that of L itself.
  """
  beta = options.repirl.beta

  def loss(params, batch):
    seq, ref, coef, share = batch
    logp = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask, seq.prompt_len, chunk)
    returns = irl.sequence_reward(beta * (logp - ref), seq.response_mask)
    return jnp.sum(coef * returns), (jnp.sum(share), {})

  return loss


@functools.partial(jax.jit, static_argnames=("beta", "pseudo_experts", "rows"))
def irl_batch(experts, expert_ref, expert_prm, seq, ref_logp, prm_token, old_logp, outcome, *,
              beta: float, pseudo_experts: bool, rows: int):
  """The implicit PRM's batch: demonstrations then rollouts, with the IRL coefficient of every row.

  Demonstrations are experts; a correct rollout is a pseudo-expert when `pseudo_experts`, and
  failed rollouts are the importance samples of log Z. Returns
  ((seq, ref_logp, coef, share) padded to `rows` with zero-coefficient copies, metrics).
  """
  cat = lambda a, b: jnp.concatenate([a, b])
  num_experts, num_samples = experts.tokens.shape[0], seq.tokens.shape[0]
  both = jax.tree_util.tree_map(cat, experts, seq)
  ref = cat(expert_ref, ref_logp)
  returns = beta * jnp.sum((cat(expert_prm, prm_token) - ref) * both.response_mask, axis=1)
  correct = outcome > 0
  is_expert = cat(jnp.ones(num_experts, bool), correct & pseudo_experts)
  is_sample = cat(jnp.zeros(num_experts, bool), ~correct)
  sample_logp = cat(jnp.zeros(num_experts), jnp.sum(old_logp * seq.response_mask, axis=1))
  coef, metrics = irl.irl_coefficients(returns, sample_logp, is_expert, is_sample)
  pad = rows - num_experts - num_samples
  extend = lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)])
  coef = jnp.concatenate([coef, jnp.zeros(pad)])
  metrics["experts"] = jnp.sum(is_expert.astype(jnp.float32))
  return ((jax.tree_util.tree_map(extend, both), extend(ref), coef, jnp.full(rows, 1.0 / rows)),
          metrics)


def implicit_batch(options, x: PrmInputs):
  """The demonstrations (one per prompt unless algo.repirl.demos_per_prompt) and the B
  rollouts, padded to a whole number of micro-batches."""
  experts = demonstrations(x, options.repirl.demos_per_prompt or 1)
  rows = x.seq.tokens.shape[0] + experts.tokens.shape[0]
  rows = -(-rows // x.micro_rows) * x.micro_rows
  return irl_batch(experts, x.ref_logprobs(experts), x.prm_token_of(experts), x.seq, x.ref_logp,
                   x.prm_token, x.old_logp, x.outcome, beta=options.repirl.beta,
                   pseudo_experts=options.repirl.pseudo_experts, rows=rows)


# --- the recipe: one method, its mode chosen by algo.repirl.mode ----------------------------------


def repirl_advantages(options, x: RLInputs) -> Advantages:
  return code_advantages(options, x) if _code(options) else implicit_advantages(options, x)


def prm_loss_fn(model_cfg, options, chunk: int = 0, group: int = 1):
  del group  # the RM batch interleaves demonstrations with the rollouts: no shared prompts
  return (rm_loss_fn if _code(options) else implicit_loss_fn)(model_cfg, options, chunk)


def prm_batch(options, x: PrmInputs):
  return rm_batch(options, x) if _code(options) else implicit_batch(options, x)


def prm_score_fn(model_cfg, options, chunk: int = 0):
  """r_phi of the reward head (code) or log pi_phi of the implicit PRM."""
  if _code(options):
    return rm_score_fn(model_cfg, options, chunk)
  return lambda params, s: response_logprobs(model_cfg, params, s.tokens, s.token_mask,
                                             s.prompt_len, chunk)


def prm_init(model_cfg, options, policy_params, key):
  """Code: the reward head on a copy of the policy; implicit: the copy itself."""
  if _code(options):
    return reward_head.init_reward_model(model_cfg, policy_params, key, options.repirl.head_width)
  return policy_params


def prm_mini_batch_rows(options, config) -> int:
  """Units per RM step (code: algo.repirl.rm_mini_batch_size rows / `unit_rows`); implicit: one
  step over the whole batch."""
  if not _code(options) or not options.repirl.rm_mini_batch_size:
    return 0
  return options.repirl.rm_mini_batch_size // unit_rows(options.repirl.pool_size)


def check(options) -> str | None:
  o = options.repirl
  if o.mode not in MODES:
    return f"algo.repirl.mode={o.mode!r}; choose one of {', '.join(MODES)}."
  for key in ("pool_size", "head_width"):
    if o[key] < 1:
      return f"algo.repirl.{key}={o[key]} must be >= 1."
  if o.demos_per_prompt < 0:
    return f"algo.repirl.demos_per_prompt={o.demos_per_prompt} must be >= 0."
  unit = unit_rows(o.pool_size)
  if o.rm_mini_batch_size < 0 or o.rm_mini_batch_size % unit:
    return (f"algo.repirl.rm_mini_batch_size={o.rm_mini_batch_size} must be 0 (the whole RM "
            f"batch) or a positive multiple of {unit} rows (whole pools of "
            f"algo.repirl.pool_size={o.pool_size}, rollouts and demonstrations 1:1).")
  return None


register(Recipe("repirl", repirl_advantages, min_group_size=2, check=check, reads_old_logp=True,
                needs_ref=lambda options: not _code(options),
                prm=PrmTraining(prm_loss_fn, prm_batch, refresh=_code, score=prm_score_fn,
                                mini_batch_rows=prm_mini_batch_rows, init=prm_init)))
