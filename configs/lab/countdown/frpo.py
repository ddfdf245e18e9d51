"""FRPO on the countdown sub-lab: PRL with every token a step (configs/lab/frpo.py).

    A_t = GRPO(r_o)_b - (1/eta) sum_{j >= t} log(pi_old / pi_ref)(y_j)

pi_ref is the sub-lab's SFT policy. method=frpo, algo.loss.dual_clip=3.0 and algo.prl.eta=10
(1/eta = 0.1, not the paper's 0.01): countdown responses run to ~40-60 tokens like the register
chains, and the KL-to-go grows with the tokens still to come, so the register lab's re-scaling
for short responses applies unchanged (configs/lab/frpo.py's docstring gives the range 0.07-0.5).
"""

from configs.lab.countdown import budget

ETA = 10.0  # 1/eta = 0.1, the register lab's value; see configs/lab/frpo.py


def get_config():
  c = budget.get_config()
  c.method = "frpo"
  c.init_from = budget.SFT_DIR
  c.algo.prl.eta = ETA
  c.algo.loss.dual_clip = 3.0
  return c
