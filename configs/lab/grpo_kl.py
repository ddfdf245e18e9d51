"""GRPO + a k3 KL loss to the SFT reference at FRPO's coefficient: FRPO's second fair control
(PRL v2 / FRPO compares GRPO, GRPO + KL loss and FRPO; docs/algorithms.md, Sources and Headline
results).

    loss = PPO-clip(A_grpo) + c * token-mean_t k3_t,   k3 = r - 1 - log r,  r = pi_ref / pi_theta

Knobs that differ from configs/lab/rloo.py, and why:
- method=grpo, algo.loss.dual_clip=3.0: exactly configs/lab/grpo.py.
- algo.loss.kl_kind="k3" (the default, verl's low_var_kl; docs/algorithms.md, Shared pieces) and
  algo.loss.kl_coef = c = 1/eta of configs/lab/frpo.py (read from it, so the two stay matched).
  Why that value: FRPO adds -(1/eta) G_t to the advantage of token t, where G_t is the KL-to-go;
  in the same token-mean loss its gradient is (1/eta) mean_t G_t grad log pi(y_t), the
  score-function estimate of the gradient of (1/eta) KL(pi || pi_ref) over whole responses. The
  k3 loss's gradient, c mean_t grad k3_t, estimates the gradient of c times the same per-token
  KL summed over the sampled prefixes. Both penalise the same divergence at the same weight per
  token under the same aggregation when c = 1/eta; they differ in where the penalty enters (the
  advantage, with credit to earlier tokens, against a separate loss term without it), which is
  the comparison FRPO's paper makes.
The reference model is the lab SFT (any kl_coef != 0 keeps a frozen copy of the initial policy).
"""

from configs.lab import frpo, grpo


def get_config():
  c = grpo.get_config()
  c.algo.loss.kl_kind = "k3"
  c.algo.loss.kl_coef = 1.0 / frpo.ETA
  return c
