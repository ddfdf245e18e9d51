"""SFT of the lab policy, continued on the solver's clean demonstrations that the rePIRL arm is
given: the first half of "SFT on the same demonstrations + RLOO" (configs/lab/sft_demos_rloo.py),
the control that asks whether rePIRL's gain comes from IRL or from the demonstrations.

    prl-jax sft --config configs/lab/sft_demos.py --workdir runs/lab/sft_demos

What "the same demonstrations" means here: rePIRL's experts are the `solution` of each prompt it
trains on (the register solver's chains, every line right), one new prompt per accepted group,
rollout.prompts_per_step = 16 per RL step, drawn from the training split (task.seed,
task.num_train) in the order of the run's seed. This SFT draws sft.batch_size = 16 problems of the
same split per step for sft.steps = the arms' RL steps, seeded by the same `seed`: the same
number of clean demonstrations from the same problems' distribution. Which 16 problems rePIRL
keeps at a step depends on its own policy (the accuracy filter), so the sets are equal in
distribution and count, not problem by problem. The count assumes the arms run RL_STEPS = 60 RL
steps, the `lab` reproduction preset's length (`prl_jax.reproduce.presets`, G2's step; the test
checks the two agree); for arms of another length pass it:
`--config configs/lab/sft_demos.py:rl_steps=N`.

Knobs that differ from configs/lab/sft.py, and why:
- init_from="runs/lab/sft/final_hf": continue from the policy every RL arm starts from.
- task.demonstrator="solver": the task's own solutions (`prl_jax.data.demonstrations`), not the
  buggy demonstrator's.
- sft.batch_size = rollout.prompts_per_step, sft.steps = rl_steps (default RL_STEPS): the count
  above.
- sft.warmup_steps = 5% of sft.steps (at least 1): a fresh optimizer on a trained policy. sft.lr
  is the lab SFT's 1e-3 (cosine decay), the lab SFT being itself a fine-tune of a trained
  policy, so the demonstrations are used as the lab SFT would use them.
- sft.max_ops, task.max_prompt_len, rollout.max_new_tokens are the budget's (8 operations), not
  the lab SFT's 12: rePIRL's experts solve the training split's 8-operation prompts, so the
  same demonstrations are 8-operation chains.
"""

from configs.lab import budget
from prl_jax.config import parse_config_arg

RL_STEPS = 60  # RL steps of each lab arm in `prl-jax reproduce --preset lab`


def get_config(arg=None):
  args = parse_config_arg(arg, {"rl_steps": RL_STEPS})
  c = budget.common()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  c.init_from = "runs/lab/sft/final_hf"
  c.task.demonstrator = "solver"
  c.sft.lr = 1e-3  # configs/lab/sft.py's
  c.sft.batch_size = c.rollout.prompts_per_step
  c.sft.steps = args["rl_steps"]
  c.sft.warmup_steps = max(1, args["rl_steps"] // 20)
  return c
