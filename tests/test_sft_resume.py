"""SFT resumes like the RL loop: "4 steps" equals "3 steps, killed, resumed, 1 + 1 steps" bit for
bit (parameters and every metrics row), restoring the model state and the data position."""

import os

import jax
import numpy as np

from prl_jax.config import apply_overrides, load_config_file
from prl_jax.models import hf
from prl_jax.run.metrics_file import read_metrics
from prl_jax.train.sft import sft

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def tiny_sft_config(**overrides):
  config = load_config_file(os.path.join(CONFIGS, "sft.py"))
  config.sft.steps = 4
  config.sft.batch_size = 8
  config.sft.warmup_steps = 1
  config.task.num_train = 32
  config.task.num_eval = 4
  config.checkpoint.every = 2
  config.log.progress = False
  config.log.tensorboard = False
  config.mesh.num_devices = 1
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


def _rows(workdir):
  return read_metrics(os.path.join(workdir, "sft_metrics.jsonl"))


def test_sft_resume_is_bit_exact(tmp_path):
  config = tiny_sft_config()
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  sft(config, straight)
  sft(config, resumed, max_steps=3)  # killed after step 3: its last checkpoint is step 2
  assert [r["step"] for r in _rows(resumed)] == [1, 2, 3]
  assert not os.path.exists(os.path.join(resumed, "final_hf"))
  sft(config, resumed, max_steps=1)  # restores step 2 (not step 0), drops row 3, trains step 3
  assert [r["step"] for r in _rows(resumed)] == [1, 2, 3]
  sft(config, resumed)
  assert _rows(resumed) == _rows(straight)
  assert [r["step"] for r in _rows(straight)] == [1, 2, 3, 4]
  _, a = hf.load_hf(os.path.join(straight, "final_hf"))
  _, b = hf.load_hf(os.path.join(resumed, "final_hf"))
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
