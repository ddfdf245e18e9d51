"""How the lab's policies fail the held-out split (12-operation chains): lost place or length.

    python benchmarks/lab_heldout_lines.py WORKDIR [--config configs/lab/budget.py]

WORKDIR is a `prl-jax reproduce --preset lab` workdir. For the SFTs and every run's held-out
eval (eval_heldout/results.json) it prints one markdown row: mean@16 and the share of sampled
responses cut at the token budget (from the eval), then, of the greedy responses, the share
whose first 12 lines are all right (`register.step_labels`), the share that stop after exactly
12 lines, the mean number of lines written, and, of the greedy responses with a wrong line, the
share whose first wrong line echoes another operation than the question's at that place (the
policy lost its place in the prompt) rather than applying the right one wrongly (a bug).
"""

import argparse
import glob
import json
import os
import tempfile

import numpy as np

from prl_jax.config import apply_overrides, load_config_file
from prl_jax.data import register
from prl_jax.eval.evaluate import split_examples
from prl_jax.run.context import build_context

HELDOUT_OPS = 12


def heldout_problems(config_path: str, num: int) -> dict:
  """{example id: example} of the held-out split as the lab's evaluation draws it."""
  config = load_config_file(config_path)
  apply_overrides(config, [f"eval.num_problems={num}", "init_from=", "mesh.num_devices=1"])
  with tempfile.TemporaryDirectory() as tmp:
    ctx = build_context(config, tmp)
    examples = split_examples(config, "heldout", ctx.train_examples, ctx.eval_examples)
  return {ex["id"]: ex for ex in examples}


def miscopies(response: str, example: dict, line: int) -> bool:
  """Whether `line` of the response echoes another operation than the question's at that place."""
  _, ops = register.parse_question(example["question"])
  written = response.strip().splitlines()[line].strip().split("=")[0]
  return line >= len(ops) or written != f"{ops[line][0]}{ops[line][1]}"


def row(name: str, result: dict, problems: dict) -> str:
  right, stops, lines, copy = [], [], [], []
  for rec in result["records"]:
    ex = problems[rec["id"]]
    assert rec["reference"] == ex["answer"], (rec["id"], rec["reference"], ex["answer"])
    labels = register.step_labels(rec["greedy_response"], ex)
    right.append(len(labels) >= HELDOUT_OPS and all(labels[:HELDOUT_OPS]))
    stops.append(len(labels) == HELDOUT_OPS)
    lines.append(len(labels))
    if False in labels:
      copy.append(miscopies(rec["greedy_response"], ex, labels.index(False)))
  s = result["summary"]
  return (f"| {name} | {100 * s['mean@16']:.1f} | {100 * s['truncated']:.1f} | "
          f"{100 * np.mean(right):.1f} | {100 * np.mean(stops):.1f} | {np.mean(lines):.1f} | "
          f"{100 * np.mean(copy) if copy else float('nan'):.1f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--config", default="configs/lab/budget.py")
  args = parser.parse_args()
  files = sorted(glob.glob(os.path.join(args.workdir, "rl", "*", "seed*", "eval_heldout",
                                        "results.json")))
  sfts = [os.path.join(args.workdir, name, "eval_heldout", "results.json")
          for name in ("sft", "sft_demos")]
  files = [f for f in sfts if os.path.exists(f)] + files
  if not files:
    raise SystemExit(f"no eval_heldout/results.json under {args.workdir!r}")
  results = {f: json.load(open(f)) for f in files}
  problems = heldout_problems(args.config, max(r["settings"]["num_problems"]
                                               for r in results.values()))
  print("| policy | mean@16 | sampled responses cut at the budget | greedy: first 12 lines right |"
        " greedy: stops after 12 lines | greedy: lines written | greedy, wrong: first wrong line"
        " miscopies the operation |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for f, result in results.items():
    name = os.path.relpath(os.path.dirname(os.path.dirname(f)), args.workdir)
    name = name[len("rl/"):] if name.startswith("rl/") else name
    print(row(name, result, problems))


if __name__ == "__main__":
  main()
