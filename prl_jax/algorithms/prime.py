"""PRIME (arXiv 2502.01456): implicit process rewards from a PRM trained on outcome labels.

Token process reward r_t = beta log(pi_phi/pi_ref)(y_t), summed per step; in code mode the scores
are divided by the largest |return-to-go| of each of `algo.prime.norm_shards` contiguous shards
of the batch (`normalize_scores`; the official trainer normalises per data-parallel worker). The
outcome and process sources each get an RLOO baseline, their returns are added 1:1 and whitened
over the batch (docs/algorithms.md; `algo.prime.*` selects mode, granularity and base estimator).
The PRM pi_phi is updated every step on the rollouts' outcomes, in mini-batches, before the
advantages are read: single forward (mini-batch k scored by the PRM after k-1 updates) or double
forward (all updates, then every rollout re-scored), as the official `dp_prime.py`. The single
forward's scores are the log-probs of the update's own forward (the loss's), not a second pass.
"""

from __future__ import annotations

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import (Advantages, PrmInputs, PrmTraining, Recipe, RLInputs,
                                       register)
from prl_jax.models.logprobs import response_logprobs
from prl_jax.rewards import implicit


def prime_advantages(options, x: RLInputs) -> Advantages:
  """A = whiten(R_outcome + R_process) with per-source RLOO baselines (PRIME Eq. 5 / code)."""
  scores = implicit.implicit_scores(x.prm_token, x.ref_logp, x.mask, x.step_end)
  if options.prime.mode == "code":
    scores = implicit.normalize_scores(scores, x.mask, options.prime.norm_shards)
  else:
    scores = options.prime.beta * scores
  token_adv = adv.prime(scores, x.outcome, x.mask, x.group_size, mode=options.prime.mode,
                        gamma=options.gamma, base=options.prime.base)
  accuracy, pairs = implicit.pairwise_accuracy(scores, x.outcome, x.mask, x.group_size)
  return Advantages(token_adv, {"prm/pairwise_accuracy": accuracy, "prm/pairs": pairs},
                    process_reward=options.prime.beta * (x.prm_token - x.ref_logp) * x.mask)


def prm_loss_fn(model_cfg, options, chunk: int = 0, group: int = 1):
  """PRIME's implicit-PRM cross-entropy on outcome labels, mean over responses (section 3).

      L(phi) = -(1/B) sum_b [ r_b log sigma(R_phi(y_b)) + (1 - r_b) log(1 - sigma(R_phi(y_b))) ],
      R_phi = beta sum_t log(pi_phi(y_t) / pi_ref(y_t))

  A `RowsLossFn`: its per-row output is log pi_phi(y_t) [B, N], the PRM's score of the rows
  under the parameters the gradient is taken at, so a single forward reuses it (`loss_scores`).
  Its rows are the rollouts, so with `group` > 1 each group's prompt runs once.
  """
  beta = options.prime.beta

  def loss(params, batch):
    seq, ref_logp, outcome = batch
    logp = response_logprobs(model_cfg, params, seq.tokens, seq.token_mask, seq.prompt_len,
                             chunk, group=group)
    total, count = implicit.prime_ce_loss(logp, ref_logp, seq.response_mask, outcome, beta)
    return total, (count, {}, logp)

  return loss


def prm_batch(options, x: PrmInputs):
  """The rollouts with their reference log-probs and outcome labels."""
  return (x.seq, x.ref_logp, x.outcome), {}


def prm_mini_batch_rows(options, config) -> int:
  """Rows per PRM step: algo.prime.prm_mini_batch_size, or the policy's mini-batch when 0 (the
  official run: 256 responses, as many PRM steps per RL step as policy steps)."""
  return options.prime.prm_mini_batch_size or config.train.mini_batch_size


def check(options) -> str | None:
  if options.prime.norm_shards < 1:
    return (f"algo.prime.norm_shards={options.prime.norm_shards} must be >= 1 (1: normalise over "
            "the whole batch).")
  if options.prime.prm_mini_batch_size < 0:
    return (f"algo.prime.prm_mini_batch_size={options.prime.prm_mini_batch_size} must be >= 0 "
            "(0: the policy's train.mini_batch_size).")
  return None


def step_mode(options) -> str:
  """prime.granularity "token" or "whole" fixes the steps; "step" uses algo.steps."""
  granularity = options.prime.granularity
  return options.steps.mode if granularity == "step" else granularity


register(Recipe("prime", prime_advantages, needs_ref=True, min_group_size=2,
                prm=PrmTraining(prm_loss_fn, prm_batch,
                                refresh=lambda options: options.prime.double_forward,
                                loss_scores=True,
                                mini_batch_rows=prm_mini_batch_rows),
                step_mode=step_mode, check=check, unit_outcome=True))
