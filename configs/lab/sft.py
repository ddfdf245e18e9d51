"""SFT of the lab policy on the buggy demonstrator: every RL arm starts here.

    prl-jax sft --config configs/lab/sft.py --workdir runs/lab/sft

It continues the clean SFT (configs/lab/sft_clean.py, init_from) on the buggy demonstrator's
chains, so the policy first knows the task and then learns the demonstrator's bugs. Trained
from scratch on the buggy chains instead (3,000 steps), the ~0.8M-parameter policy stayed at a
loss of 0.145 nats per token (the demonstrator's entropy is about 0.058) and slipped on 23% of
the plain lines at temperature 1 (the demonstrator on 2%): its failures were noise rather than
the systematic bugs a process reward can localise (docs/lab.md, gate G1).

Knobs that differ from the clean SFT, and why:
- init_from="runs/lab/capacity_sft/final_hf": the clean SFT's policy.
- task.demonstrator="buggy" (the budget's): the demonstrator with the hidden bug types.
- sft.steps=800, sft.lr=1e-3, sft.warmup_steps=20: a fine-tune of a trained policy, not training
  from scratch (its loss reaches the demonstrator's entropy within a few hundred steps).
- sft.max_ops=12 (with the prompt and response room of 12 operations): the demonstrations have
  8-12 operations, the RL arms' chains and the held-out split's. Fine-tuned on 8-operation chains
  only, the policy stopped after about 9 lines of a 12-operation chain (44-50 tokens of the 60
  its solution needs), so every arm scored 0-0.7% on the held-out split: it measured a length the
  policy had unlearned, not whether what RL fixed on 8-operation chains carries over. The eval
  split, G1 and the arms keep task.max_ops = 8.
"""

from configs.lab import budget


def get_config():
  c = budget.common()
  c.method = "rloo"  # unused by SFT; kept valid so the shared validation passes
  c.init_from = "runs/lab/capacity_sft/final_hf"
  c.sft.steps = 800
  c.sft.lr = 1e-3
  c.sft.warmup_steps = 20
  c.sft.max_ops = 12
  c.task.max_prompt_len = 36  # a 12-operation prompt is 33 characters
  c.rollout.max_new_tokens = 64  # 12 lines of 4 characters, newlines and EOS: 60
  return c
