"""How a policy errs on the register task, beside the demonstrator it was trained on.

    python benchmarks/register_policy.py --policy runs/lab/sft/final_hf [--problems 256] [--n 8]
        [--config configs/lab/sft.py] [--config.task.register.KEY=VALUE ...]

Samples n responses per eval problem at temperature 1 (the rollouts' temperature) and one greedy
response, and prints mean@n (also by the chains' number of bug-type operations), pass@n,
greedy accuracy and `register.line_error_rates` of both:
the share of plain lines written wrong (the demonstrator: task.register.slip_rate), of bug-type
lines written wrong, and of bug-type lines written by the bug's own rule (the demonstrator:
task.register.bug_rate). A policy that imitates the demonstrator shows its rates (gate G1,
docs/lab.md).

With hard chains (task.register.hard_bugs > 0) it also prints, per half of the bug cells (easy,
hard), how often a bug cell reached on the true path (every line before it right) is written
right and, per cell, the share of its samples the most common digit takes (a cell the policy is
certain of has a share near 1, right or not); and, on the hard chains, the mean number of right
lines after the first hard cell's line, by whether that line is right (what an undiscounted
return-to-go of the step checker's labels pays for leaving the true path).
"""

import argparse
import json
import sys
import tempfile

import numpy as np

from prl_jax.config import split_config_args
from prl_jax.data import register
from prl_jax.eval.evaluate import evaluate, load_policy
from prl_jax.reproduce.stages import load
from prl_jax.run.context import build_context


def cell_stats(responses, examples, bugs) -> dict:
  """True-path accuracy and the most common digit's share per bug cell, by half; the hard
  chains' right lines after their first hard line (module docstring)."""
  halves = dict(zip(("easy", "hard"), register.split_bugs(bugs)))
  right = {h: [0, 0] for h in halves}
  digits = {}
  after = {True: [], False: []}
  for response, example in zip(responses, examples):
    start, ops = register.parse_question(example["question"])
    true = register.values(start, ops, example.get("rule", "add"))
    previous = [start] + true[:-1]
    labels = register.step_labels(response, example)
    labels += [False] * (len(ops) - len(labels))
    lines = response.strip().splitlines()
    first_hard = next((i for i, op in enumerate(ops) if (previous[i], *op) in halves["hard"]),
                      None)
    if first_hard is not None and all(labels[:first_hard]):
      after[labels[first_hard]].append(sum(labels[first_hard + 1:]))
    for i, op in enumerate(ops):
      cell = (previous[i], *op)
      half = next((h for h, cells in halves.items() if cell in cells), None)
      if half is not None:
        right[half][0] += labels[i]
        right[half][1] += 1
        digit = lines[i][-1] if i < len(lines) else "?"
        counts = digits.setdefault((half, cell), {})
        counts[digit] = counts.get(digit, 0) + 1
      if not labels[i]:
        break  # the true path ends here
  mode_share = {h: sorted(round(max(c.values()) / sum(c.values()), 2)
                          for (half, _), c in digits.items() if half == h) for h in halves}
  return {"true-path accuracy": {h: a / n if n else None for h, (a, n) in right.items()},
          "most common digit's share per cell": mode_share,
          "hard chains: right lines after the first hard line": {
              "right": float(np.mean(after[True])) if after[True] else None,
              "wrong": float(np.mean(after[False])) if after[False] else None,
              "samples": [len(after[True]), len(after[False])]}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--policy", required=True, help="an HF directory (e.g. a run's final_hf)")
  parser.add_argument("--problems", type=int, default=256)
  parser.add_argument("--n", type=int, default=8)
  parser.add_argument("--config", metavar="FILE", help="default configs/lab/sft.py; then "
                      "--config.KEY=VALUE overrides")
  spec, overrides, rest = split_config_args(sys.argv[1:])
  args = parser.parse_args(rest)
  config = load(spec or "configs/lab/sft.py", [*overrides, f"init_from={args.policy}",
                              f"task.num_eval={args.problems}"])
  with tempfile.TemporaryDirectory() as workdir:
    ctx = build_context(config, workdir)
    policy = load_policy(ctx, args.policy)
    examples = ctx.eval_examples[:args.problems]
    results = evaluate(policy.params, policy.model_cfg, policy.tokenizer, examples, ctx.verifier,
                       n=args.n, temperature=1.0, max_new_tokens=config.rollout.max_new_tokens,
                       seed=config.seed, keep_responses=True)
  reg = config.task.register
  bugs = register.configured_bugs(reg)
  records = results["records"]
  responses = [t for r in records for t in r["responses"]]
  repeated = [ex for ex in examples for _ in range(args.n)]  # each problem's n samples
  sampled = register.line_error_rates(responses, repeated, bugs)
  greedy = register.line_error_rates([r["greedy_response"] for r in records], examples, bugs)
  cells = cell_stats(responses, repeated, bugs) if reg.hard_bugs else {}
  summary = results["summary"]
  by_bugs = {}  # mean success of the chains with b bug-type operations
  for ex, r in zip(examples, records):
    by_bugs.setdefault(ex["bug_ops"], []).append(sum(r["correct"]) / len(r["correct"]))
  print(json.dumps({"policy": args.policy, "problems": len(examples),
                    f"mean@{args.n}": summary[f"mean@{args.n}"],
                    f"pass@{args.n}": summary[f"pass@{args.n}"], "greedy": summary["greedy"],
                    f"mean@{args.n} by bug ops": {b: sum(v) / len(v)
                                                  for b, v in sorted(by_bugs.items())},
                    "sampled": sampled, "greedy_lines": greedy, **cells,
                    "demonstrator": {"plain": reg.slip_rate, "bug": reg.bug_rate,
                                     "bug_rule": reg.bug_rate}}, indent=1))


if __name__ == "__main__":
  main()
