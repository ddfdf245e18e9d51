"""GRPO + a k3 KL loss to the SFT policy at FRPO's weight: FRPO's second fair control.

    loss = PPO-clip(A_grpo) + (1/eta) * token-mean_t k3_t,   k3 = r - 1 - log r,  r = pi_ref / pi

Exactly configs/lab/countdown/grpo.py plus algo.loss.kl_kind="k3", algo.loss.kl_coef = 1/eta of
configs/lab/countdown/frpo.py (read from it): why the two penalties match at that coefficient is
in configs/lab/grpo_kl.py.
"""

from configs.lab.countdown import frpo, grpo


def get_config():
  c = grpo.get_config()
  c.algo.loss.kl_kind = "k3"
  c.algo.loss.kl_coef = 1.0 / frpo.ETA
  return c
