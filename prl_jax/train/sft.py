"""Supervised fine-tuning on solver demonstrations: the starting policy of every RL run.

The loss is the token-mean negative log-likelihood of the solution (and its EOS) given the
prompt. The result is exported in HF layout to `workdir/final_hf`, which RL configs name in
`init_from`.

Exact resume, as in the RL loop: the model state is saved to `workdir/checkpoints` every
checkpoint.every steps and at the end, with the data position (the state of the generator that
draws each step's rows), so an interrupted run continues from its last checkpoint and "N steps"
equals "N/2 steps, restore, N/2 steps" bit for bit. Rows still come from the one sequential
generator seeded with `seed`, so a run draws the batches it drew before checkpoints existed.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prl_jax import distributed
from prl_jax.data.demonstrations import demonstrator
from prl_jax.config import ConfigError
from prl_jax.run import nonfinite, paths, tracking, updates
from prl_jax.run.batch import make_sequences
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.config_record import record_config
from prl_jax.run.context import (RunContext, build_context, initial_policy_params,
                                 split_examples)
from prl_jax.run.interrupt import StopSignals, nothing_to_do
from prl_jax.run.metrics_file import MetricsWriter
from prl_jax.run.state import ModelState, adamw
from prl_jax.train import objectives


def demonstration_batch(ctx: RunContext, examples: list[dict], response_len: int):
  """Prompt + solution + EOS for each example, packed into a SequenceBatch."""
  tok = ctx.tokenizer
  prompts = [tok.encode(ex["prompt"]) for ex in examples]
  answers = [tok.encode(ex["solution"]) + [tok.eos_id] for ex in examples]
  longest = max(len(a) for a in answers)
  if longest > response_len:
    raise ConfigError(f"A demonstration has {longest} tokens; raise rollout.max_new_tokens to at "
                     f"least {longest}.")
  return make_sequences(prompts, answers, ctx.prompt_len, response_len, tok.pad_id)


def demonstration_problems(config: ml_collections.ConfigDict, ctx: RunContext) -> list[dict]:
  """The problems the SFT demonstrates: the training split, or with sft.max_ops > task.max_ops
  the synthetic task's training problems at task.min_ops..sft.max_ops operations (same seed,
  count and prompt checks), so the policy also writes chains longer than RL trains on."""
  s, task = config.sft, config.task
  if not s.max_ops or s.max_ops == task.max_ops:
    return ctx.train_examples
  if task.train_file:
    raise ConfigError(f"sft.max_ops={s.max_ops} lengthens a synthetic task's chains; the data "
                      f"file task.train_file={task.train_file} has its own: set sft.max_ops=0.")
  longer = copy.deepcopy(config)
  longer.task.max_ops = s.max_ops
  train, _, _ = split_examples(longer, ctx.tokenizer)
  return train


def _update_fn(tx, loss_fn, skip_nonfinite: bool):
  """The jitted SFT step `(state, batch) -> (state, metrics)`, state donated.

  With `skip_nonfinite` a step whose loss or gradient norm is not finite returns the state it
  was given. That is decided on the device because the donated input is gone once the host
  sees the metrics; the select costs one elementwise pass over the state.
  """

  def update(state, batch):
    new, metrics = updates.minibatch_updates(state, tx, loss_fn, batch, 1, 1)
    if skip_nonfinite:
      keep = nonfinite.all_finite(metrics)
      new = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, state)
    return new, metrics

  return jax.jit(update, donate_argnums=0)


def sft(config: ml_collections.ConfigDict, workdir: str, *, max_steps: int | None = None) -> dict:
  """Trains (or resumes) `config.sft.steps` steps of SFT from the configured initial policy.

  The policy is exported to `workdir/final_hf` once every step is done. `max_steps` stops after
  that many steps in this call (used to test exact resume). Returns the last step's metrics.
  """
  distributed.initialize()
  record_config(config, workdir)  # a changed config is refused before the model is built
  ctx = build_context(config, workdir)
  s = config.sft
  skip = config.train.skip_nonfinite
  tx = adamw(s.lr, grad_clip=config.optim.grad_clip, schedule="cosine",
             warmup_steps=s.warmup_steps, total_steps=s.steps)
  params = initial_policy_params(ctx)
  state = ModelState(params, tx.init(params))
  update = _update_fn(tx, objectives.sft_loss_fn(ctx.model_cfg, config.train.logprob_chunk),
                     skip)
  rng = np.random.default_rng(config.seed)
  demo = demonstrator(config.task)  # the solver's solutions, or a buggy demonstrator's
  problems = demonstration_problems(config, ctx)
  ckpt = Checkpointer(paths.join(workdir, "checkpoints"), keep=config.checkpoint.keep)
  step = skipped = 0
  if config.checkpoint.resume and ckpt.latest_step() is not None:
    state, meta = ckpt.restore_latest_good(ctx.abstract(state))  # past a corrupt newest step
    step, skipped = meta["step"], meta["skipped_updates"]
    rng.bit_generator.state = meta["data_rng"]
    if step >= s.steps and distributed.is_main_process():
      print(nothing_to_do(step, s.steps, "sft.steps", workdir))
  state = ctx.place_state(state)
  writer = MetricsWriter(workdir, enabled=distributed.is_main_process(), resume_step=step,
                         tensorboard=config.log.tensorboard, progress=config.log.progress,
                         total=s.steps, filename="sft_metrics.jsonl",
                         wandb=tracking.wandb_settings(config, workdir))
  metrics, done = {}, 0
  stop = StopSignals().install()  # Ctrl-C / SIGTERM: save the step under way, then stop
  try:
    while step < s.steps and (max_steps is None or done < max_steps):
      rows = rng.choice(len(problems), size=s.batch_size, replace=False)
      batch = ctx.place_batch(demonstration_batch(
          ctx, [demo(problems[i], rng) for i in rows], config.rollout.max_new_tokens))
      state, metrics = update(state, batch)
      step, done = step + 1, done + 1
      metrics = {f"sft/{k}": float(v) for k, v in jax.device_get(metrics).items()}
      bad = nonfinite.nonfinite(metrics)
      if bad and not skip:
        writer.write(step, metrics)
        raise nonfinite.NonFiniteError(nonfinite.error_message(step, bad, workdir))
      if skip:
        skipped += bool(bad)
        metrics["sft/skipped_updates"] = skipped
      if step % config.log.every == 0 or step == s.steps:
        writer.write(step, metrics)
      if step % config.checkpoint.every == 0 or step == s.steps or stop.requested:
        meta = {"step": step, "data_rng": rng.bit_generator.state, "skipped_updates": skipped,
                "config": config.to_dict()}
        ckpt.save(step, state, meta, metrics=metrics, force=True)
      stop.raise_if_requested(step, workdir)
    ckpt.wait()
  finally:
    stop.restore()
    ckpt.close()
    writer.close()
  final = paths.join(workdir, "final_hf")
  if step >= s.steps and (done or not paths.isdir(final)):  # a finished rerun keeps its export
    ctx.export_policy(state.params, final)
  return metrics
