"""The buggy demonstrator of the register task: success, pass@8, wrong majorities, coincidences.

    python benchmarks/register_demonstrator.py [--problems 1500] [--bug-seeds 0 1 2]
        [--config configs/lab/budget.py] [--config.task.register.KEY=VALUE ...]

Prints one markdown row per bug seed (docs/lab.md): mean success of 8 demonstrations per chain,
pass@8, how often the most common final line is wrong, success by number of bugged operations,
and the share of wrong chains the outcome checker pays (coincidences). The demonstrator's
settings (task.register.*: bug types, bug operations per chain, bug and slip rates) are the
config's, the lab's by default.
"""

import argparse
import collections
import random
import sys

import numpy as np

from prl_jax.config import apply_overrides, load_config_file, split_config_args
from prl_jax.data import register


def measure(bug_seed: int, problems: int, reg, samples: int = 8) -> dict:
  """The demonstrator's statistics with the task.register settings `reg` and this bug seed."""
  examples = register.generate(problems, seed=1, bug_seed=bug_seed, num_bugs=reg.num_bugs,
                               min_bugs=reg.min_bugs, max_bugs=reg.max_bugs,
                               bug_keys=reg.bug_keys, rule=reg.rule, hard_bugs=reg.hard_bugs,
                               easy_share=reg.easy_share)
  bugs = register.bug_types(bug_seed, reg.num_bugs, reg.bug_keys,
                            reg.max_shift)
  rng = random.Random(0)
  success, wrong, paid_wrong, majority_wrong = [], 0, 0, 0
  by_bugs = collections.defaultdict(list)
  for ex in examples:
    demos = [register.demonstrate(ex["question"], rng, bugs, bug_rate=reg.bug_rate,
                                  slip_rate=reg.slip_rate, rule=reg.rule)
             for _ in range(samples)]
    scores = [register.check(d, ex) for d in demos]
    success.append(scores)
    by_bugs[ex["bug_ops"]].append(np.mean(scores))
    for demo, score in zip(demos, scores):
      if register.first_error(demo, ex) is not None:
        wrong += 1
        paid_wrong += score > 0
    top = collections.Counter(d.splitlines()[-1] for d in demos).most_common(1)[0][0]
    majority_wrong += top != ex["solution"].splitlines()[-1]
  success = np.asarray(success)
  return {"mean": success.mean(), "pass": success.max(axis=1).mean(),
          "majority_wrong": majority_wrong / problems, "coincidence": paid_wrong / max(1, wrong),
          "by_bugs": {k: float(np.mean(v)) for k, v in sorted(by_bugs.items())}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--problems", type=int, default=1500)
  parser.add_argument("--bug-seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--config", metavar="FILE", help="default configs/lab/budget.py; then "
                      "--config.KEY=VALUE overrides")
  spec, overrides, rest = split_config_args(sys.argv[1:])
  args = parser.parse_args(rest)
  config = load_config_file(spec or "configs/lab/budget.py")
  reg = apply_overrides(config, overrides).task.register
  ops = " / ".join(str(b) for b in range(reg.min_bugs, reg.max_bugs + 1))
  print(f"| bug seed | mean success | pass@8 | most common final line wrong | success by bug ops "
        f"{ops} | wrong chains paid |")
  print("|---|---|---|---|---|---|")
  for seed in args.bug_seeds:
    m = measure(seed, args.problems, reg)
    by = " / ".join(f"{100 * v:.1f}" for v in m["by_bugs"].values())
    print(f"| {seed} | {100 * m['mean']:.1f}% | {100 * m['pass']:.1f}% | "
          f"{100 * m['majority_wrong']:.1f}% | {by}% | {100 * m['coincidence']:.2f}% |")


if __name__ == "__main__":
  main()
