"""rePIRL on the lab budget, the official recipe (mode "code"; docs/algorithms.md, rePIRL): a
tanh-MLP reward head on a copy of the policy, trained by max-ent IRL with the solver's clean
chains as the expert demonstrations, then per-token-index leave-one-out token advantages.

The demonstrations are each problem's `solution`, written by the register task's solver
(`prl_jax.data.register.solve`: every line right), one beside every rollout
(`prl_jax.algorithms.repirl.demonstrations`). `task.demonstrator` ("buggy" in the budget) is read
only by SFT, so it never reaches them. configs/lab/sft_demos_rloo.py gives the same clean
demonstrations to SFT before RLOO: repirl against it asks whether a gain comes from the IRL
reward or from the demonstrations.

Knobs that differ from configs/lab/rloo.py, and why (official values from github.com/ucsb-mlsec/irl,
recipe/irl, commit 0159023; docs/algorithms.md, rePIRL and Sources):
- method=repirl, algo.repirl.mode="code": the official recipe, not the earlier reconstruction.
- algo.repirl.lam=0.05: the official Qwen2.5-3B weight of the process term.
- algo.repirl.head_width=64 instead of 1024: the lab policy is 128 wide (as configs/mini/repirl.py).
- algo.repirl.pool_size=8 instead of the official 1: pools of one row are one-sided, so the RM
  loss has a slope along a constant reward offset and the head drifts to r = +1 on every token;
  on the miniature pools of one never separated correct from failed rollouts at three RM
  learning rates, pools of 8 (4 rollouts + 4 demonstrations of one prompt) did at every step
  (docs/algorithms.md, rePIRL, has the measurement). 8 divides the 2 x 128 RM rows per step.
- algo.repirl.rm_mini_batch_size=32: the official RM mini-batch, 256 / 32 = 8 RM steps per RL
  step; the RM learns at the budget's optim.prm_lr (2e-4; PRIME's implicit PRM uses 2e-5; the
  official 3e-8 is a float16 artefact, docs/algorithms.md).
Deliberately kept from RLOO rather than the official run script: the policy loss (no dual clip,
token-mean, no entropy bonus instead of dual clip 3, seq-mean-token-mean, entropy 0.001), so
repirl, rloo and sft_demos_rloo differ only in the reward; lab responses all have ~40 tokens,
where seq-mean-token-mean and token-mean nearly coincide. The accuracy filter [0.2, 0.8] is the
official one too (`budget.paper_filter`).
"""

from configs.lab import budget


def get_config():
  c = budget.get_config()
  c.method = "repirl"
  c.init_from = "runs/lab/sft/final_hf"
  c.algo.repirl.mode = "code"
  c.algo.repirl.lam = 0.05
  c.algo.repirl.head_width = 64
  c.algo.repirl.pool_size = 8
  c.algo.repirl.rm_mini_batch_size = 32
  budget.paper_filter(c)
  return c
