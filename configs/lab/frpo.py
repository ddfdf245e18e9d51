"""FRPO on the lab budget: PRL with every token a step (docs/algorithms.md, FRPO (PRL v2)).

    A_t = GRPO(r_o)_b - (1/eta) sum_{j >= t} log(pi_old / pi_ref)(y_j)

pi_ref is the lab SFT policy. Knobs that differ from configs/lab/rloo.py, and why:
- method=frpo: the estimator above (`prl_jax.algorithms.advantages.prl`, steps forced to tokens).
- algo.loss.dual_clip=3.0: FRPO's policy loss (PPO clip 0.2 with dual clip 3, token-mean, no KL
  loss, no entropy bonus; arXiv 2601.10201 v2 and its official code, see docs/algorithms.md,
  PRL and Sources). configs/lab/grpo.py and grpo_kl.py use the same clip, so the three differ
  only in the KL term.
- algo.prl.eta=10 (1/eta = 0.1 instead of the paper's 0.01): re-scaled for ~40-token
  responses. The KL-to-go sums the log-ratio over the rest of the response, so at a given
  per-token drift it grows with the length: between sqrt(L) (its noise) and L (its mean, the
  accumulated per-token KL). FRPO's responses run to thousands of tokens (cap 8192), ours to 40,
  a factor of ~50, which puts the matching 1/eta between 0.01 * sqrt(50) ~ 0.07 and
  0.01 * 50 = 0.5. On the 25-token arithmetic miniature the paper's 0.01 left the term
  negligible next to the GRPO advantage (docs/results.md), so FRPO was GRPO. 0.1 is the low end
  of that range: large enough to matter, small enough that the outcome still leads (a term that
  dominates would only hold the policy at the SFT). Measured with benchmarks/frpo_scale.py on
  the lab GRPO control's policies (steps 10-60 from the lab SFT; docs/lab.md, Arms): at 1/eta =
  0.1 std(KL-to-go / eta) is 0.14-0.21 of std(GRPO advantage) and no token's sign flips; flips
  set in at 0.2 (0.3-2.2% of tokens), and 0.1 is half that (configs/lab/prl.py and grpo_kl.py
  follow this value).
Shared with every lab arm: the budget (configs/lab/budget.py) and PRIME's accuracy filter
[0.2, 0.8] with refill (`budget.paper_filter`), so FRPO and its GRPO controls see the same groups.
"""

from configs.lab import budget

ETA = 10.0  # the lab's FRPO/PRL eta (1/eta = 0.1, measured; see above)


def get_config():
  c = budget.get_config()
  c.method = "frpo"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.prl.eta = ETA
  c.algo.loss.dual_clip = 3.0
  budget.paper_filter(c)
  return c
