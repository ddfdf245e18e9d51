"""What running each rollout group's prompt once (`train.share_prompts`) saves.

    python benchmarks/share_prompts.py [--repeats 5] [--prompt-lens 12 128]

1. The GRPO and PRIME steps of benchmarks/steps.py (16 prompts x 4 samples x 64 new tokens, mini
   preset, float32, old log-probs from the sampler, as in the side-by-side comparison), with
   train.share_prompts on and off, runs alternating (on, off, on, off, ...) so a changing load
   hits both alike.
2. The log-prob forward and its gradient alone (`models.logprobs.response_logprobs`, group 4 vs
   1) on 16 x 4 rows of P prompt + 64 response tokens for each --prompt-lens P: the share of
   the positions that are repeated prompts, (n-1)/n x P/(P+N), bounds the saving.
Prints median seconds and the ratio (shared / not shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.steps import rl_step_runner  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.logprobs import response_logprobs  # noqa: E402
from prl_jax.models.transformer import init_params  # noqa: E402

GROUPS, N_PER, NEW = 16, 4, 64


def alternating(runs: dict, warmup: int, repeats: int) -> dict:
  """Median seconds of each zero-argument callable in `runs`, timed in turns."""
  for _ in range(warmup):
    for run in runs.values():
      run()
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def steps(method: str, warmup: int, repeats: int) -> dict:
  runs = {share: rl_step_runner(method, "sampler", (f"train.share_prompts={share}",))[0]
          for share in (True, False)}
  return alternating(runs, warmup, repeats)


def logprob_passes(prompt_len: int, warmup: int, repeats: int) -> dict:
  cfg = preset("mini")
  params = init_params(cfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  rows = GROUPS * N_PER
  prompts = np.repeat(rng.integers(1, 512, (GROUPS, prompt_len)), N_PER, 0)
  tokens = jnp.asarray(np.concatenate([prompts, rng.integers(1, 512, (rows, NEW))], 1), jnp.int32)
  mask = jnp.ones(tokens.shape, bool)
  weights = jnp.asarray(rng.normal(size=(rows, NEW)), jnp.float32)
  logp = lambda p, group: response_logprobs(cfg, p, tokens, mask, prompt_len, group=group)
  runs = {}
  for group in (N_PER, 1):
    forward = jax.jit(lambda p, g=group: logp(p, g))
    grad = jax.jit(jax.grad(lambda p, g=group: jnp.sum(weights * logp(p, g))))
    runs[("forward", group)] = lambda f=forward: jax.block_until_ready(f(params))
    runs[("gradient", group)] = lambda f=grad: jax.block_until_ready(f(params))
  return alternating(runs, warmup, repeats)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--prompt-lens", type=int, nargs="+", default=[12, 128])
  parser.add_argument("--methods", nargs="+", default=["grpo", "prime"])
  args = parser.parse_args(argv)
  print(f"machine: {os.cpu_count()} CPUs; jax {jax.__version__} on {jax.default_backend()}")
  for method in args.methods:
    t = steps(method, args.warmup, args.repeats)
    print(f"{method} step: shared {t[True]:.3f} s, not shared {t[False]:.3f} s, "
          f"ratio {t[True] / t[False]:.3f}", flush=True)
  for prompt_len in args.prompt_lens:
    t = logprob_passes(prompt_len, args.warmup, args.repeats)
    bound = (N_PER - 1) / N_PER * prompt_len / (prompt_len + NEW)
    for kind in ("forward", "gradient"):
      shared, full = t[(kind, N_PER)], t[(kind, 1)]
      print(f"P={prompt_len} {kind}: shared {shared:.3f} s, not shared {full:.3f} s, ratio "
            f"{shared / full:.3f} (repeated prompt positions: {bound:.0%})", flush=True)


if __name__ == "__main__":
  main()
