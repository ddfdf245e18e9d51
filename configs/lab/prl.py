"""PRL on the lab budget: GRPO-normalised outcome minus KL-to-go / eta, read at line ends
(docs/algorithms.md, PRL).

    R_t = A_b - (1/eta) sum_{j >= t} log(pi_old / pi_ref)(y_j)   at each newline (and the last
    token), every token of a line taking its line end's value

Knobs that differ from configs/lab/rloo.py, and why:
- method=prl, algo.prl.mode="orm": the published PRL (GRPO-normalised outcome; arXiv 2601.10201
  and its official code, docs/algorithms.md, PRL).
- algo.steps.mode="delimiter", algo.steps.delimiter="\\n": a step is one register line (one
  operation), the unit a process reward should judge here; the paper's fixed 64- or 256-token
  steps would make the whole ~40-token response one step.
- algo.prl.eta: configs/lab/frpo.py's value (10, 1/eta = 0.1), re-scaled for ~40-token responses
  from the paper's 100-200 (the reasons are in frpo.py); the KL-to-go is the same quantity, PRL
  only reads it at line ends instead of every token.
- algo.loss.dual_clip=3.0: PRL's policy loss (PPO clip 0.2, dual clip 3, token-mean, no KL loss),
  the same as configs/lab/frpo.py and grpo.py.
Shared with every lab arm: the budget and PRIME's accuracy filter (`budget.paper_filter`).
"""

from configs.lab import budget, frpo


def get_config():
  c = budget.get_config()
  c.method = "prl"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.prl.mode = "orm"
  c.algo.prl.eta = frpo.ETA
  c.algo.steps.mode = "delimiter"
  c.algo.steps.delimiter = "\n"
  c.algo.loss.dual_clip = 3.0
  budget.paper_filter(c)
  return c
