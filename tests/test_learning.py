"""Every method raises the training reward of a tiny SFT policy on arithmetic chains.

One SFT policy (the "tiny" preset, ~100k parameters, trained on solver demonstrations of 1-2
operation chains) is shared by all methods; each then runs its configs/mini file unchanged apart
from the step count and the prompts, which are the one-operation chains (about 50% sampled
accuracy, 85% greedy: room to learn within a few dozen steps). The claim tested is the one a
researcher cares about: the mean reward of all sampled responses over the last steps exceeds
that over the first steps by a margin well outside the sampling noise (256 rollouts per step;
the standard error of a 15-step mean is about 0.012, of the difference about 0.017).

Every method is `slow` (make test-slow): 60 steps of 256 rollouts are 1.5 min per method on 2
cores. The default suite checks PRIME's pieces instead (its PRM update against a two-pass
reference, tests/test_prime_single_forward.py; a bit-exact resume, tests/test_train_loop.py).
"""

import os

import numpy as np
import pytest

from prl_jax.config import apply_overrides, load_config_file
from prl_jax.train.loop import train
from prl_jax.run.metrics_file import read_metrics
from prl_jax.train.sft import sft

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")
RL_STEPS = 60
WINDOW = 15
MARGIN = 0.04


def _config(name, **overrides):
  config = load_config_file(os.path.join(CONFIGS, f"{name}.py"))
  config.mesh.num_devices = 1
  config.log.progress = False
  config.log.tensorboard = False
  config.checkpoint.every = 10_000
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  sft(_config("sft"), workdir)
  return os.path.join(workdir, "final_hf")


def _rewards(method, sft_policy, workdir):
  """Mean outcome of all sampled responses per step (before any filter), in step order."""
  # One-operation chains are few (81 questions): all of them train, none is left for an eval
  # split (which never repeats a training question), and no eval runs here.
  config = _config(method, init_from=sft_policy, **{"train.steps": RL_STEPS, "task.max_ops": 1,
                                                    "task.num_eval": 0})
  train(config, workdir)
  return np.asarray([row["rollout/reward"] for row in
                     read_metrics(os.path.join(workdir, "metrics.jsonl"))])


def _assert_learns(rewards):
  first, last = rewards[:WINDOW].mean(), rewards[-WINDOW:].mean()
  assert len(rewards) == RL_STEPS
  assert last > first + MARGIN, f"reward {first:.3f} -> {last:.3f}: {np.round(rewards, 2)}"
  assert np.all(np.isfinite(rewards))


@pytest.mark.slow
def test_prime_learns(sft_policy, tmp_path):
  _assert_learns(_rewards("prime", sft_policy, str(tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prl", "rloo", "grpo", "reinforce", "ppo", "raft", "frpo",
                                    "repirl"])
def test_every_other_method_learns(method, sft_policy, tmp_path):
  _assert_learns(_rewards(method, sft_policy, str(tmp_path)))
