"""The countdown sub-lab: FRPO's exploration claim on a task with many valid solutions.

FRPO (PRL v2, arXiv 2601.10201) claims more than step verification: against GRPO and GRPO with a
KL loss it keeps pass@n up while drift (KL to the reference) and entropy collapse stay down. The
register lab (configs/lab) has one right chain per problem, so it cannot show that; countdown
with 3-4 numbers has many (docs/lab_countdown.md).

Shared by the SFT and every arm:
- task: countdown from the existing generator (3-4 numbers in [1, 25], target <= 200), keeping
  problems with at least 4 distinct solutions (`task.countdown.min_solutions`; the unfiltered
  3-number problems have a median of 3, the 4-number ones 14: prl_jax.data.countdown).
- model: the lab's ~0.8M-parameter "lab" preset, character tokenizer.
- budget: 16 prompts x 8 responses per step, PPO with 2 epochs of 64-row mini-batches at lr 1e-4,
  as configs/lab/budget.py. No accuracy filter: FRPO's KL-to-go term acts on every group (an
  all-wrong group keeps it where GRPO's advantage is zero), and refill rounds would multiply the
  sampling cost of a base policy that solves 10-25% of the problems.
"""

from configs import base

MIN_SOLUTIONS = 4
SFT_DIR = "runs/lab_countdown/sft/final_hf"


def get_config():
  c = base.get_config()
  c.model.preset = "lab"
  c.task.name = "countdown"
  c.task.min_ops, c.task.max_ops = 3, 4  # countdown reads them as the count of given numbers
  c.task.countdown.min_solutions = MIN_SOLUTIONS
  c.task.max_prompt_len = 40  # "Q: make 200 from 25 25 25 25\nA: " is 33 characters
  c.task.num_train = 10000  # RL sees ~16 x 100 prompts; SFT redraws demonstrations per row
  c.task.num_eval = 512
  c.rollout.prompts_per_step = 16
  c.rollout.n = 8
  c.rollout.max_new_tokens = 64  # 3 lines of <= 10 characters, the answer line, EOS
  c.optim.lr = 1e-4
  c.train.ppo_epochs = 2
  c.train.mini_batch_size = 64
  c.sft.batch_size = 64
  c.sft.lr = 3e-3
  c.sft.warmup_steps = 50
  return c
