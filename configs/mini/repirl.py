"""rePIRL at CPU scale, as the official code (mode "code"): a tanh-MLP reward head on a copy of the
policy trained by max-ent IRL against the task's solutions and the rollouts scored > 0.99, then
token advantages with per-token-index leave-one-out (docs/algorithms.md, rePIRL).

From the official run script (github.com/ucsb-mlsec/irl, recipe/irl, commit 0159023): lam 0.05,
pools of one row, RM mini-batches of 32 rows (16 RM steps per RL step: 256 rollouts + 256
demonstrations), the accuracy filter [0.2, 0.8], dual clip 3, seq-mean-token-mean, entropy 0.001.
Ours, for the scale: the head is 64 wide instead of 1024, the RM learns at optim.prm_lr = 2e-4
(a float32 tuning parameter, see configs/paper/repirl_qwen25_3b.py), and the policy keeps the
shared budget's update schedule (configs/mini/budget.py). With pools of one row the RM drifts to
r = +1 on every token (experts outnumber samples; docs/algorithms.md, rePIRL, has the measurement);
--config.algo.repirl.pool_size=8 keeps it separating correct from failed rollouts. The earlier
reconstruction runs with --config.algo.repirl.mode=implicit --config.algo.repirl.lam=0.1.
"""

from configs.mini import budget


def get_config():
  c = budget.get_config()
  c.method = "repirl"
  c.algo.repirl.mode = "code"
  c.algo.repirl.lam = 0.05
  c.algo.repirl.head_width = 64
  c.algo.repirl.pool_size = 1
  c.algo.repirl.rm_mini_batch_size = 32
  c.algo.loss.entropy_coef = 0.001
  c.algo.loss.dual_clip = 3.0
  c.algo.loss.agg = "seq-mean-token-mean"
  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  return c
