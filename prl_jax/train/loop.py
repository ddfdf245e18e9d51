"""The one training loop: sample -> verify -> filter -> log-probs -> rewards -> advantages -> update.

Python on the host orchestrates; every device computation is a jitted pure function built once
per run (`RunFunctions`). The method is a `Recipe` (prl_jax.algorithms.recipes), never a branch on
a name. Rollouts are synchronous: every group is sampled by the current policy, which PRIME's
RLOO baseline requires.

Exact resume: the step's randomness is fold_in(run key, step) and the data position and the
filter's prompt buffer are saved with the checkpoint, so "2k steps" equals "k steps, restore,
k steps" bit for bit on one machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prl_jax import distributed
from prl_jax.algorithms.recipes import PrmInputs, Recipe, RLInputs
from prl_jax.algorithms.registry import get_recipe
from prl_jax.eval.evaluate import evaluate
from prl_jax.host_lanes import resolve_lanes, rows_in_lanes
from prl_jax.models.logprobs import response_logprobs
from prl_jax.ops.steps import step_end_mask
from prl_jax.prm.frozen import frozen_scorer
from prl_jax.prm.step_fn import place_on_step_ends
from prl_jax.rewards.plugins import check_unit_outcome
from prl_jax.run import updates
from prl_jax.run.batch import PolicyBatch, SequenceBatch, make_sequences
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.config_record import record_config
from prl_jax.run.context import RunContext, build_context
from prl_jax.run.interrupt import StopSignals, nothing_to_do
from prl_jax.run.metrics_file import MetricsWriter
from prl_jax.run.nonfinite import NonFiniteError, error_message, nonfinite
from prl_jax.run import tracking
from prl_jax.run.state import (TrainState, applied_learning_rates, init_state, optimizers,
                               wrap_key)
from prl_jax.run.update_lanes import epoch_update_fn, minibatch_update_fn
from prl_jax.train import objectives
from prl_jax.train.batch_split import (batch_split, micro_rows, prm_prompt_group, prm_rows,
                                       prompt_group)
from prl_jax.train.rollouts import (PromptStream, Rollouts, collect_rollouts, old_logp_source,
                                    resolve_old_logp, response_array, sampler_logp_refusal,
                                    sequence_prompt_len)
from prl_jax.train.step_checker import checker_step_rewards
from prl_jax.train.step_diagnostics import step_auroc


@dataclasses.dataclass
class RunFunctions:
  """The device functions of one run (jitted once, reused every step) and the recipe's scorer."""

  logprobs: Any  # (params, any sequence batch) -> [B, N]
  rollout_logprobs: Any  # the same for a step's rollouts, each group's prompt run once
  advantages: Any
  policy_update: Any
  prm_update: Any | None  # a PRM trained during the run (Recipe.prm): (state, batch, seq) ->
  # (state, the rollouts' prm_token of a single forward or None, metrics)
  value_forward: Any | None
  value_update: Any | None
  prm_scores: Any | None = None  # Rollouts -> FrozenScores of a frozen PRM (Recipe.frozen_prm)
  prm_token: Any | None = None  # (PRM params, seq) -> [B, N] the trained PRM's per-token output
  old_logp: str = "forward"  # their source: "forward", "sampler" or "update" (resolve_old_logp)


def _loss_config(config) -> objectives.PolicyLossConfig:
  loss = config.algo.loss
  return objectives.PolicyLossConfig(
      kind="ppo", clip_low=loss.clip_low, clip_high=loss.clip_high,
      dual_clip=loss.dual_clip if loss.dual_clip > 0 else None, agg=loss.agg,
      entropy_coef=loss.entropy_coef, kl_coef=loss.kl_coef, kl_kind=loss.kl_kind,
      chunk=config.train.logprob_chunk)


def _check_score_rows(rows: int, seq: SequenceBatch):
  if rows != seq.tokens.shape[0]:
    raise ValueError(f"PrmTraining.loss_scores: the PRM batch has {rows} rows, the "
                     f"rollouts {seq.tokens.shape[0]}; its rows must be the rollouts.")


def _prm_functions(config, model_cfg, recipe: Recipe, options, by_rows, lanes: int):
  """The PRM update (state, batch, seq) -> (state, single-forward scores or None, metrics) and
  the PRM's per-token output (params, seq) -> [B, N] (`PrmTraining`), jitted; the update's
  gradients in `lanes` lanes where it needs no scoring pass between its steps."""
  chunk = config.train.logprob_chunk
  prm_loss = recipe.prm.loss(model_cfg, options, chunk, prm_prompt_group(config, model_cfg,
                                                                       recipe))
  if recipe.prm.score is not None:
    score = recipe.prm.score(model_cfg, options, chunk)
  else:  # an implicit PRM: its response log-probs
    score = lambda params, s: response_logprobs(model_cfg, params, s.tokens, s.token_mask,
                                                s.prompt_len, chunk)
  prm_token = by_rows(score)
  refresh = recipe.prm.refresh(options)
  loss_scores = recipe.prm.loss_scores
  plain_loss = updates.dropping_rows(prm_loss) if loss_scores else prm_loss

  def tx_and_split(rows):
    num_mini, num_micro, block = prm_rows(config, recipe, rows)
    # Built per batch shape: the schedule advances once per RL step of num_mini PRM updates.
    return optimizers(config, updates_per_step=(1, num_mini, 1))[1], num_mini, num_micro, block

  def prm_update(state, batch, seq):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
    tx_prm, num_mini, num_micro, block = tx_and_split(rows)
    if refresh:  # the caller re-scores with the updated PRM
      state, metrics = updates.minibatch_updates(state, tx_prm, plain_loss, batch, num_mini,
                                                 num_micro, block)
      return state, None, metrics
    if loss_scores:  # mini-batch k's scores from its own update's forward, before that update
      _check_score_rows(rows, seq)
      state, metrics, scores = updates.minibatch_updates_with_rows(
          state, tx_prm, prm_loss, batch, num_mini, num_micro, block)
      return state, scores, metrics
    state, metrics, scores = updates.scored_minibatch_updates(
        state, tx_prm, prm_loss, batch, num_mini, num_micro, prm_token, seq, block)
    return state, scores, metrics

  if lanes == 1 or not (refresh or loss_scores):  # scoring between steps: one program
    return jax.jit(prm_update, donate_argnums=0), jax.jit(prm_token)

  @functools.cache
  def laned_update(rows):
    tx_prm, num_mini, num_micro, block = tx_and_split(rows)
    return minibatch_update_fn(tx_prm, updates.without_rows(plain_loss) if refresh else prm_loss,
                               num_minibatches=num_mini, num_micro=num_micro, block=block,
                               lanes=lanes)

  def prm_update_in_lanes(state, batch, seq):
    rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if not refresh:
      _check_score_rows(rows, seq)
    state, metrics, scores = laned_update(rows)(state, batch)
    return state, scores, metrics  # scores: None with refresh

  return prm_update_in_lanes, rows_in_lanes(prm_token, lanes)


def build_functions(ctx: RunContext, recipe: Recipe) -> RunFunctions:
  config, model_cfg = ctx.config, ctx.model_cfg
  num_mini, num_micro, num_logprob_chunks = batch_split(config)
  epochs = config.train.ppo_epochs
  # policy and value: epochs x mini-batches updates per RL step; the PRM's: see _prm_functions
  tx_policy, _, tx_value = optimizers(config, updates_per_step=(epochs * num_mini, 1,
                                                                epochs * num_mini))
  batch_rows = config.rollout.prompts_per_step * config.rollout.n
  group = prompt_group(config, model_cfg)
  old_source = resolve_old_logp(old_logp_source(config), updates_per_step=epochs * num_mini,
                                policy_loss=recipe.policy_loss,
                                reads_old_logp=recipe.reads_old_logp)
  loss_cfg = dataclasses.replace(_loss_config(config), kind=recipe.policy_loss,
                                 prompt_group=group, old_from_update=old_source == "update")
  policy_loss = objectives.policy_loss_fn(model_cfg, loss_cfg)
  options = ml_collections.FrozenConfigDict(config.algo)
  chunk = config.train.logprob_chunk
  if old_source == "sampler":
    refusal = sampler_logp_refusal(ctx.sampling, model_cfg)
    if refusal:
      raise ValueError(f"train.old_logp_source='sampler': the sampler's log-probs are not the "
                       f"old policy's here ({refusal}); use 'forward'.")

  lanes = resolve_lanes(config.train.update_lanes, ctx.mesh)
  policy_update = epoch_update_fn(tx_policy, policy_loss, num_epochs=epochs,
                                  num_minibatches=num_mini, num_micro=num_micro, block=group,
                                  lanes=lanes)

  logprob_rows = batch_rows // num_logprob_chunks

  def by_rows(fn, block=1):  # fn(params, seq) a micro-batch at a time: one forward's activations
    def chunked(params, seq):
      rows = seq.tokens.shape[0]
      # The fewest chunks of at most logprob_rows rows (whole groups of `block`) that divide this
      # batch (e.g. demonstrations).
      chunks = next(k for k in range(-(-rows // logprob_rows), rows + 1)
                    if rows % (k * block) == 0)
      return updates.chunked_rows(lambda s: fn(params, s), seq, chunks, block)
    return chunked

  prm_update = prm_token = None
  if recipe.prm is not None:
    prm_update, prm_token = _prm_functions(config, model_cfg, recipe, options, by_rows,
                                           lanes)

  value_forward = value_update = None
  if recipe.value:
    value_loss = objectives.value_loss_fn(model_cfg, config.algo.ppo.value_clip)
    value_forward = jax.jit(lambda p, seq: objectives.value_forward(model_cfg, p, seq))
    value_update = epoch_update_fn(tx_value, value_loss, num_epochs=epochs,
                                   num_minibatches=num_mini, num_micro=num_micro, lanes=lanes)

  logprobs = by_rows(lambda params, s: response_logprobs(model_cfg, params, s.tokens,
                                                          s.token_mask, s.prompt_len, chunk))
  rollout_logprobs = by_rows(lambda params, s: response_logprobs(
      model_cfg, params, s.tokens, s.token_mask, s.prompt_len, chunk, group=group), group)

  prm_scores = None
  if recipe.frozen_prm:  # a PRM from algo.erprm.prm_dir, or the step scorer algo.steps.score_fn
    prm_scores = frozen_scorer(ctx)

  return RunFunctions(
      logprobs=rows_in_lanes(logprobs, lanes),
      rollout_logprobs=rows_in_lanes(rollout_logprobs, lanes, group),
      advantages=jax.jit(lambda x: recipe.advantages(options, x)),
      policy_update=policy_update,
      prm_update=prm_update, value_forward=value_forward, value_update=value_update,
      prm_scores=prm_scores, prm_token=prm_token, old_logp=old_source)


def _step_ends(ctx: RunContext, recipe: Recipe, seq: SequenceBatch):
  """[B, N] step ends of the rollouts in the recipe's step mode (algo.steps unless it fixes one)."""
  s = ctx.config.algo.steps
  mode = recipe.step_mode(ctx.config.algo)
  delimiters = ctx.tokenizer.encode(s.delimiter) if mode == "delimiter" else None
  return step_end_mask(seq.response_mask, mode, length=s.length if mode == "fixed" else None,
                       delimiter_ids=delimiters,
                       token_ids=seq.tokens[:, seq.prompt_len:] if mode == "delimiter" else None)


def _step_diagnostics(ctx: RunContext, seq: SequenceBatch, rollouts: Rollouts,
                      process_reward) -> dict:
  """process/return_mean = mean_i sum_t r_p(i, t) over the batch's responses (the reward-hacking
  monitor compares it with the outcome reward), and prm/step_auroc of the method's process reward
  when the task has a step checker."""
  host = distributed.to_host
  reward, mask = host(process_reward), host(seq.response_mask)
  metrics = {"process/return_mean": float((reward * mask).sum(-1).mean())}
  auroc = step_auroc(reward, host(seq.tokens[:, seq.prompt_len:]), mask,
                     ctx.tokenizer.encode("\n"), rollouts.texts, rollouts.examples)
  if auroc is not None:
    metrics["prm/step_auroc"] = auroc
  return metrics


def _prm_step(ctx: RunContext, recipe: Recipe, fns: RunFunctions, state: TrainState,
              rollouts: Rollouts, seq: SequenceBatch, outcome, old_logp, ref_logp):
  """The recipe's PRM update on this step's rollouts: (new PRM state, the rollouts' prm_token
  with the recipe's cadence, metrics)."""
  config = ctx.config
  pack = lambda prompts, responses: ctx.place_batch(make_sequences(
      prompts, responses, seq.prompt_len, config.rollout.max_new_tokens, ctx.tokenizer.pad_id))
  inputs = PrmInputs(
      seq=seq, outcome=outcome, old_logp=old_logp, ref_logp=ref_logp,
      examples=rollouts.examples, prompt_ids=rollouts.prompt_ids, group_size=config.rollout.n,
      micro_rows=micro_rows(config),
      mini_rows=recipe.prm.mini_batch_rows(ml_collections.FrozenConfigDict(config.algo), config),
      tokenizer=ctx.tokenizer, max_new_tokens=config.rollout.max_new_tokens, pack=pack,
      ref_logprobs=lambda s: fns.logprobs(state.ref_params, s),
      prm_token_of=lambda s: fns.prm_token(state.prm.params, s))
  batch, batch_metrics = recipe.prm.batch(config.algo, inputs)
  prm_state, prm_token, update_metrics = fns.prm_update(state.prm, batch, seq)
  if prm_token is None:  # refresh: every rollout re-scored by the updated PRM
    prm_token = fns.prm_token(prm_state.params, seq)
  return prm_state, prm_token, {f"prm/{k}": v
                                for k, v in {**update_metrics, **batch_metrics}.items()}


def rl_step(ctx: RunContext, recipe: Recipe, fns: RunFunctions, state: TrainState,
            stream: PromptStream, samples: list | None = None) -> tuple[TrainState, dict]:
  """One synchronous RL step; returns the new state and host-side metrics.

  A `samples` list receives log.num_samples of the step's rollouts (prl_jax.run.tracking).
  """
  config = ctx.config
  start = time.perf_counter()
  step_key = jax.random.fold_in(wrap_key(state.rng), state.step)
  sample_key, update_key = jax.random.split(step_key)
  rollouts = collect_rollouts(ctx, state.policy.params, stream, sample_key)
  if recipe.unit_outcome:  # PRIME's CE, ER-PRM: a task.reward_fn outcome must be a probability
    check_unit_outcome(rollouts.outcome, config.method)
  t_rollout = time.perf_counter() - start
  prompt_len = sequence_prompt_len(rollouts.prompt_ids, ctx.prompt_len)  # no padding-only columns
  seq = ctx.place_batch(make_sequences(rollouts.prompt_ids, rollouts.response_ids, prompt_len,
                                       config.rollout.max_new_tokens, ctx.tokenizer.pad_id))
  outcome = ctx.place_batch(rollouts.outcome)
  zeros = jnp.zeros_like(seq.response_mask)
  if fns.old_logp == "sampler":  # the rollout's own log-probs: no second forward
    old_logp = ctx.place_batch(response_array(rollouts.logprobs, seq.response_mask.shape[1]))
  elif fns.old_logp == "update":  # never read: the loss takes them from its own forward
    old_logp = zeros
  else:
    old_logp = fns.rollout_logprobs(state.policy.params, seq)
  ref_logp = (fns.rollout_logprobs(state.ref_params, seq) if state.ref_params is not None
              else zeros)
  values = fns.value_forward(state.value.params, seq) if recipe.value else zeros
  metrics = dict(rollouts.metrics)

  prm_state, prm_token = state.prm, zeros
  if recipe.prm is not None:
    prm_state, prm_token, prm_metrics = _prm_step(ctx, recipe, fns, state, rollouts, seq, outcome,
                                                  old_logp, ref_logp)
    metrics.update(prm_metrics)

  prm_score = step_rewards = prm_steps = None
  step_end = _step_ends(ctx, recipe, seq)
  if fns.prm_scores is not None:
    scored = fns.prm_scores(rollouts)
    prm_score = ctx.place_batch(scored.solution)
    if scored.steps is not None:
      prm_steps = ctx.place_batch(place_on_step_ends(scored.steps, distributed.to_host(step_end)))
  if recipe.step_checker:
    step_rewards = ctx.place_batch(checker_step_rewards(rollouts.texts, rollouts.examples,
                                                        distributed.to_host(step_end),
                                                        config.algo.steps))
  inputs = RLInputs(outcome=outcome, mask=seq.response_mask, old_logp=old_logp, ref_logp=ref_logp,
                    prm_token=prm_token, values=values, step_end=step_end,
                    group_size=config.rollout.n, prm_score=prm_score, step_rewards=step_rewards,
                    prm_steps=prm_steps)
  out = fns.advantages(inputs)
  advantages = out.token
  if out.process_reward is not None:
    metrics.update(_step_diagnostics(ctx, seq, rollouts, out.process_reward))
  if samples is not None:
    host = distributed.to_host
    samples.extend(tracking.sample_rows(
        [ex["prompt"] for ex in rollouts.examples], rollouts.texts, rollouts.outcome,
        None if out.process_reward is None else host(out.process_reward), host(step_end),
        host(seq.response_mask), config.log.num_samples))
  metrics.update({f"adv/{k}" if "/" not in k else k: v for k, v in out.metrics.items()})
  value_state = state.value
  if recipe.value:
    value_state, value_metrics = fns.value_update(value_state, (seq, out.value_target, values),
                                                  jax.random.fold_in(update_key, 1))
    metrics.update({f"value/{k}": v for k, v in value_metrics.items()})
  policy, policy_metrics = fns.policy_update(
      state.policy, PolicyBatch(seq=seq, old_logp=old_logp, ref_logp=ref_logp,
                                advantages=advantages), update_key)
  metrics.update({f"policy/{k}": v for k, v in policy_metrics.items()})
  new_state = state.replace(step=state.step + 1, policy=policy, prm=prm_state, value=value_state)
  metrics.update(applied_learning_rates(config, new_state))
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  elapsed = time.perf_counter() - start
  lengths = np.asarray([len(r) for r in rollouts.response_ids])
  metrics.update({
      "train/reward": float(rollouts.outcome.mean()),
      "train/response_length": float(lengths.mean()),
      "train/truncated": float(rollouts.truncated.mean()),
      "time/step_s": elapsed, "time/rollout_s": t_rollout,
      "time/tokens_per_s": metrics["rollout/tokens"] / max(elapsed, 1e-9),
  })
  return new_state, metrics


def periodic_eval(ctx: RunContext, params, step: int) -> dict:
  """eval.n samples (and one greedy decode) per eval problem: `eval/*` metrics of the policy.

  The seed is fold(run seed, step), so an eval is reproducible and resume cannot change it.
  """
  config = ctx.config
  examples = ctx.eval_examples[:config.eval.num_problems]
  rows = config.rollout.prompts_per_step * config.rollout.n
  results = evaluate(params, ctx.model_cfg, ctx.tokenizer, examples, ctx.verifier,
                     n=config.eval.n, temperature=config.eval.temperature,
                     max_new_tokens=config.rollout.max_new_tokens,
                     seed=config.seed * 1_000_003 + step, mesh=ctx.mesh, rules=ctx.rules,
                     batch_prompts=max(1, rows // config.eval.n))
  overall = results["summary"]
  n = config.eval.n
  return {f"eval/mean@{n}": overall[f"mean@{n}"], f"eval/pass@{n}": overall[f"pass@{n}"],
          "eval/greedy": overall["greedy"]}


def _save(ckpt: Checkpointer, state: TrainState, stream: PromptStream, ctx: RunContext,
          metrics: dict | None, force: bool = False):
  meta = {"data_position": stream.position, "prompt_buffer": list(stream.buffer),
          "config": ctx.config.to_dict(),
          "method": ctx.config.method}
  ckpt.save(int(state.step), state, meta, metrics=metrics, force=force)


# Running totals over the run: name -> the per-step metric added up (restored on resume).
TOTALS = {"rollout/sampled_total": "rollout/sampled", "filter/rounds_exhausted": "filter/exhausted"}


def _add_totals(totals: dict, metrics: dict) -> dict:
  return {name: totals.get(name, 0) + metrics.get(step_key, 0) for name, step_key in TOTALS.items()}


def train(config: ml_collections.ConfigDict, workdir: str, *, max_steps: int | None = None,
          ctx: RunContext | None = None, announce_finished: bool = True) -> dict:
  """Runs (or resumes) the RL job described by `config` in `workdir`; returns the last metrics.

  `max_steps` stops early after that many steps in this call (used to test exact resume).
  A rerun of a finished run prints "nothing to do" unless `announce_finished` is off.
  The config is recorded in `workdir/config.json` first, and resuming with a changed one is
  refused (prl_jax.run.config_record); a NaN or inf loss or gradient norm stops the run before
  its step is saved, or skips the update (prl_jax.run.nonfinite).
  """
  distributed.initialize()
  record_config(config, workdir)  # a changed config is refused before the model is built
  owns_ctx = ctx is None  # a context passed in is the caller's to close
  ctx = ctx or build_context(config, workdir)
  recipe = get_recipe(config.method)
  fns = build_functions(ctx, recipe)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                      best_metric=config.checkpoint.best_metric or None)
  state = init_state(ctx, recipe)
  position = skipped = 0
  buffer, totals = [], {}
  if config.checkpoint.resume and ckpt.latest_step() is not None:
    state, meta = ckpt.restore_latest_good(ctx.abstract(state))
    position, buffer = meta["data_position"], meta.get("prompt_buffer", [])
    totals = {name: meta.get("metrics", {}).get(name, 0) for name in TOTALS}
    skipped = int(meta.get("metrics", {}).get("train/skipped_updates", 0))
    if announce_finished and state.step >= config.train.steps and distributed.is_main_process():
      print(nothing_to_do(int(state.step), config.train.steps, "train.steps", workdir))
  state = ctx.place_state(state)
  stream = PromptStream(ctx.train_examples, config.seed, position, buffer)
  writer = MetricsWriter(workdir, enabled=distributed.is_main_process(), resume_step=int(state.step),
                         tensorboard=config.log.tensorboard, progress=config.log.progress,
                         total=config.train.steps, wandb=tracking.wandb_settings(config, workdir))
  metrics: dict = {}
  done = 0
  stop = StopSignals().install()  # Ctrl-C / SIGTERM: save the step under way, then stop
  try:
    while int(state.step) < config.train.steps:
      if max_steps is not None and done >= max_steps:
        break
      before = None
      if config.train.skip_nonfinite:  # the updates donate the state: keep a copy to go back to
        before = jax.tree_util.tree_map(jnp.copy, (state.policy, state.prm, state.value))
      samples = [] if tracking.samples_due(config, int(state.step) + 1) else None
      state, metrics = rl_step(ctx, recipe, fns, state, stream, samples)
      totals = _add_totals(totals, metrics)
      metrics.update(totals)
      done += 1
      step = int(state.step)
      if step == 1:  # rows the data screen left out (task.skip_bad_rows), once per run
        metrics.update(ctx.data_metrics)
      bad = nonfinite(metrics)
      if bad and before is None:  # raised before this step is saved: the last checkpoint is good
        writer.write(step, metrics)
        raise NonFiniteError(error_message(step, bad, workdir))
      if before is not None:
        if bad:
          state = state.replace(policy=before[0], prm=before[1], value=before[2])
        skipped += bool(bad)
        metrics["train/skipped_updates"] = skipped
      is_last = step == config.train.steps
      evaluated = config.eval.every and (step % config.eval.every == 0 or is_last)
      if evaluated:
        metrics.update(periodic_eval(ctx, state.policy.params, step))
      if step % config.log.every == 0 or is_last or evaluated or step == 1 or bad:
        writer.write(step, metrics)  # log.every thins the rows; evals and the ends always show
      writer.write_samples(step, samples or [])
      if step % config.checkpoint.every == 0 or is_last or stop.requested:
        _save(ckpt, state, stream, ctx, metrics, force=True)
      stop.raise_if_requested(step, workdir)
    ckpt.wait()
    if int(state.step) >= config.train.steps and config.checkpoint.save_hf:
      ctx.export_policy(state.policy.params, os.path.join(workdir, "final_hf"))
  finally:
    stop.restore()
    ckpt.close()
    writer.close()
    if owns_ctx and hasattr(ctx.verifier, "close"):
      ctx.verifier.close()  # the answer-checking worker processes of math tasks
  return metrics
