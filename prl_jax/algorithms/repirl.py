"""rePIRL (arXiv 2602.07832, reconstructed): a PRM learned by maximum-entropy inverse RL.

The PRM is implicit, r_phi(y_t) = beta log(pi_phi/pi_ref)(y_t) (option (a) of ALGORITHMS.md
section 6); it is trained against expert demonstrations with policy samples as importance samples
(`prl_jax.rewards.irl.irl_loss`). The policy takes RLOO on the sequence reward
s = r_o + lambda * sum_t r_phi(y_t).

The whole method is this file: the advantage, the PRM's loss, and its batch (one demonstration
per prompt, the task's solution, beside the rollouts, each row with its IRL coefficient).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import (Advantages, PrmInputs, PrmTraining, Recipe, RLInputs,
                                        register)
from prl_jax.models.logprobs import response_logprobs
from prl_jax.rewards import irl


def repirl_advantages(options, x: RLInputs) -> Advantages:
  """RLOO over s_b = r_o + lambda * R_phi(y_b), constant over the response."""
  prm_rewards = options.repirl.beta * (x.prm_token - x.ref_logp) * x.mask
  score = x.outcome + options.repirl.lam * irl.sequence_reward(prm_rewards, x.mask)
  return Advantages(adv.rloo(score, x.group_size)[:, None] * x.mask, {
      "repirl/prm_return": jnp.mean(irl.sequence_reward(prm_rewards, x.mask))})


def prm_loss_fn(model_cfg, options, chunk: int = 0):
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
  """rePIRL's PRM batch: demonstrations then rollouts, with the IRL coefficient of every row.

  Demonstrations are experts; a correct rollout is a pseudo-expert when `pseudo_experts`, and
  failed rollouts are the importance samples of log Z (ALGORITHMS.md section 6). Returns
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


def expert_sequences(x: PrmInputs):
  """One demonstration per prompt (the task's solution + EOS): rePIRL's expert trajectories."""
  n = x.group_size
  demos = [x.tokenizer.encode(ex["solution"]) + [x.tokenizer.eos_id] for ex in x.examples[::n]]
  return x.pack(x.prompt_ids[::n], [d[:x.max_new_tokens] for d in demos])


def prm_batch(options, x: PrmInputs):
  """The demonstrations and the B rollouts, padded to a whole number of micro-batches."""
  experts = expert_sequences(x)
  rows = x.seq.tokens.shape[0] + experts.tokens.shape[0]
  rows = -(-rows // x.micro_rows) * x.micro_rows
  return irl_batch(experts, x.ref_logprobs(experts), x.prm_token_of(experts), x.seq, x.ref_logp,
                   x.prm_token, x.old_logp, x.outcome, beta=options.repirl.beta,
                   pseudo_experts=options.repirl.pseudo_experts, rows=rows)


register(Recipe("repirl", repirl_advantages, needs_ref=True, min_group_size=2,
                # One optimizer step over the whole PRM batch, scored before it.
                prm=PrmTraining(prm_loss_fn, prm_batch, mini_batch_rows=lambda options, c: 0)))
