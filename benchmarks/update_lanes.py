"""Update lanes: the RL step with its update's gradients and its log-prob passes in 1, 2 or 4 lanes.

    python benchmarks/update_lanes.py          # the "Update lanes" section of docs/benchmarks.md
    python benchmarks/update_lanes.py --quick  # fewer repetitions; docs not written
    python benchmarks/update_lanes.py --beside # with a second process running the same steps

`train.update_lanes` (0 = auto: 2 on a CPU backend with one device) runs each policy, value and
PRM mini-batch's gradient as row shares at once on host threads, summed before one optimizer step
(`prl_jax.run.update_lanes`), and the log-prob passes as row shares
(`prl_jax.host_lanes.rows_in_lanes`); the same update up to float rounding
(tests/test_update_lanes.py).

Cases: `train.loop.rl_step` end to end at the GRPO step's shapes of benchmarks/steps.py (16
prompts x 4 samples x at most 64 new tokens, one AdamW update, `auto` old log-probs; the sampler
at its default lanes), for GRPO and PRIME on the mini preset and GRPO on the lab preset (the
lab's model). Each case times its lane counts with runs alternating and reports the median step
and the median of each part (update, log-prob passes, PRM update), each waited for.
`--beside` starts a second process that runs the case's steps (lanes 1) for as long as the timing
runs: the load of `prl-jax reproduce --jobs 2`, where two runs share the machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks import steps as steps_bench  # noqa: E402
from benchmarks.docs_section import cases_parser, machine, write_section  # noqa: E402
from prl_jax import host_memory  # noqa: E402
from prl_jax.host_lanes import resolve_lanes  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from prl_jax.train import loop  # noqa: E402

CASES = {"grpo": ("grpo", "mini"), "prime": ("prime", "mini"), "grpo-lab": ("grpo", "lab")}
LANES = (1, 2, 4)
PARTS = {"policy_update": "update", "logprobs": "log-probs", "rollout_logprobs": "log-probs",
         "prm_update": "PRM update"}


def timed_runner(case: str, lanes: int, times: dict):
  """run() doing one RL step of the case with train.update_lanes=`lanes`; each part's waited
  seconds are appended to times[part]."""
  method, model = CASES[case]
  build = loop.build_functions

  def build_timed(ctx, recipe):
    fns = build(ctx, recipe)
    for name, part in PARTS.items():
      fn = getattr(fns, name)
      if fn is None:
        continue

      def call(*args, _fn=fn, _part=part):
        start = time.perf_counter()
        out = jax.block_until_ready(_fn(*args))
        times[_part].append(time.perf_counter() - start)
        return out
      setattr(fns, name, call)
    return fns

  steps_bench.build_functions = build_timed
  try:
    return steps_bench.rl_step_runner(method, "auto", (f"train.update_lanes={lanes}",), model)[0]
  finally:
    steps_bench.build_functions = build


def bench_case(case: str, warmup: int, repeats: int) -> dict:
  """Median seconds per step of the step and each part at each lane count, runs alternating."""
  times = {lanes: collections.defaultdict(list) for lanes in LANES}
  runs = {lanes: timed_runner(case, lanes, times[lanes]) for lanes in LANES}
  for i in range(warmup + repeats):
    for lanes, run in runs.items():
      if i == warmup:
        times[lanes].clear()
      start = time.perf_counter()
      run()
      if i >= warmup:
        times[lanes]["step"].append(time.perf_counter() - start)
  medians = {}
  for lanes, parts in times.items():  # a part called k times a step adds its k calls up
    medians[lanes] = {part: float(np.median(np.sum(np.reshape(v, (repeats, -1)), axis=1)))
                      for part, v in parts.items()}
  print(f"  {case:9s} " + "; ".join(f"lanes {k}: " + ", ".join(
      f"{p} {s:.3f}" for p, s in v.items()) for k, v in medians.items()), flush=True)
  return {"seconds": medians, "times": {k: dict(v) for k, v in times.items()}}


def table(results: dict) -> str:
  parts = ["step", "update", "log-probs", "PRM update"]
  lines = ["| case | model | part | lanes 1 (s) | lanes 2 | lanes 4 | lanes 2 / lanes 1 |",
           "|---|---|---|---|---|---|---|"]
  for case, r in results.items():
    s = r["seconds"]
    for part in parts:
      if part not in s[1]:
        continue
      lines.append(f"| {case} | {CASES[case][1]} | {part} | {s[1][part]:.3f} | "
                   f"{s[2][part]:.3f} | {s[4][part]:.3f} | {s[2][part] / s[1][part]:.2f}x |")
  return "\n".join(lines)


def spin(case: str):
  """Run the case's steps at lanes 1 until killed (the second process of `--beside`)."""
  run = timed_runner(case, 1, collections.defaultdict(list))
  while True:
    run()


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of the mini model
  parser = cases_parser(__doc__.split("\n")[0], CASES)
  parser.add_argument("--beside", action="store_true",
                      help="a second process runs the same steps meanwhile (as --jobs 2)")
  parser.add_argument("--spin", choices=list(CASES), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.spin:
    return spin(args.spin)
  if args.quick:
    args.repeats, args.warmup = 2, 1
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']} on {info['platform']}; "
        f"auto lanes here: {resolve_lanes(0)}{'; a second process beside' if args.beside else ''}")
  results = {}
  for case in args.cases:
    other = (subprocess.Popen([sys.executable, os.path.abspath(__file__), "--spin", case],
                              stdout=subprocess.DEVNULL) if args.beside else None)
    try:
      results[case] = bench_case(case, args.warmup, args.repeats)
    finally:
      if other is not None:
        other.kill()
        other.wait()
  print(table(results))
  if args.quick or args.no_docs:
    return
  paragraph = (
      "`train.update_lanes` (0 = auto: 2 on a CPU backend with one device, else 1) takes each "
      "policy, value and PRM mini-batch's gradient as row shares at once on host threads, "
      "summed before one optimizer step, and runs the log-prob passes as row shares; the "
      "same update up to float rounding (tests/test_update_lanes.py). Why it pays on a CPU: one "
      "update program in flight keeps about 1.9 of 2 cores busy. `rl_step` end to end at the "
      "GRPO step's shapes (16 prompts x 4 samples x at most 64 new tokens, `auto` old log-probs, "
      "the sampler at its default lanes); each part waited for; median of "
      f"{args.repeats} steps after {args.warmup} warm-up steps, the lane counts alternating"
      + (", with a second process running the same steps beside it (the load of "
         "`prl-jax reproduce --jobs 2`)." if args.beside else "."))
  write_section("Update lanes" + (", beside a second run" if args.beside else ""),
                [paragraph, table(results)], info,
                "python benchmarks/update_lanes.py" + "".join(
                    f" {a}" for a in (argv if argv is not None else sys.argv[1:])))


if __name__ == "__main__":
  main()
