"""Our sampler, train step and RL steps beside Tunix 0.1.7's at the same shapes, in one invocation.

    python benchmarks/side_by_side.py --peer-python ENV/bin/python --peer-script ANCHOR.py

`--peer-python` is the interpreter of a virtual environment with google-tunix==0.1.7 installed
(Tunix is never a dependency of this project: it pins packages ours conflict with);
`--peer-script` is a script that measures Tunix at these shapes and writes JSON with
`--sections S --runs N --json FILE` (sampler: ["sampler"]["temp1.0"]["tokens_per_s"]; train:
["train"][variant]["median_s"], the faster variant is taken; GRPO: ["grpo"]["step"]["median_s"]).
Without them only our side runs and the docs are not written.

Each section runs as `--rounds` rounds of (the peer's, ours), and every figure is the median
over rounds, so a machine whose load changes over minutes hits both sides of a row alike.
Shapes are benchmarks/sampler.py's and benchmarks/steps.py's: the mini preset (vocab 512,
d 256, 4 layers, 4 heads, 4 KV heads, MLP 1024, 4.46M parameters), float32, one device. Our
RL steps run with each old-policy log-prob source (train.old_logp_source = forward, auto,
sampler; auto, the default, is the update's own forward at these shapes' one update per step),
their runs alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks import sampler as sampler_bench  # noqa: E402
from benchmarks import steps  # noqa: E402
from prl_jax import host_memory  # noqa: E402
from prl_jax.models.config import preset  # noqa: E402
from benchmarks.docs_section import machine, write_section  # noqa: E402


def run_peer(python: str, script: str, section: str, runs: int) -> dict:
  """One section of the peer's script in its own interpreter; its JSON result."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "peer.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    subprocess.run([python, script, "--sections", section, "--runs", str(runs), "--json", out],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
      return json.load(f)[section]


def peer_figure(section: str, result: dict) -> float:
  """Tokens/s (sampler) or seconds per step (train, grpo) from the peer's JSON."""
  if section == "sampler":
    return result["temp1.0"]["tokens_per_s"]
  if section == "train":
    return min(v["median_s"] for v in result.values() if isinstance(v, dict) and "median_s" in v)
  return result["step"]["median_s"]


def ours(section: str, runs: int) -> list[tuple[str, float, str]]:
  """[(row label, figure, unit)] of our side of one section."""
  if section == "sampler":
    args = types.SimpleNamespace(warmup=2, repeats=runs, naive_repeats=0, segments=4)
    row = sampler_bench.bench_variant(4, args)
    n = sampler_bench.BATCH * sampler_bench.NEW_TOKENS
    return [("sampler, 64 x 16 -> +128 tokens", n / row["ours_s"], "tokens/s")]
  if section == "train":
    row = steps.bench_train_step(2, runs)
    return [("train step, 32 x 128 tokens", row["seconds"], "s")]
  rows = []
  for method in ("grpo", "prime"):
    for row in steps.bench_old_logp_ab(method, 2, runs):  # the three sources, runs alternating
      rows.append((f"{method.upper()} step, 16 x 4 x 64 (old log-probs: {row['old_logp']})",
                   row["seconds"], "s"))
  return rows


def table(rows: list[tuple[str, float, str, float | None]]) -> str:
  lines = ["| measurement | Tunix 0.1.7 | prl_jax | prl_jax vs Tunix |", "|---|---|---|---|"]
  for label, figure, unit, peer in rows:
    fmt = (lambda x: f"{x:,.0f} tokens/s") if unit == "tokens/s" else (lambda x: f"{x:.2f} s")
    if peer is None:
      lines.append(f"| {label} | - | {fmt(figure)} | - |")
      continue
    ratio = figure / peer if unit == "tokens/s" else peer / figure
    lines.append(f"| {label} | {fmt(peer)} | {fmt(figure)} | {ratio:.2f}x "
                 f"{'as fast' if unit == 'tokens/s' else 'the speed'} |")
  return "\n".join(lines)


def main(argv=None):
  host_memory.keep_for_model(preset("mini"))  # as `prl-jax` does for a run of it
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--peer-python", help="python of an environment with google-tunix 0.1.7")
  parser.add_argument("--peer-script", help="the script that measures Tunix at these shapes")
  parser.add_argument("--runs", type=int, default=3, help="timed runs per figure, both sides")
  parser.add_argument("--sections", nargs="+", default=["sampler", "train", "grpo"],
                      choices=["sampler", "train", "grpo"])
  parser.add_argument("--rounds", type=int, default=2,
                      help="(Tunix, ours) rounds per section; figures are medians over rounds")
  parser.add_argument("--no-docs", action="store_true")
  args = parser.parse_args(argv)
  peer = bool(args.peer_python and args.peer_script and os.path.exists(args.peer_python))
  idle_before, load_before = os.getloadavg()[:2]  # 1- and 5-minute loads: other jobs running
  info = machine()
  print(f"machine: {info['cpu']}; {info['cpus']} CPUs; jax {info['jax']}; peer: "
        f"{'yes' if peer else 'not given'}", flush=True)
  rows = []
  for section in args.sections:
    peer_values, ours_values, units = [], {}, {}
    for _ in range(args.rounds):  # Tunix, ours, Tunix, ours, ...: slow load drifts hit both
      if peer:
        peer_values.append(peer_figure(section, run_peer(args.peer_python, args.peer_script,
                                                         section, args.runs)))
        print(f"  Tunix {section}: {peer_values[-1]:.3f}", flush=True)
      for label, figure, unit in ours(section, args.runs):
        print(f"  ours  {label}: {figure:.3f} {unit}", flush=True)
        ours_values.setdefault(label, []).append(figure)
        units[label] = unit
    # PRIME has no Tunix counterpart; the targets compare it with Tunix's GRPO step.
    peer_value = float(np.median(peer_values)) if peer_values else None
    rows += [(label, float(np.median(v)), units[label], peer_value)
             for label, v in ours_values.items()]
  print(table(rows))
  load = f"{load_before:.1f} when it started, {os.getloadavg()[1]:.1f} when it ended"
  print(f"5-minute load average on {os.cpu_count()} CPUs: {load}")
  if peer and not args.no_docs:
    paragraph = (
        f"Both sides measured in one invocation on the same machine, each section as "
        f"{args.rounds} rounds of Tunix then ours; each figure is the median over rounds of "
        f"the median of {args.runs} timed runs after warm-up, float32, one "
        "device, the mini shapes of the sections above. Tunix's GRPO step (reference "
        "log-probs, KL loss 0.04, one AdamW update) is the comparison for both our GRPO and "
        "our PRIME step (Tunix's takes no old-policy pass at one update per step); our "
        "three old-log-prob sources run alternating: a forward pass before the update, auto "
        "(the default: here the update's own forward, stop-gradient) and the sampler's. "
        "Ratios above 1 mean "
        f"prl_jax is faster. {machine_load(idle_before, load)}")
    command = ("python benchmarks/side_by_side.py --peer-python <env with google-tunix 0.1.7>"
               "/bin/python --peer-script <Tunix anchor script>"
               f" --runs {args.runs} --rounds {args.rounds}"
               + ("" if args.sections == ["sampler", "train", "grpo"]
                  else " --sections " + " ".join(args.sections)))
    write_section("Side by side with Tunix", [paragraph, table(rows)], info, command)


def machine_load(before: float, load: str) -> str:
  """How busy the machine was: the benchmark itself keeps about 2 CPUs busy, so only the
  1-minute load before it started (`before`) tells an idle machine (< 1) from a shared one."""
  where = (f"1-minute load average {before:.1f} before it started; 5-minute load average on its "
           f"{os.cpu_count()} CPUs: {load}; the benchmark itself adds about 2")
  if before < 1.0:
    return (f"The machine ran nothing else ({where}); single figures still vary by about 10% "
            "from run to run.")
  return (f"The machine was shared with other jobs while this ran ({where}), so single figures "
          "carry 10-30% noise; the ratios, from runs minutes apart, are the figures to read.")


if __name__ == "__main__":
  main()
