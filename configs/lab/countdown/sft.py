"""SFT of the countdown sub-lab's policy on the uniform demonstrator: every arm starts here.

    prl-jax sft --config configs/lab/countdown/sft.py --workdir runs/lab_countdown/sft

task.demonstrator="uniform": each row's demonstration is drawn uniformly among all of the
problem's distinct solutions (prl_jax.data.countdown_solutions), so the policy spreads its mass
over many ways to the target rather than the solver's one shortest way. sft.steps sets how much
it solves: the sub-lab wants a base mean@8 of 10-25% (docs/lab_countdown.md, calibration).
"""

from configs.lab.countdown import budget


def get_config():
  c = budget.get_config()
  c.method = "grpo"  # unused by SFT; kept valid so the shared validation passes
  c.task.demonstrator = "uniform"
  c.sft.steps = 3000
  c.checkpoint.every = 250  # a 1.5 s step: saving every 10 would cost more than it saves
  return c
