"""The budget every configs/mini method shares, so methods compare on equal terms.

Same policy (the "tiny" preset SFT'd by configs/mini/sft.py), same prompts per step, responses
per prompt, optimizer, learning rate and update schedule. Differences from the papers' settings,
all forced by the scale (a ~100k-parameter policy, responses of ~25 characters):
- lr 1e-4 instead of 5e-7..1e-6: a tiny model needs larger steps; 3e-4 and above destabilised
  RLOO in our sweep (docs/results.md).
- two PPO epochs over four mini-batches per rollout batch instead of one update: eight small
  steps learn faster than one larger one at this batch size.
- 32 prompts x 8 responses per step instead of 256 x 4 (PRIME) or 128 x 5 (PRL).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.rollout.prompts_per_step = 32
  c.rollout.n = 8
  c.rollout.max_new_tokens = 32
  c.optim.lr = 1e-4
  c.optim.prm_lr = 2e-4  # PRIME: the PRM learns at twice the policy's rate (1e-6 vs 5e-7)
  c.optim.value_lr = 1e-4
  c.train.ppo_epochs = 2
  c.train.mini_batch_size = 64
  return c
