"""The non-finite guard: a NaN loss or gradient norm stops RL and SFT before the bad state is
saved, or (train.skip_nonfinite) skips the update, keeps the state and counts it.

The NaNs are real: RL gets NaN advantages at one step (so the update writes NaN parameters),
SFT a learning rate of 1e30 (parameters of ~1e30 after the first Adam step overflow the next
forward pass).
"""

import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.models import hf
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.train import loop
from prl_jax.run.metrics_file import read_metrics
from prl_jax.run.nonfinite import NonFiniteError, nonfinite
from prl_jax.run.context import build_context
from prl_jax.run.state import init_state
from prl_jax.train.sft import sft

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")
STOP = r"step (\d+): \w+/(loss|grad_norm) is (nan|inf)"


def _tiny(name, **overrides):
  config = load_config_file(os.path.join(CONFIGS, f"{name}.py"))
  config.rollout.prompts_per_step = 4
  config.rollout.n = 4
  config.rollout.max_new_tokens = 32 if name == "sft" else 12
  config.train.mini_batch_size = 0
  config.train.ppo_epochs = 1
  config.train.steps = 4
  config.sft.steps = 4
  config.sft.batch_size = 8
  config.sft.warmup_steps = 0
  config.task.num_train = 32
  config.task.num_eval = 4
  config.checkpoint.every = 1
  config.checkpoint.keep = 10
  config.log.progress = False
  config.log.tensorboard = False
  config.mesh.num_devices = 1
  config.filter.enable = False  # one round of prompts per step: data positions 4, 8, 12, 16
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


def _checkpoints(config, workdir):
  """{step: (policy params, meta)} of every checkpoint of an RL run."""
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    return {s: (lambda r: (r[0].policy.params, r[1]))(ckpt.restore(target, s))
            for s in ckpt.all_steps()}


def _finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(tree))


def test_only_losses_and_gradient_norms_are_guarded():
  metrics = {"policy/loss": math.nan, "policy/grad_norm": math.inf, "prm/loss": 1.0,
             "adv/mean": math.nan, "sft/grad_norm": 2.0}
  assert list(nonfinite(metrics)) == ["policy/loss", "policy/grad_norm"]


def _poison_step(monkeypatch, bad_step):
  """Advantages of 1 on every token (so each update moves the policy; an untrained policy
  earns no reward, hence no RLOO gradient), times NaN at RL step `bad_step`."""
  build = loop.build_functions

  def poisoned_build(ctx, recipe):
    fns = build(ctx, recipe)
    advantages, calls = fns.advantages, itertools.count(1)

    def poisoned(inputs):
      out = advantages(inputs)
      adv = jnp.ones_like(out.token) * inputs.mask
      return out.replace(token=adv * jnp.nan if next(calls) == bad_step else adv)

    fns.advantages = poisoned
    return fns

  monkeypatch.setattr(loop, "build_functions", poisoned_build)


def test_nan_stops_rl_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _poison_step(monkeypatch, 3)
  config = _tiny("rloo")
  with pytest.raises(NonFiniteError, match=r"^step 3: policy/loss is nan, policy/grad_norm is "
                                           r"nan\. Stopped before saving"):
    loop.train(config, str(tmp_path))
  checkpoints = _checkpoints(config, str(tmp_path))
  assert sorted(checkpoints) == [1, 2]  # the NaN state of step 3 was never saved
  assert _finite(checkpoints[2][0])
  rows = read_metrics(os.path.join(str(tmp_path), "metrics.jsonl"))
  assert [(r["step"], bool(nonfinite(r))) for r in rows] == [(1, False), (2, False), (3, True)]


def test_skip_nonfinite_keeps_the_state_and_counts_skips(tmp_path, monkeypatch):
  _poison_step(monkeypatch, 3)
  config = _tiny("rloo", **{"train.skip_nonfinite": True})
  loop.train(config, str(tmp_path))
  rows = read_metrics(os.path.join(str(tmp_path), "metrics.jsonl"))
  assert [r["train/skipped_updates"] for r in rows] == [0, 0, 1, 1]
  checkpoints = _checkpoints(config, str(tmp_path))
  params = {step: jax.tree_util.tree_leaves(p) for step, (p, _) in checkpoints.items()}
  for x, y in zip(params[2], params[3]):  # step 3 skipped: the state of step 2 kept
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert any(not np.array_equal(x, y) for x, y in zip(params[3], params[4]))  # step 4 trains
  assert _finite(checkpoints[4][0])
  assert [checkpoints[s][1]["data_position"] for s in (1, 2, 3, 4)] == [4, 8, 12, 16]


def test_nan_stops_sft(tmp_path):
  config = _tiny("sft", **{"sft.lr": 1e30})
  with pytest.raises(NonFiniteError, match=STOP):
    sft(config, str(tmp_path))
  assert not os.path.exists(os.path.join(str(tmp_path), "final_hf"))


def test_skip_nonfinite_in_sft(tmp_path):
  config = _tiny("sft", **{"sft.lr": 1e30, "train.skip_nonfinite": True})
  sft(config, str(tmp_path))
  rows = read_metrics(os.path.join(str(tmp_path), "sft_metrics.jsonl"))
  assert [r["sft/skipped_updates"] for r in rows] == [0, 1, 2, 3]
  _, params = hf.load_hf(os.path.join(str(tmp_path), "final_hf"))
  assert _finite(params)  # the NaN gradients of steps 2-4 never reached the parameters


@pytest.mark.parametrize("error", ["nonfinite", "checkpoint"])
def test_cli_prints_a_run_failure_as_one_line(monkeypatch, capsys, error):
  """A run that stops on a NaN or an unwritable checkpoint ends with its message, not a traceback."""
  from prl_jax import cli
  from prl_jax.run.checkpoint import CheckpointError

  message = {"nonfinite": NonFiniteError("step 3: policy/loss is nan."),
             "checkpoint": CheckpointError("Cannot save step 4 in /x: OSError: disk full.")}[error]

  def fail(argv):
    raise message

  monkeypatch.setitem(cli.COMMANDS, "train", fail)
  assert cli.main(["train"]) == 1
  err = capsys.readouterr().err
  assert err == f"prl-jax train: error: {message}\n"
