"""RLOO from the policy SFT'd further on the solver's clean demonstrations
(configs/lab/sft_demos.py): "SFT on the same demonstrations + RLOO", the control beside rePIRL
(configs/lab/repirl.py), which gets the same demonstrations as IRL experts instead.

Identical to configs/lab/rloo.py (RLOO as PRIME's paper ran its baseline: accuracy filter
[0.2, 0.8], whitened; docs/algorithms.md, RLOO) but for the starting policy, init_from =
"runs/lab/sft_demos/final_hf". If it matches rePIRL, the demonstrations, not the IRL reward,
carry the gain.
"""

from configs.lab import rloo


def get_config():
  c = rloo.get_config()
  c.init_from = "runs/lab/sft_demos/final_hf"
  return c
