"""Soak run: host and device memory over a long RL run must stay flat (no leak per step).

    python benchmarks/soak.py                       # 300 PRIME steps, the figures in docs/benchmarks.md
    python benchmarks/soak.py --steps 40 --no-docs  # a smoke run

The run is the demo preset's: configs/mini/sft.py for the starting policy, then
configs/mini/<method>.py (default PRIME: policy, reference and PRM, the most state of any method)
for `--steps` steps, with checkpoints every 10 steps as usual. A thread samples, once a second,
the process's resident memory (VmRSS: host memory, which on the CPU backend includes the device
buffers) and the bytes of every live JAX array (jax.live_arrays(): what the run holds on its
devices, on any backend), and maps each sample to the step reached (rows of metrics.jsonl).

Reported: the medians over the first and the last `--window` steps after warm-up (compilation and
the first checkpoint happen in the first steps), and the least-squares slope in MiB per 100 steps
over all samples after warm-up. A leak of one rollout batch per step (~0.1 MiB here) would show
as a slope of ~10 MiB per 100 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.docs_section import machine, write_section  # noqa: E402
from prl_jax.config import apply_overrides, load_config_file  # noqa: E402
from prl_jax.train.loop import train  # noqa: E402
from prl_jax.train.sft import sft  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "mini")
MIB = 2.0 ** 20


def rss_bytes() -> int:
  """Resident set size of this process (Linux /proc)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  return 0


def live_device_bytes() -> int:
  """Bytes of every JAX array alive in this process (all devices)."""
  return sum(a.nbytes for a in jax.live_arrays())


def steps_done(path: str) -> int:
  """Rows written to metrics.jsonl so far (one per finished step)."""
  try:
    with open(path) as f:
      return sum(1 for line in f if line.strip())
  except OSError:
    return 0


class Sampler(threading.Thread):
  """Samples (seconds, step, rss, live device bytes) every `period` seconds until stopped."""

  def __init__(self, metrics_path: str, period: float = 1.0):
    super().__init__(daemon=True)
    self.metrics_path, self.period = metrics_path, period
    self.samples: list[tuple[float, int, int, int]] = []
    self._halt = threading.Event()
    self._start = time.perf_counter()

  def run(self):
    while not self._halt.wait(self.period):
      self.samples.append((time.perf_counter() - self._start, steps_done(self.metrics_path),
                           rss_bytes(), live_device_bytes()))

  def stop(self):
    self._halt.set()
    self.join()


def summarize(samples, warmup: int, window: int, steps: int) -> dict:
  """Medians of the first/last `window` steps after `warmup`, and MiB per 100 steps."""
  s = np.asarray(samples, np.float64)
  s = s[s[:, 1] >= warmup]
  out = {}
  for column, name in ((2, "host_rss"), (3, "device_live")):
    first = s[s[:, 1] < warmup + window, column]
    last = s[s[:, 1] >= steps - window, column]
    slope = np.polyfit(s[:, 1], s[:, column], 1)[0] if len(np.unique(s[:, 1])) > 1 else 0.0
    out[name] = {"first_mib": float(np.median(first) / MIB), "last_mib": float(np.median(last) / MIB),
                 "peak_mib": float(s[:, column].max() / MIB),
                 "slope_mib_per_100_steps": float(slope * 100 / MIB)}
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--method", default="prime")
  parser.add_argument("--workdir", default="runs/soak")
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--window", type=int, default=30)
  parser.add_argument("--no-docs", action="store_true")
  args = parser.parse_args(argv)

  sft_dir = os.path.join(args.workdir, "sft")
  if not os.path.isdir(os.path.join(sft_dir, "final_hf")):
    config = load_config_file(os.path.join(CONFIGS, "sft.py"))
    apply_overrides(config, ["log.progress=False", "log.tensorboard=False"])
    sft(config, sft_dir)
  rl_dir = os.path.join(args.workdir, args.method)
  config = load_config_file(os.path.join(CONFIGS, f"{args.method}.py"))
  apply_overrides(config, [f"init_from={os.path.join(sft_dir, 'final_hf')}",
                           f"train.steps={args.steps}", "log.tensorboard=False",
                           "checkpoint.resume=False"])
  if os.path.isdir(rl_dir):
    raise SystemExit(f"{rl_dir} exists: remove it (a soak run measures one fresh run).")
  sampler = Sampler(os.path.join(rl_dir, "metrics.jsonl"))
  sampler.start()
  start = time.perf_counter()
  train(config, rl_dir)
  wall = time.perf_counter() - start
  sampler.stop()
  summary = summarize(sampler.samples, args.warmup, args.window, args.steps)
  result = {"method": args.method, "steps": args.steps, "wall_s": wall, "summary": summary,
            "samples": sampler.samples}
  with open(os.path.join(args.workdir, f"soak_{args.method}.json"), "w") as f:
    json.dump(result, f)
  print(json.dumps({"wall_s": round(wall), **summary}, indent=1))
  if not args.no_docs:
    write_docs(result, config.checkpoint.every, args.warmup, args.window)


def write_docs(result: dict, checkpoint_every: int, warmup: int, window: int) -> None:
  """The "Soak" section of docs/benchmarks.md from a run's result."""
  summary, steps, method = result["summary"], result["steps"], result["method"]
  rows = [f"| {name} | {v['first_mib']:.0f} | {v['last_mib']:.0f} | {v['peak_mib']:.0f} | "
          f"{v['slope_mib_per_100_steps']:+.2f} |"
          for name, v in (("host RSS", summary["host_rss"]),
                          ("live JAX arrays", summary["device_live"]))]
  table = "\n".join([
      f"| memory | steps {warmup}-{warmup + window} (MiB) | last {window} steps (MiB) | "
      "peak (MiB) | slope (MiB per 100 steps) |", "|---|---|---|---|---|", *rows])
  write_section("Soak", [
      f"{steps} {method} steps of the demo preset's configuration (configs/mini/{method}.py "
      f"from the configs/mini/sft.py policy, checkpoints every {checkpoint_every} steps) in "
      f"{result['wall_s'] / 60:.1f} min. Host memory is the process's resident set (on the CPU "
      "backend it includes the device buffers); device memory is the bytes of every live JAX "
      "array. Both are sampled once a second; the slope is the least-squares fit over all "
      "samples after warm-up.", table],
      machine(), f"python benchmarks/soak.py --steps {steps} --method {method}")


if __name__ == "__main__":
  main()
