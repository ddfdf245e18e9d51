"""rePIRL (arXiv 2602.07832, reconstructed): Qwen2.5-3B-Instruct with a PRM learned by inverse RL.

    prl-jax train --workdir gs://BUCKET/runs/repirl --config \\
        configs/paper/repirl_qwen25_3b.py:hf_dir=/ckpt/Qwen2.5-3B-Instruct,train_file=/data/numina,eval_file=/data/math500

rePIRL has no public code and ALGORITHMS.md section 6 ("A6") reconstructs it from the paper's
abstract and reviews; settings it does not give are PRIME's (ALGORITHMS.md section 3, "A3"),
the setting rePIRL compares against, and are listed as such.

Sources:
  model        Qwen2.5-3B-Instruct (A8: math average 33.5 vs 31.7 RLOO, 30.7 MCTS-labelled PRM).
  PRM          implicit, r_phi = beta log(pi_phi / pi_ref) per token, initialised from the policy
               (A6 option (a)); beta = 0.05 (A3's value; A6 gives none).
  IRL          maximum-entropy IRL against expert demonstrations, log Z by self-normalised
               importance sampling over the failed rollouts (A6).
  policy       RLOO on r_o + lambda R_phi with lambda = 0.1 (A6: 0.05-0.1), entropy bonus 0.001,
               K = 4 (A6).
  from PRIME   256 prompts per step, temperature 1, prompt/response 1024/3072, PPO-clip 0.2, no KL,
               mini-batch 256, policy lr 5e-7, PRM lr 1e-6, grad clips 1.0 / 10.0 (A3).
  evaluation   greedy pass@1 on PRIME's math benchmarks (A8 reports a math average; the suite is
               not in ALGORITHMS.md).

Deliberate differences:
  - Demonstrations are the data set's own solutions (layout `numina`: NuminaMath-CoT, whose
    solutions are written by a strong model), not the paper's; correct rollouts are not yet added
    to the expert set as pseudo-experts.
  - No accuracy filter: groups whose rollouts all fail are where the dense PRM signal matters (A6).
  - 240 steps (the length of PRIME's method comparison), evaluation every 16 steps, AdamW weight
    decay 0, micro-batch 64, log-prob chunk 512: ours.
"""

from configs.paper.common import paper_config, prime_setting

BENCHMARKS = ("aime24", "amc", "math500", "minerva", "olympiadbench")


def get_config(arg=None):
  c, _ = paper_config(arg, preset="qwen2.5-3b", layout="numina")
  c.method = "repirl"
  prime_setting(c)
  c.filter.enable = False

  c.algo.repirl.lam = 0.1
  c.algo.repirl.beta = 0.05
  c.algo.loss.entropy_coef = 0.001
  c.train.steps = 240
  return c
