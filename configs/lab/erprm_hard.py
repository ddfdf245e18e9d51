"""ER-PRM's RAFT with the hard-label PRM: the control of configs/lab/erprm.py.

The same RAFT (keep the PRM's best of each prompt's 8 responses), the same Monte Carlo labels,
the same PRM training, but the PRM learnt eta = inf labels, 1[c_k > 0] (a line is good when any
of its N completions ends right). ER-PRM's RL claim is that its eta = 2 PRM makes RAFT better
than PRMs of other labels; this arm is the one it is measured against.

    prl-jax train --config configs/lab/erprm_hard.py --workdir runs/lab/rl/erprm_hard

Knobs that differ from configs/lab/rloo.py: those of configs/lab/erprm.py (method=erprm,
algo.raft.keep_per_prompt, algo.erprm.prm_dir, plus_token and minus_token), with prm_dir the
hard-label PRM.
"""

from configs.lab import erprm


def get_config(arg=None):
  return erprm.get_config(arg or "prm=hard")
