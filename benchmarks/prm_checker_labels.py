"""Step labels from the register task's checker, as a PRM data file: can a lab-sized PRM learn to
check a line when its labels are exact?

    python benchmarks/prm_checker_labels.py --policy runs/lab/sft/final_hf --out runs/checker.jsonl
    prl-jax erprm --config configs/lab/erprm.py --workdir runs/erprm_checker \
      --config.init_from=runs/lab/sft/final_hf --config.algo.erprm.prm_data=runs/checker.jsonl \
      --config.algo.erprm.prm_data_format=trl --config.optim.prm_lr=0.001 --prm-steps 400

The lab's Monte Carlo labels find the first wrong line at AUROC 0.91-0.93, yet PRMs trained on
them rank lines at chance (docs/lab.md, "ER-PRM best-of-N on register chains"). This writes the
same number of solutions (512 training questions x 4, drawn from the buggy demonstrator the
policy was fine-tuned on, in the task's seeded order) with the label a Monte Carlo estimate
converges to on this task: a line is good while every line up to it is right
(`register.step_labels`: its operation applied to the value written on the line before), since
the outcome reads the last two true values and a wrong value is carried to the end. A PRM that
learns these is the verifier the lab needs; one that does not cannot be taught by noisier labels.
Rows are TRL's stepwise-supervision format (prompt, completions, labels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.prm_capacity import labelled_rows  # noqa: E402
from prl_jax.config import apply_overrides, load_config_file  # noqa: E402
from prl_jax.data import register  # noqa: E402
from prl_jax.eval.prm_experiment import label_problems  # noqa: E402
from prl_jax.run.context import build_context  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/lab/erprm.py")
  parser.add_argument("--policy", required=True, help="the lab SFT (its tokenizer and prompts)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--problems", type=int, default=512)
  parser.add_argument("--solutions-per-problem", type=int, default=4)
  args = parser.parse_args(argv)
  config = load_config_file(args.config)
  apply_overrides(config, [f"init_from={args.policy}"])
  ctx = build_context(config, tempfile.mkdtemp(prefix="checker-labels-"), reads_prm=False)
  # Distinct questions, as `prl-jax erprm` picks the problems it labels.
  problems = label_problems(ctx.train_examples, args.problems, config.seed)
  rows = labelled_rows(problems, args.solutions_per_problem, "buggy", 0.0, config.task.register,
                       "prefix", config.seed)
  per = args.solutions_per_problem
  right = sum(register.check("\n".join(row["completions"]), problems[i // per]) > 0
              for i, row in enumerate(rows))
  good = [label for row in rows for label in row["labels"]]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as fh:
    for row in rows:
      fh.write(json.dumps(row) + "\n")
  print(f"{len(rows)} solutions to {len(problems)} questions ({right / len(rows):.1%} right), "
        f"{len(good)} lines ({np.mean(good):.1%} labelled good); prompt {problems[0]['prompt']!r}"
        f" -> {args.out}")


if __name__ == "__main__":
  main()
