"""PRIME's PRM update (single forward): scores from a separate forward vs from the loss's own.

    python benchmarks/prm_update.py --repeats 10

Both paths in one process on the PRM batch of one PRIME step at the shapes of benchmarks/steps.py
(16 prompts x 4 samples x at most 64 new tokens, mini preset, float32), runs alternating so machine
load hits both alike:

- two-pass (before): `run.updates.scored_minibatch_updates`: a PRM forward scores mini-batch k,
  then the update's loss runs its own forward and backward on the same rows and parameters;
- one pass (after): `run.updates.minibatch_updates_with_rows`: the scores are the log-probs the
  loss's forward already computed (`PrmTraining.loss_scores`, what the loop runs now).

Also prints XLA's FLOP count of each compiled update.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks import steps as steps_bench  # noqa: E402
from benchmarks.docs_section import machine  # noqa: E402
from prl_jax.models.logprobs import response_logprobs  # noqa: E402
from prl_jax.run import updates  # noqa: E402
from prl_jax.run.state import optimizers  # noqa: E402
from prl_jax.train import loop  # noqa: E402


def captured_prm_batch():
  """(ctx, recipe, PRM state, PRM batch, rollouts) of one PRIME step of benchmarks/steps.py."""
  captured = {}
  build = steps_bench.build_functions

  def build_capturing(ctx, recipe):
    fns = build(ctx, recipe)
    update = fns.prm_update

    def capture(state, batch, seq):  # host copies: the update donates its state
      captured["args"] = jax.tree_util.tree_map(np.array, (state, batch, seq))
      captured["ctx"], captured["recipe"] = ctx, recipe
      return update(state, batch, seq)

    fns.prm_update = capture
    return fns

  steps_bench.build_functions = build_capturing
  try:
    run, _ = steps_bench.rl_step_runner("prime", "sampler")
    run()
  finally:
    steps_bench.build_functions = build
  return (captured["ctx"], captured["recipe"], *captured["args"])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args(argv)
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']} on {info['platform']}")
  ctx, recipe, state, batch, seq = captured_prm_batch()
  config = ctx.config
  chunk = config.train.logprob_chunk
  loss = recipe.prm.loss(ctx.model_cfg, ml_collections.FrozenConfigDict(config.algo), chunk)
  num_mini, num_micro, block = loop.prm_rows(config, recipe, seq.tokens.shape[0])
  tx = optimizers(config, updates_per_step=(1, num_mini, 1))[1]
  score = lambda p, s: response_logprobs(ctx.model_cfg, p, s.tokens, s.token_mask, s.prompt_len,
                                         chunk)
  fns = {
      "two-pass (before)": jax.jit(lambda st, b, s: updates.scored_minibatch_updates(
          st, tx, updates.dropping_rows(loss), b, num_mini, num_micro, score, s, block)),
      "one pass (after)": jax.jit(lambda st, b, s: updates.minibatch_updates_with_rows(
          st, tx, loss, b, num_mini, num_micro, block)),
  }
  print(f"PRM batch {seq.tokens.shape[0]} rows x {seq.tokens.shape[1]} positions; "
        f"{num_mini} mini-batch(es) of {num_micro} micro-batch(es)")
  for name, f in fns.items():
    cost = f.lower(state, batch, seq).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    print(f"  {name:18s} {cost.get('flops', 0):.3g} FLOPs")
    jax.block_until_ready(f(state, batch, seq))  # compile and warm up
  times = {name: [] for name in fns}
  for _ in range(args.repeats):
    for name, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f(state, batch, seq))
      times[name].append(time.perf_counter() - start)
  medians = {name: float(np.median(v)) for name, v in times.items()}
  print(f"wall time, median of {args.repeats} alternating runs:")
  for name, v in times.items():
    print(f"  {name:18s} {medians[name]:.3f} s  ({' '.join(f'{t:.2f}' for t in v)})")
  before, after = medians.values()
  print(f"after / before: {after / before:.3f}")


if __name__ == "__main__":
  main()
