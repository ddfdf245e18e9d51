"""The process-reward lab: register chains (prl_jax.data.register) on one shared budget.

Every arm starts from the same SFT policy (configs/lab/sft.py: the "lab" preset, ~0.8M
parameters, trained on the buggy demonstrator) and spends the same budget: 16 prompts x 8
responses per step, the same optimizer and update schedule. Chains have K = 8 operations in
training and K = 12 in the held-out split.

The demonstrator (task.register.*): 3 of the 8 operations of every chain are of its 5 bug types,
each applied by the bug's rule with probability 0.55, so success is ~9% (0.45^3), the policy's
greedy answer is wrong and no chain is easy. With 1-4 bug operations per chain at 0.7 (the
first design), the one-bug chains succeed 27% of the time and outcome RLOO learned the bugs from
them as fast as the oracle (docs/lab.md, "Gates measured").
"""

from configs import base


def common():
  """What the SFTs and the RL arms share: the model, the task and its demonstrator, the rollout
  shape. The SFT configs start here (they train with their own sft.* schedule), so a change to
  the RL arms' optimizer below leaves their stage inputs, and their trained policies, as they are."""
  c = base.get_config()
  c.model.preset = "lab"
  c.task.name = "register"
  c.task.min_ops = c.task.max_ops = 8
  # "Q: 7:" + 8 operations + "\nA: " is 25 characters; a held-out 12-operation prompt is 33,
  # which the held-out evaluation samples without this check (docs/lab.md, "The arms past G2").
  c.task.max_prompt_len = 32
  c.task.num_train = 20000
  c.task.num_eval = 512
  c.rollout.prompts_per_step = 16
  c.rollout.n = 8
  c.rollout.max_new_tokens = 40  # 8 lines of 4 characters, newlines and EOS
  c.optim.lr = 1e-4
  c.optim.prm_lr = 2e-4
  c.optim.value_lr = 1e-4
  c.train.ppo_epochs = 2
  c.train.mini_batch_size = 64
  c.sft.steps = 3000
  c.sft.batch_size = 64
  c.sft.lr = 3e-3
  c.sft.warmup_steps = 50
  c.task.demonstrator = "buggy"
  c.task.register.min_bugs = c.task.register.max_bugs = 3
  c.task.register.bug_rate = 0.55
  return c


def get_config():
  """The RL arms' budget: `common()` and a learning rate that decays to 0 over the run.

  optim.schedule="cosine" (the papers' trainers keep theirs constant): our runs solve the task
  by step ~30 and then train a nearly deterministic policy (`policy/entropy` falls from ~0.06 to
  ~0.007) with Adam steps of about the same size as before (`policy/update_norm` 0.038 -> 0.020,
  median; `policy/grad_norm` 0.08-0.2 throughout). Now and then such a step moves the policy
  far (`policy/approx_kl` up to 0.19 against a median of ~4e-4): at a constant rate 3 of the 27
  runs of the fourth lab run collapsed after solving the task (final eval 0-8%). In paired
  probes (FRPO seeds 0-3, oracle seeds 0-1, 60 steps) the decay cut the steps after step 20
  with approx_kl > 0.01 from 19 to 4 and left the steps to 80% reward as they were (docs/lab.md,
  "Late collapses").
  """
  c = common()
  c.optim.schedule = "cosine"
  return c


def paper_filter(c):
  """PRIME's accuracy filter: keep groups with 20-80% correct, refilled from further prompts.

  The lab's RLOO, oracle and PRIME arms all use it, so they differ only in their process reward.
  """
  c.filter.enable = True
  c.filter.acc_lo = 0.2
  c.filter.acc_hi = 0.8
  return c
