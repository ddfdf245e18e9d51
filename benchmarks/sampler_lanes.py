"""Sampler lanes: one sampler call against the same call run as concurrent shares on host threads.

    python benchmarks/sampler_lanes.py          # the "Sampler lanes" section of docs/benchmarks.md
    python benchmarks/sampler_lanes.py --quick  # fewer repetitions; docs not written

`prl_jax.sampling.sample_in_calls` (what training, evaluation and labelling sample through) runs
each call as `lanes` calls of a share of its prompts at once, each share drawing the tokens the
whole call would (tests/test_sampler_lanes.py). On a CPU a decode step is a chain of small
kernels that keeps about 1.5 of 2 cores busy; a second share on its own thread fills the gap.

Cases (random weights, float32, temperature 1.0, no EOS: every row runs every step):
  - sampler: the mini preset, 64 prompts x 16 tokens -> +128 (the Sampler section's shape);
  - grpo: the mini preset, 16 prompts x 4 samples, 12-token prompts -> +64 (the GRPO step's);
  - lab: the lab preset (configs/lab), 16 prompts x 4 samples, 12-token prompts -> +64;
  - tiny: the tiny preset (the demo's), 16 prompts x 4 samples, 12-token prompts -> +64.
Each case times lanes 1, 2 and 4 with their runs alternating (results on host, as a trainer
consumes them); the figure is the median of the timed runs after warm-up runs.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import cases_parser, machine, write_section  # noqa: E402
from prl_jax import host_memory  # noqa: E402
from prl_jax.host_lanes import resolve_lanes  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.models.transformer import init_params  # noqa: E402
from prl_jax.sampling import SamplingConfig, sample_in_calls  # noqa: E402

# name: (preset, prompts, prompt tokens, samples per prompt, new tokens)
CASES = {"sampler": ("mini", 64, 16, 1, 128), "grpo": ("mini", 16, 12, 4, 64),
         "lab": ("lab", 16, 12, 4, 64), "tiny": ("tiny", 16, 12, 4, 64)}
LANES = (1, 2, 4)


def bench_case(name: str, warmup: int, repeats: int) -> dict:
  """Median seconds of one call of the case at each lane count, runs alternating."""
  model, num_prompts, prompt_len, n, new_tokens = CASES[name]
  cfg = preset(model)
  params = init_params(cfg, jax.random.key(0))
  prompts = np.asarray(jax.random.randint(jax.random.key(1), (num_prompts, prompt_len), 3,
                                          cfg.vocab_size)).tolist()
  scfg = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, n=n, eos_id=None)
  times = {lanes: [] for lanes in LANES}
  for i in range(warmup + repeats):
    for lanes in LANES:
      start = time.perf_counter()
      sample_in_calls(params, cfg, [prompts], jax.random.key(100 + i), scfg, lanes=lanes)
      if i >= warmup:
        times[lanes].append(time.perf_counter() - start)
  medians = {lanes: float(np.median(t)) for lanes, t in times.items()}
  tokens = num_prompts * n * new_tokens
  print(f"  {name:8s} " + "; ".join(
      f"lanes {k}: {v * 1e3:7.1f} ms ({tokens / v:7.0f} tokens/s)" for k, v in medians.items()),
      flush=True)
  return {"seconds": medians, "times": times, "tokens": tokens}


def table(results: dict) -> str:
  lines = ["| case | model | rows x new tokens | lanes 1 (tokens/s) | lanes 2 | lanes 4 | "
           "lanes 2 / lanes 1, time |", "|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    model, num_prompts, prompt_len, n, new_tokens = CASES[name]
    rate = {k: r["tokens"] / v for k, v in r["seconds"].items()}
    lines.append(f"| {name} | {model} | {num_prompts * n} x {new_tokens} (prompts of "
                 f"{prompt_len}) | {rate[1]:,.0f} | {rate[2]:,.0f} | {rate[4]:,.0f} | "
                 f"{r['seconds'][2] / r['seconds'][1]:.2f}x |")
  return "\n".join(lines)


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of the mini model
  parser = cases_parser(__doc__.split("\n")[0], CASES)
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats, args.warmup = 2, 1
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']} on {info['platform']}; "
        f"auto lanes here: {resolve_lanes(0)}")
  results = {name: bench_case(name, args.warmup, args.repeats) for name in args.cases}
  print(table(results))
  if args.quick or args.no_docs:
    return
  paragraph = (
      "`prl_jax.sampling.sample_in_calls`, what training, evaluation and labelling sample "
      "through, runs each call as `lanes` calls of a share of its prompts at once on host "
      "threads; every share draws the tokens the whole call would (its rows' uniforms and the "
      "whole call's prompt bucket; tests/test_sampler_lanes.py), so lanes change the time, not "
      "the samples. `rollout.lanes` (0 = auto: 2 on a CPU backend with one device, else 1). Why "
      "it pays on a CPU: a decode step is a chain of small kernels and one program in flight "
      "keeps about 1.5 of 2 cores busy. Random weights, float32, temperature 1.0, no EOS; "
      f"median of {args.repeats} runs after {args.warmup} warm-up runs, the lane counts "
      "alternating.")
  write_section("Sampler lanes", [paragraph, table(results)], info,
                "python benchmarks/sampler_lanes.py" + "".join(
                    f" {a}" for a in (argv if argv is not None else sys.argv[1:])))


if __name__ == "__main__":
  main()
