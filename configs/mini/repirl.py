"""rePIRL: implicit PRM learned by max-ent IRL from solver demonstrations; RLOO on r_o + lambda R_phi."""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "repirl"
  c.algo.repirl.lam = 0.1
  c.algo.loss.entropy_coef = 0.001
  return c
