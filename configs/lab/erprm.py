"""ER-PRM on the lab task (docs/algorithms.md, ER-PRM; docs/erprm.md): step labels from Monte Carlo
completions of the lab SFT policy, PRMs at three label temperatures from the same labels, and
RAFT that keeps, of each prompt's 8 responses, the one a frozen PRM scores best.

    r_k(eta) = (1/eta) log(1 + (c_k/N)(e^eta - 1)),   c_k of N completions of line k's prefix
                                                      correct

1. Labels and PRMs (one run; the same labels give all three PRMs and an outcome RM):

    prl-jax erprm --config configs/lab/erprm.py --workdir runs/lab/erprm

   writes runs/lab/erprm/erprm/prm_eta2 (ER-PRM, eta = 2), prm_hard (eta = inf: 1[c_k > 0]),
   prm_soft (eta -> 0: c_k / N) and orm.
2. RL with one of them (`prm=er` (default), `hard` or `soft`, or any directory with `prm_dir=`):

    prl-jax train --config configs/lab/erprm.py:prm=hard --workdir runs/lab/rl/erprm_hard

Knobs that differ from configs/lab/rloo.py, and why:
- method=erprm, algo.raft.keep_per_prompt=1: ER-PRM's RAFT keeps the PRM's best sample per prompt
  (the paper: 16 samples, keep the best; here the budget's 8).
- algo.erprm.prm_dir: the PRM above.
- algo.erprm.eta=2.0: the ER-PRM label temperature of the paper's main runs (the base default);
  eta = inf and eta -> 0 are the hard- and soft-label limits trained beside it.
- algo.erprm.num_completions=16: the paper's N (the base default), at temperature 1.
- algo.erprm.agg="min": a chain is as good as its worst line (the paper's default aggregation).
- algo.steps.delimiter="\\n" (the base default): one register line per step, labelled at its
  newline.
- algo.erprm.plus_token="Y", minus_token="N" instead of "+" and "-": the PRM reads two logits
  after each line's newline, where the SFT policy it starts from predicts the next line's sign,
  "+" or "-", from the question. Those two logits would start out encoding the next operation,
  not the line's correctness; "Y" and "N" never occur in a register response, so both start
  near the same value.
Shared with every lab arm: the budget and PRIME's accuracy filter [0.2, 0.8]
(`budget.paper_filter`), so RAFT picks among the same kind of groups the other arms learn from.
"""

import os

from configs.lab import budget
from prl_jax.config import ConfigError, parse_config_arg

PRM_ROOT = "runs/lab/erprm/erprm"
PRMS = {"er": "prm_eta2", "hard": "prm_hard", "soft": "prm_soft"}


def get_config(arg=None):
  args = parse_config_arg(arg, {"prm": "er", "prm_dir": ""})
  if args["prm"] not in PRMS:
    raise ConfigError(f"prm={args['prm']!r}; choose one of {', '.join(PRMS)} (or prm_dir=DIR).")
  c = budget.get_config()
  c.method = "erprm"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.erprm.prm_dir = args["prm_dir"] or os.path.join(PRM_ROOT, PRMS[args["prm"]])
  c.algo.erprm.eta = 2.0
  c.algo.erprm.num_completions = 16
  c.algo.erprm.agg = "min"
  c.algo.erprm.plus_token = "Y"
  c.algo.erprm.minus_token = "N"
  c.algo.steps.delimiter = "\n"
  c.algo.raft.keep_per_prompt = 1
  budget.paper_filter(c)
  return c
