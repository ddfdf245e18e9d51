"""ER-PRM's RL: RAFT that keeps, of each prompt's responses, the one a frozen ER-PRM scores best.

The PRM comes from `prl-jax erprm` run on the same SFT policy (it writes one PRM directory per
label temperature); name it with the config argument or the override:

    prl-jax train --config configs/mini/erprm.py:prm_dir=runs/erprm/prm_eta2 ...
    prl-jax train --config configs/mini/erprm.py --config.algo.erprm.prm_dir=runs/erprm/prm_eta2 ...
"""

from configs.mini import budget
from prl_jax.config import parse_config_arg


def get_config(arg=None):
  args = parse_config_arg(arg, {"prm_dir": ""})
  c = budget.get_config()
  c.method = "erprm"
  c.algo.erprm.prm_dir = args["prm_dir"]
  c.algo.erprm.agg = "min"
  c.algo.raft.keep_per_prompt = 1
  return c
