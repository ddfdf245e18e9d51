"""The accuracy filter's refill as the official PRIME trainer: sample until the batch is full, buffer
the prompts of surplus accepted groups for the next step, a bounded number of rounds.

A fake verifier makes acceptance a function of the prompt alone (one correct answer of n, mean
1/n inside the band, for "passing" prompts; none otherwise), so a plain simulation over stream
positions predicts every step's prompts, buffer and counts.
"""

import logging
import os
import zlib

import jax
import numpy as np
import pytest

from prl_jax.config import apply_overrides, load_config_file
from prl_jax.run.context import build_context, initial_policy_params
from prl_jax.run.metrics_file import read_metrics
from prl_jax.train.loop import train
from prl_jax.train.rollouts import PromptStream, collect_rollouts

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")
WANT, N = 4, 4


def _config(**overrides):
  config = load_config_file(os.path.join(CONFIGS, "rloo.py"))
  config.rollout.prompts_per_step, config.rollout.n = WANT, N
  config.rollout.max_new_tokens = 8
  config.train.mini_batch_size = 0
  config.task.num_train, config.task.num_eval = 32, 4
  config.train.steps = 4
  config.checkpoint.every = 2
  config.log.progress = config.log.tensorboard = False
  config.mesh.num_devices = 1
  config.filter.enable = True
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


def passes(example) -> bool:
  return zlib.crc32(example["prompt"].encode()) % 3 != 0


def fake_verifier(texts, examples):
  """One correct response (the first) per passing prompt's group, none for the others."""
  return [float(i % N == 0 and passes(ex)) for i, ex in enumerate(examples)]


def _context(tmp_path, **overrides):
  ctx = build_context(_config(**overrides), str(tmp_path))
  ctx.verifier = fake_verifier
  return ctx


def simulate(example, steps, want, draw, max_rounds):
  """Per step: (prompt positions of the batch, buffer after it, rounds, exhausted)."""
  position, buffer, out = 0, [], []
  for _ in range(steps):
    accepted, rejected, rounds = [], [], 0
    while len(accepted) < want and rounds < max_rounds:
      candidates = buffer[:draw]
      buffer = buffer[draw:]
      while len(candidates) < draw:
        candidates.append(position)
        position += 1
      for c in candidates:
        (accepted if passes(example(c)) else rejected).append(c)
      rounds += 1
    buffer = buffer + accepted[want:]
    out.append(((accepted + rejected)[:want], list(buffer), rounds, len(accepted) < want))
  return out


@pytest.mark.parametrize("oversample, max_rounds", [(1, 8), (2, 8), (1, 1)])
def test_batches_buffer_and_rounds_follow_the_simulation(tmp_path, oversample, max_rounds):
  ctx = _context(tmp_path, **{"filter.oversample": oversample, "filter.max_rounds": max_rounds})
  params = initial_policy_params(ctx)
  stream = PromptStream(ctx.train_examples, 0)
  want = simulate(stream.example, 5, WANT, WANT * oversample, max_rounds)
  buffered = 0
  for step, (positions, buffer, rounds, exhausted) in enumerate(want):
    rollouts = collect_rollouts(ctx, params, stream, jax.random.key(step))
    assert [ex["prompt"] for ex in rollouts.examples[::N]] == \
        [stream.example(p)["prompt"] for p in positions]
    assert stream.buffer == buffer
    m = rollouts.metrics
    assert (m["rollout/rounds"], m["filter/exhausted"]) == (rounds, float(exhausted))
    assert m["rollout/sampled"] == rounds * WANT * oversample * N
    assert m["rollout/buffered"] == len(buffer)
    assert m["filter/accepted"] == np.mean([passes(stream.example(p)) for p in positions])
    buffered += len(buffer)
  assert buffered > 0 or max_rounds == 1  # the buffer was exercised


def test_the_bound_warns_counts_and_tops_up_with_rejected_groups(tmp_path, caplog):
  ctx = _context(tmp_path, **{"filter.max_rounds": 3})
  ctx.verifier = lambda texts, examples: [0.0] * len(texts)  # every group fails the band
  stream = PromptStream(ctx.train_examples, 0)
  with caplog.at_level(logging.WARNING):
    rollouts = collect_rollouts(ctx, initial_policy_params(ctx), stream, jax.random.key(0))
  assert "filter.max_rounds=3" in caplog.text
  m = rollouts.metrics
  assert m["filter/exhausted"] == 1.0 and m["filter/accepted"] == 0.0
  assert m["rollout/sampled"] == 3 * WANT * N and len(rollouts.outcome) == WANT * N
  assert stream.buffer == [] and stream.position == 3 * WANT


def test_the_bound_warns_at_the_1st_10th_100th_step_of_a_run_not_every_step(tmp_path, caplog):
  """A small batch can hit the bound on most steps (make demo: 88 warnings in its three 30-step runs);
  the warning comes at the 1st, 10th, 100th... such step with the count, every step's metric
  still says whether it was topped up."""
  ctx = _context(tmp_path, **{"filter.max_rounds": 1})
  ctx.verifier = lambda texts, examples: [0.0] * len(texts)
  stream = PromptStream(ctx.train_examples, 0)
  params = initial_policy_params(ctx)
  warned = []
  for step in range(1, 12):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      rollouts = collect_rollouts(ctx, params, stream, jax.random.key(step))
    assert rollouts.metrics["filter/exhausted"] == 1.0
    if "filter.max_rounds=1" in caplog.text:
      warned.append(step)
      assert f"Steps topped up so far: {step}" in caplog.text
  assert warned == [1, 10] and stream.exhausted_steps == 11


def _without_timing(rows):
  return [{k: v for k, v in row.items() if not k.startswith(("time/", "rollout/tokens"))}
          for row in rows]


def test_resume_keeps_the_buffer_and_the_running_totals(tmp_path):
  """"4 steps" equals "2 steps, restore, 2 steps" with prompts buffered across the restore."""
  overrides = {"filter.oversample": 2}
  rows = {}
  for name, stops in (("straight", [None]), ("resumed", [2, None])):
    workdir = str(tmp_path / name)
    for max_steps in stops:
      ctx = _context(workdir, **overrides)
      train(ctx.config, workdir, max_steps=max_steps, ctx=ctx)
    rows[name] = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert _without_timing(rows["straight"]) == _without_timing(rows["resumed"])
  straight = rows["straight"]
  sim = simulate(PromptStream(ctx.train_examples, ctx.config.seed).example, 4, WANT, 2 * WANT,
                 ctx.config.filter.max_rounds)
  assert [r["rollout/buffered"] for r in straight] == [len(s[1]) for s in sim]
  assert straight[1]["rollout/buffered"] > 0  # prompts carried over the restore point
  np.testing.assert_array_equal([r["rollout/sampled_total"] for r in straight],
                                np.cumsum([r["rollout/sampled"] for r in straight]))
  np.testing.assert_array_equal([r["filter/rounds_exhausted"] for r in straight],
                                np.cumsum([r["filter/exhausted"] for r in straight]))
