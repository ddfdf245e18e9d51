"""Supervised fine-tuning on solver demonstrations: the starting policy of every RL run.

The loss is the token-mean negative log-likelihood of the solution (and its EOS) given the
prompt. The result is exported in HF layout to `workdir/final_hf`, which RL configs name in
`init_from`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prl_jax.train import steps as train_steps
from prl_jax.train.batch import make_sequences
from prl_jax.train.metrics import MetricsWriter
from prl_jax.train.setup import RunContext, build_context, initial_policy_params
from prl_jax.train.state import ModelState, adamw


def demonstration_batch(ctx: RunContext, examples: list[dict], response_len: int):
  """Prompt + solution + EOS for each example, packed into a SequenceBatch."""
  tok = ctx.tokenizer
  prompts = [tok.encode(ex["prompt"]) for ex in examples]
  answers = [tok.encode(ex["solution"]) + [tok.eos_id] for ex in examples]
  longest = max(len(a) for a in answers)
  if longest > response_len:
    raise ValueError(f"A demonstration has {longest} tokens; raise rollout.max_new_tokens to at "
                     f"least {longest}.")
  return make_sequences(prompts, answers, ctx.prompt_len, response_len, tok.pad_id)


def sft(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.sft.steps` steps of SFT from the configured initial policy and exports it."""
  ctx = build_context(config, workdir)
  s = config.sft
  tx = adamw(s.lr, grad_clip=config.optim.grad_clip, schedule="cosine",
             warmup_steps=s.warmup_steps, total_steps=s.steps)
  params = initial_policy_params(ctx)
  state = ctx.place_state(ModelState(params, tx.init(params)))
  loss_fn = train_steps.sft_loss_fn(ctx.model_cfg, config.train.logprob_chunk)
  update = jax.jit(lambda st, b: train_steps.minibatch_updates(st, tx, loss_fn, b, 1, 1),
                   donate_argnums=0)
  rng = np.random.default_rng(config.seed)
  writer = MetricsWriter(workdir, tensorboard=config.log.tensorboard,
                         progress=config.log.progress, total=s.steps, filename="sft_metrics.jsonl")
  metrics = {}
  for step in range(1, s.steps + 1):
    rows = rng.choice(len(ctx.train_examples), size=s.batch_size, replace=False)
    batch = ctx.place_batch(demonstration_batch(
        ctx, [ctx.train_examples[i] for i in rows], config.rollout.max_new_tokens))
    state, metrics = update(state, batch)
    if step % config.log.every == 0 or step == s.steps:
      metrics = {f"sft/{k}": float(v) for k, v in jax.device_get(metrics).items()}
      writer.write(step, metrics)
  writer.close()
  ctx.export_policy(state.params, os.path.join(workdir, "final_hf"))
  return metrics
