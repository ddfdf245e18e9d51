"""Where the train step's time goes: per-operation times from a jax.profiler trace, grouped by
the JAX operation that produced each XLA kernel, and the compiled step's cost analysis.

    python benchmarks/profile_step.py              # the mini train step, 32 x 128 tokens
    python benchmarks/profile_step.py --before     # also the step as it was: flax's
                                                   # DenseGeneral, layers scanned one at a time
    python benchmarks/profile_step.py --scanned    # also ours with the layers scanned one at a
                                                   # time (scan_unroll=1; mini's default unrolls)
    python benchmarks/profile_step.py --rl grpo    # where an RL step's wall time goes (below)

All variants are compiled in one process and timed with their runs alternating.

Shapes: the "mini" preset, float32, the gradient of the next-token loss of 32 random sequences
of 128 tokens (the train step of benchmarks/steps.py without the AdamW update, which is <1%).
For a scanned layer loop XLA's cost analysis counts the body once (its FLOPs are then per layer).

--rl METHOD: benchmarks/steps.py's RL step (16 prompts x 4 samples x 64 new tokens, old
log-probs from the sampler) with each device function waited on as it returns, so the step splits
into the sampler (prefill + decode), the reference / PRM log-prob passes, the updates and the rest
(host work: decoding text, verification, packing, metrics). Waiting removes the little overlap
async dispatch gives, so the parts add up to slightly more than an unwaited step. It also prints
the minor page faults a step takes (prl_jax.host_memory; PRL_JAX_HOST_MALLOC=system for glibc's
defaults).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine  # noqa: E402
from prl_jax import host_memory  # noqa: E402
from prl_jax.models import transformer  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.logprobs import response_logprobs  # noqa: E402
from prl_jax.models.transformer import init_params  # noqa: E402

BATCH, LENGTH = 32, 128


def _flax_dense(features, axis, names, use_bias, dtype, name, bias_names=None):
  """The projection before models/dense.py: flax's DenseGeneral, autodiff's weight gradient."""
  return nn.DenseGeneral(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, bias_names or names[-1:]),
      name=name)


def compiled_grad(cfg, params, tokens, dense=None):
  """The jitted, compiled gradient of the token-mean NLL (with `dense` as the projection)."""
  mask = jnp.ones(tokens.shape, bool)

  def loss(p):
    return -jnp.mean(response_logprobs(cfg, p, tokens, mask, 1))

  ours = transformer._dense
  transformer._dense = dense or ours
  try:
    return jax.jit(jax.grad(loss)).lower(params).compile()
  finally:
    transformer._dense = ours


def op_names(hlo_text: str) -> dict[str, str]:
  """XLA instruction name -> the JAX operation (op_name metadata) it came from, shortened."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%(\S+) = .*?op_name="([^"]+)"', line)
    if m:
      out[m.group(1)] = re.sub(r"jit\([^)]*\)/|closed_call/|jvp\(Transformer\)/", "", m.group(2))
  return out


def profile(compiled, params, runs: int) -> collections.Counter:
  """Milliseconds per run of each JAX operation's kernels, from a perfetto trace."""
  names = op_names(compiled.as_text())
  jax.block_until_ready(compiled(params))
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    for _ in range(runs):
      jax.block_until_ready(compiled(params))
    jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(tmp, "**", "*.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  per_op = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      per_op[names[e["name"]]] += e["dur"] / 1000 / runs
  return per_op


def interleaved(fns: dict, params, repeats: int) -> dict[str, float]:
  """Median wall time of each function, runs alternating so machine load hits all alike."""
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f(params))
      times[k].append(time.perf_counter() - start)
  return {k: float(np.median(v)) for k, v in times.items()}


def rl_breakdown(method: str, steps_run: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per step of each part of `rl_step` (see the module docstring)."""
  from benchmarks import steps as steps_bench  # the RL benchmark's config and runner
  from prl_jax.train import loop, rollouts
  times = collections.defaultdict(list)

  def waited(name, fn):
    def call(*args, **kwargs):
      start = time.perf_counter()
      out = jax.block_until_ready(fn(*args, **kwargs))
      times[name].append(time.perf_counter() - start)
      return out
    return call

  build = loop.build_functions

  def build_waited(ctx, recipe):
    fns = build(ctx, recipe)
    for name in ("logprobs", "advantages", "policy_update", "prm_update", "prm_token"):
      if getattr(fns, name) is not None:
        setattr(fns, name, waited(name, getattr(fns, name)))
    return fns

  sample = rollouts.sample_in_calls
  rollouts.sample_in_calls = waited("sampler", sample)
  steps_bench.build_functions = build_waited
  faults = []
  try:
    run, _ = steps_bench.rl_step_runner(method, "sampler")
    for _ in range(warmup + steps_run):
      start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      run()
      times["step"].append(time.perf_counter() - start)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  finally:
    rollouts.sample_in_calls, steps_bench.build_functions = sample, build
  # Per step: a part called k times per step adds its k calls up.
  total = len(times["step"])
  per_step = {k: [sum(v[i * len(v) // total:(i + 1) * len(v) // total]) for i in range(total)]
              for k, v in times.items()}
  medians = {k: float(np.median(v[warmup:])) for k, v in per_step.items()}
  medians["rest (host)"] = medians["step"] - sum(v for k, v in medians.items() if k != "step")
  return medians, float(np.median(faults[warmup:]))


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of it
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--before", action="store_true",
                      help="also profile and time the step with flax's DenseGeneral, scanned")
  parser.add_argument("--scanned", action="store_true",
                      help="also profile and time the step with the layer scan not unrolled")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--rl", choices=["grpo", "prime"], default=None,
                      help="instead: the wall-time parts of this RL step")
  args = parser.parse_args(argv)
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']} on {info['platform']}")
  if args.rl:
    parts, faults = rl_breakdown(args.rl, args.repeats)
    print(f"{args.rl} step, median of {args.repeats} after 2 warm-up steps "
          f"(host memory: {host_memory.status}):")
    for name, seconds in parts.items():
      print(f"  {name:14s} {seconds:6.3f} s  {100 * seconds / parts['step']:5.1f}%")
    print(f"  page faults    {faults:,.0f} a step (fresh host pages mapped and zero-filled)")
    return
  cfg = preset("mini")
  params = init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (BATCH, LENGTH), 3, cfg.vocab_size)
  fns = {f"ours (scan_unroll={cfg.resolved_scan_unroll})": compiled_grad(cfg, params, tokens)}
  if args.before:
    fns["before: DenseGeneral, scanned"] = compiled_grad(cfg.replace(scan_unroll=1), params,
                                                         tokens, _flax_dense)
  if args.scanned:
    fns["ours, scan_unroll=1"] = compiled_grad(cfg.replace(scan_unroll=1), params, tokens)
  for name, f in fns.items():
    cost = f.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    per_op = profile(f, params, runs=3)
    total = sum(per_op.values())
    print(f"\n[{name}] cost analysis: {cost.get('flops', 0):.3g} FLOPs, "
          f"{cost.get('bytes accessed', 0):.3g} bytes; "
          f"kernels {total:.0f} ms per step")
    for op, ms in per_op.most_common(args.top):
      print(f"  {ms:7.1f} ms {100 * ms / total:5.1f}%  {op[:100]}")
  medians = interleaved(fns, params, args.repeats)
  print("\nwall time, median of", args.repeats, "interleaved runs:",
        ", ".join(f"{k} {v:.3f} s" for k, v in medians.items()))


if __name__ == "__main__":
  main()
