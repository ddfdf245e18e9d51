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
"""

import argparse
import json
import sys
import tempfile

from prl_jax.config import split_config_args
from prl_jax.data import register
from prl_jax.eval.evaluate import evaluate, load_policy
from prl_jax.reproduce.stages import load
from prl_jax.run.context import build_context


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
  sampled = register.line_error_rates([t for r in records for t in r["responses"]],
                                      [ex for ex in examples for _ in range(args.n)], bugs)
  greedy = register.line_error_rates([r["greedy_response"] for r in records], examples, bugs)
  summary = results["summary"]
  by_bugs = {}  # mean success of the chains with b bug-type operations
  for ex, r in zip(examples, records):
    by_bugs.setdefault(ex["bug_ops"], []).append(sum(r["correct"]) / len(r["correct"]))
  print(json.dumps({"policy": args.policy, "problems": len(examples),
                    f"mean@{args.n}": summary[f"mean@{args.n}"],
                    f"pass@{args.n}": summary[f"pass@{args.n}"], "greedy": summary["greedy"],
                    f"mean@{args.n} by bug ops": {b: sum(v) / len(v)
                                                  for b, v in sorted(by_bugs.items())},
                    "sampled": sampled, "greedy_lines": greedy,
                    "demonstrator": {"plain": reg.slip_rate, "bug": reg.bug_rate,
                                     "bug_rule": reg.bug_rate}}, indent=1))


if __name__ == "__main__":
  main()
