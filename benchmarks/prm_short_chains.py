"""How a lab ER-PRM stage's PRMs score a chain cut short: the solution score (min over lines) and
the mean line score of the policy's own labelled solutions, whole and cut to their first k lines
(each cut ends there, with EOS, as a policy's short response would).

    python benchmarks/prm_short_chains.py --workdir runs/lab [--prms prm_eta2,prm_hard]

Reads WORKDIR/erprm/erprm/labels.jsonl (the solutions), WORKDIR/erprm/erprm/<prm> and the
tokenizer of WORKDIR/sft/final_hf, as `prl-jax erprm --workdir WORKDIR/erprm` leaves them.
A PRM whose score rises as lines are removed rewards RAFT for writing fewer lines
(docs/lab.md, "RAFT on the PRM's pick").
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prl_jax.models.tokenizer import load_tokenizer  # noqa: E402
from prl_jax.prm import model as prm_model  # noqa: E402
from prl_jax.prm.scoring import prm_step_score_lists  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a lab workdir (runs/lab)")
  parser.add_argument("--prms", default="prm_eta2,prm_hard")
  parser.add_argument("--solutions", type=int, default=256)
  parser.add_argument("--cuts", default="1,2,4,8", help="lines kept")
  parser.add_argument("--prompt-len", type=int, default=32, help="the lab's task.max_prompt_len")
  parser.add_argument("--response-len", type=int, default=64)
  args = parser.parse_args(argv)
  stage = os.path.join(args.workdir, "erprm", "erprm")
  with open(os.path.join(stage, "labels.jsonl")) as fh:
    records = [json.loads(line) for line in fh][:args.solutions]
  tokenizer = load_tokenizer(os.path.join(args.workdir, "sft", "final_hf"))
  problems = [{"prompt": r["prompt"], "task": r["task"]} for r in records]
  print(f"{len(records)} labelled solutions ({np.mean([r['outcome'] for r in records]):.1%} "
        "right); score of the first k lines (min over lines / mean over lines):")
  print("| PRM | " + " | ".join(f"k = {k}" for k in args.cuts.split(",")) + " |")
  print("|---|" + "---|" * len(args.cuts.split(",")))
  for name in args.prms.split(","):
    spec, cfg, params = prm_model.load_prm(os.path.join(stage, name))
    cells = []
    for k in (int(c) for c in args.cuts.split(",")):
      texts = [["\n".join(r["solution"].split("\n")[:k])] for r in records]
      steps = prm_step_score_lists(cfg, params, spec, tokenizer, problems, texts,
                                   np.ones((len(records), 1), bool), args.prompt_len,
                                   args.response_len, rows=256)
      cells.append(f"{np.mean([min(s) for s in steps]):.3f} / "
                   f"{np.mean([np.mean(s) for s in steps]):.3f}")
    print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
