"""Rollout collection: the prompt stream, sampling, verification and PRIME's accuracy filter.

The filter keeps a prompt's group when its mean outcome lies in [filter.acc_lo, filter.acc_hi]
and refills as the official PRIME trainer (`ray_trainer.py`, RayPRIMETrainer.fit): rounds of
prompts are sampled until `prompts_per_step` groups pass, and the prompts of surplus accepted
groups are buffered and sampled again (by the next step's policy) at the start of the next step.
Our rounds are bounded by `filter.max_rounds`; a step that hits the bound is topped up with
rejected groups, warned about and counted. The buffer is part of the stream's resumable state.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from prl_jax.algorithms.filters import accuracy_filter, truncation_filter
from prl_jax.rewards.plugins import score_with_metrics
from prl_jax.run.context import RunContext
from prl_jax.models.config import ModelConfig
from prl_jax.sampling import HostRollout, SamplingConfig, sample_in_calls

logger = logging.getLogger(__name__)


class PromptStream:
  """Deterministic, resumable order over the training prompts: a fresh shuffle every epoch.

  `position` counts the prompts drawn so far; `buffer` holds the positions of prompts whose
  groups passed the filter beyond a full batch, to be sampled first at the next step. Both go
  into the checkpoint, so a resumed run draws the same prompts.
  """

  def __init__(self, examples: list[dict], seed: int, position: int = 0,
               buffer: list[int] | None = None):
    self.examples, self.seed, self.position = examples, seed, position
    self.buffer = list(buffer or [])
    self._order = (None, None)  # (epoch, permutation): one shuffle computed per epoch
    # Steps of this process that hit filter.max_rounds: the warning's count. Not checkpointed
    # (every step's `filter/exhausted` metric is the record).
    self.exhausted_steps = 0

  def example(self, position: int) -> dict:
    """The prompt at a position of the stream."""
    epoch, index = divmod(position, len(self.examples))
    if self._order[0] != epoch:
      self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(
          len(self.examples)))
    return self.examples[self._order[1][index]]

  def take_positions(self, count: int) -> list[int]:
    out = list(range(self.position, self.position + count))
    self.position += count
    return out

  def take(self, count: int) -> list[dict]:
    return [self.example(p) for p in self.take_positions(count)]


@dataclasses.dataclass
class RolloutGroup:
  """The n responses of one prompt, as sampled and verified."""

  example: dict
  prompt_ids: list[int]
  response_ids: list[list[int]]  # [n]
  outcome: np.ndarray  # [n]
  truncated: np.ndarray  # [n]
  texts: list[str]  # [n] the decoded responses the verifier checked
  logprobs: list[np.ndarray]  # [n] the sampler's log-probs of response_ids (see sample_parts)


@dataclasses.dataclass
class Rollouts:
  """Host-side rollout groups that passed the filters (P prompts x n responses)."""

  examples: list[dict]  # one per response (repeated per group)
  prompt_ids: list[list[int]]
  response_ids: list[list[int]]
  texts: list[str]  # the decoded responses the verifier checked
  outcome: np.ndarray  # [B]
  truncated: np.ndarray  # [B]
  metrics: dict
  logprobs: list[np.ndarray]  # [B] the sampler's log-probs of each response's tokens

  @classmethod
  def of(cls, groups: list[RolloutGroup], metrics: dict) -> "Rollouts":
    """Groups flattened to rows, the n responses of a group contiguous."""
    return cls(examples=[g.example for g in groups for _ in g.response_ids],
               prompt_ids=[g.prompt_ids for g in groups for _ in g.response_ids],
               response_ids=[r for g in groups for r in g.response_ids],
               texts=[t for g in groups for t in g.texts],
               outcome=np.concatenate([g.outcome for g in groups]),
               truncated=np.concatenate([g.truncated for g in groups]), metrics=metrics,
               logprobs=[lp for g in groups for lp in g.logprobs])


def sample_parts(ctx: RunContext, params, prompts: list[list[int]], key) -> list[HostRollout]:
  """rollout.n responses per prompt, contiguous, as the sampler calls' host rollouts.

  At most `rollout.max_rows` rows go through one sampler call (0: all at once), so the KV cache
  holds one call's rows; call i draws with fold_in(key, i) (unchunked: `key` itself).
  """
  n, max_rows = ctx.config.rollout.n, ctx.config.rollout.max_rows
  per_call = max(1, max_rows // n) if max_rows else len(prompts)
  calls = [prompts[start:start + per_call] for start in range(0, len(prompts), per_call)]
  return sample_in_calls(params, ctx.model_cfg, calls, key, ctx.sampling,
                         mesh=ctx.mesh if ctx.mesh.size > 1 else None, rules=ctx.rules,
                         fold_single=False, lanes=ctx.config.rollout.lanes)


def sample_rows(ctx: RunContext, params, prompts: list[list[int]], key):
  """(tokens, bool mask, truncated) on the host of `sample_parts`, the calls concatenated."""
  parts = sample_parts(ctx, params, prompts, key)
  return (np.concatenate([p.tokens for p in parts]), np.concatenate([p.mask for p in parts]),
          np.concatenate([p.truncated for p in parts]))


def _power_of_ten(count: int) -> bool:
  """count in {1, 10, 100, ...}."""
  while count and count % 10 == 0:
    count //= 10
  return count == 1


def collect_rollouts(ctx: RunContext, params, stream: PromptStream, key) -> Rollouts:
  """Sample n responses per prompt, verify, filter by accuracy band / truncation, refill.

  Every round samples `prompts_per_step * filter.oversample` prompts (one shape, one compiled
  sampler), the buffered prompts of the previous step first, then new ones from the stream.
  Rounds continue until `prompts_per_step` groups pass or `filter.max_rounds` is reached. The
  first `prompts_per_step` accepted groups form the batch; the prompts of further accepted groups
  go to `stream.buffer`. A step that hits the bound sets `filter/exhausted` (and warns, the 1st,
  10th, 100th... time in a run) and is topped up with rejected groups so the batch shape never
  changes. Without the filter: one round, every
  group kept.
  """
  config = ctx.config
  n, want = config.rollout.n, config.rollout.prompts_per_step
  filtering = config.filter.enable
  draw = want * config.filter.oversample if filtering else want
  max_rounds = config.filter.max_rounds if filtering else 1
  accepted, rejected = [], []  # (stream position, group)
  rounds, sampled_tokens, all_outcomes, reward_metrics = 0, 0, [], []
  while len(accepted) < want and rounds < max_rounds:
    positions, stream.buffer = stream.buffer[:draw], stream.buffer[draw:]
    positions += stream.take_positions(draw - len(positions))
    examples = [stream.example(p) for p in positions]
    prompts = [ctx.tokenizer.encode(ex["prompt"]) for ex in examples]
    parts = sample_parts(ctx, params, prompts, jax.random.fold_in(key, rounds))
    tokens, mask, truncated, logprobs = (np.concatenate([getattr(p, k) for p in parts]) for k in
                                         ("tokens", "mask", "truncated", "logprobs"))
    responses = [row[m].tolist() for row, m in zip(tokens, mask)]
    response_logprobs = [row[m] for row, m in zip(logprobs, mask)]
    sampled_tokens += int(mask.sum())
    texts = [ctx.tokenizer.decode(r) for r in responses]
    rewards, round_metrics = score_with_metrics(ctx.verifier, texts,
                                                [ex for ex in examples for _ in range(n)])
    outcome = np.asarray(rewards, np.float32)
    reward_metrics.append(round_metrics)  # reward/<name> of task.reward_fn's functions
    all_outcomes.append(outcome)
    keep = np.ones(draw, bool)
    if filtering:
      keep &= np.asarray(accuracy_filter(outcome, n, config.filter.acc_lo, config.filter.acc_hi))
      if config.filter.drop_truncated:
        keep &= np.asarray(truncation_filter(truncated, n))
    for p, ex in enumerate(examples):
      rows = slice(p * n, (p + 1) * n)
      group = RolloutGroup(ex, prompts[p], responses[rows], outcome[rows], truncated[rows],
                           texts[rows], response_logprobs[rows])
      (accepted if keep[p] else rejected).append((positions[p], group))
    rounds += 1
  exhausted = len(accepted) < want
  if exhausted and filtering:
    stream.exhausted_steps += 1
    if _power_of_ten(stream.exhausted_steps):  # the 1st, 10th, 100th...: a signal, not a flood
      logger.warning("filter: %d of %d groups passed in filter.max_rounds=%d rounds; the batch is "
                     "topped up with rejected groups (raise filter.max_rounds or widen the band). "
                     "Steps topped up so far: %d (warned at 1, 10, 100, ...; every step's "
                     "filter/exhausted metric records it).", len(accepted), want, max_rounds,
                     stream.exhausted_steps)
  stream.buffer += [position for position, _ in accepted[want:]]
  groups = [group for _, group in (accepted + rejected)[:want]]
  sampled = np.concatenate(all_outcomes)
  per_reward = {k: float(np.mean([m[k] for m in reward_metrics if k in m]))
                for k in reward_metrics[0]}  # rounds are equal-sized: the mean of round means
  return Rollouts.of(groups, {**per_reward,
      "rollout/reward": float(sampled.mean()), "rollout/rounds": rounds,
      "rollout/sampled": len(sampled), "rollout/buffered": len(stream.buffer),
      "filter/accepted": min(len(accepted), want) / want,
      "filter/exhausted": float(exhausted and filtering), "rollout/tokens": sampled_tokens})


def old_logp_source(config) -> str:
  """train.old_logp_source: "auto" (the default), "forward" (a teacher-forced pass of the
  sampling policy) or "sampler" (the log-probs the sampler drew the tokens with)."""
  source = config.train.get("old_logp_source", "forward")
  if source not in ("auto", "forward", "sampler"):
    raise ValueError(f"train.old_logp_source={source!r}; choose 'auto', 'forward' or 'sampler'.")
  return source


def resolve_old_logp(source: str, *, updates_per_step: int, policy_loss: str,
                     reads_old_logp: bool) -> str:
  """Where a run's old-policy log-probs come from: "update", "forward" or "sampler".

  "auto" resolves to "update" when nothing but the policy loss reads log pi_old and the loss
  reads it at the sampling parameters only: one optimizer step per RL step (ppo_epochs = 1, one
  mini-batch; micro-batches share its parameters), or a loss that never reads it (RAFT's NLL).
  That step's own forward then gives log pi_old = stop_gradient(log pi_theta), the numbers the
  teacher-forced pass would give, and that pass is skipped. Otherwise "auto" is "forward".
  Tunix's GRPO skips that pass when num_iterations is 1; verl's actor takes the same
  stop-gradient form in its loss when it runs one mini-batch for one epoch (`on_policy`).
  """
  if source != "auto":
    return source
  on_policy = policy_loss == "nll" or updates_per_step == 1
  return "update" if on_policy and not reads_old_logp else "forward"


def sampler_logp_refusal(scfg: SamplingConfig, model_cfg: ModelConfig) -> str | None:
  """Why the sampler's log-probs are not the old policy's log-probs, or None when they are.

  PPO's old log-prob is log pi_old(y_t | y_<t) of the untempered, untruncated policy. The sampler
  returns log softmax(z / T)[y] before top-k/top-p truncation, which is that quantity when T = 1
  (decode and teacher-forced forward then agree to ~1e-6 in float32, tests/test_sampling.py).
  At T != 1 it is the tempered distribution's; in bfloat16 the two paths round differently.
  """
  if scfg.greedy or scfg.temperature != 1.0:
    return f"rollout.temperature={scfg.temperature} (greedy={scfg.greedy}); needs 1.0"
  if scfg.top_k or scfg.top_p != 1.0:
    return f"rollout truncation top_k={scfg.top_k}, top_p={scfg.top_p}; needs 0 and 1.0"
  if scfg.logprob_mode == "processed":  # equal here, but say the mode a reader expects
    return "rollout.logprob_mode='processed'; needs 'temperature' or 'raw'"
  if model_cfg.dtype != "float32":
    return f"model.dtype={model_cfg.dtype}; needs float32"
  return None


def response_array(rows: list[np.ndarray], width: int) -> np.ndarray:
  """[B, width] float32: row i's values from position 0, zeros after (make_sequences' layout)."""
  out = np.zeros((len(rows), width), np.float32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def sequence_prompt_len(prompt_ids: list[list[int]], limit: int) -> int:
  """P of a step's teacher-forced sequences: the longest prompt rounded up to a quarter of its
  octave (a multiple of max(4, 2^(floor(log2 L) - 2)), so at most ~4 shapes per doubling and few
  compiles), at most `limit` (task.max_prompt_len).

  Left padding beyond the longest prompt only costs compute: padded keys get exactly zero
  attention weight and positions count real tokens, so each row's log-probs are the same
  (tests/test_rl_speed.py). The reference, PRM and update passes then run on P + N positions
  instead of limit + N.
  """
  longest = max(len(p) for p in prompt_ids)
  step = max(4, 1 << max(longest.bit_length() - 3, 0))
  return min(-(-longest // step) * step, limit)
