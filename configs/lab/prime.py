"""PRIME on the lab budget: implicit PRM on outcome labels, RLOO per reward source, code mode,
with the paper's accuracy filter [0.2, 0.8] (as the lab's RLOO and oracle arms).

Knobs that differ from RLOO besides the method, and why (docs/lab.md, "PRIME's implicit PRM"):
- algo.prime.beta=2 instead of the paper's 0.05: beta turns the response's summed log-ratio into
  the PRM's logit, and the paper's responses have thousands of tokens where the lab's have 40. At
  0.05 the PRM must move its log-probs by tens of nats to express any confidence, and it fitted
  the batch's low success rate by flattening its next-token distribution, which lowers the right
  digits and raises the wrong ones: its step AUROC fell from 0.85 to 0.3 within 25 steps.
- optim.prm_lr=2e-5 instead of the budget's 2e-4 (the paper's PRM:policy ratio of 2): the PRM's
  loss and ranking stay steady (step AUROC 0.74 / 0.70 / 0.79 over steps 1-10, 11-45 and the last
  15, against 0.67 / 0.70 / 0.73 at 2e-4).
The code-mode normalisation divides the process scores by the batch's largest return-to-go, so
beta does not change the policy's advantages, only what the PRM learns.
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "prime"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.prime.mode = "code"
  c.algo.prime.granularity = "token"
  c.algo.prime.beta = 2.0
  c.optim.prm_lr = 2e-5
  budget.paper_filter(c)
  return c
