"""The training loop end to end on a tiny model: exact resume, and config errors up front."""

import os

import jax
import numpy as np
import pytest

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.train.checkpoint import Checkpointer
from prl_jax.train.loop import init_state, train
from prl_jax.train.metrics import read_metrics
from prl_jax.train.setup import build_context, validate
from prl_jax.algorithms.recipes import get_recipe

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def tiny_config(method, **overrides):
  config = load_config_file(os.path.join(CONFIGS, f"{method}.py"))
  config.rollout.prompts_per_step = 4
  config.rollout.n = 4
  config.rollout.max_new_tokens = 12
  config.train.mini_batch_size = 8  # two mini-batches x two epochs: the multi-step update path
  config.task.num_train = 32
  config.task.num_eval = 4
  config.train.steps = 4
  config.checkpoint.every = 2
  config.log.progress = False
  config.log.tensorboard = False
  config.mesh.num_devices = 1
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


def _restore_final(config, workdir):
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return ckpt.restore(target)[0]


def _without_timing(rows):
  return [{k: v for k, v in row.items() if not k.startswith(("time/", "rollout/tokens"))}
          for row in rows]


@pytest.mark.parametrize("method", ["prime", "prl"])
def test_resume_is_bit_exact(method, tmp_path):
  """"4 steps" equals "2 steps, stop, restore, 2 steps": params, PRM, optimizer, metrics."""
  config = tiny_config(method)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train(config, straight)
  train(config, resumed, max_steps=2)
  assert [r["step"] for r in read_metrics(os.path.join(resumed, "metrics.jsonl"))] == [1, 2]
  train(config, resumed)

  a, b = _restore_final(config, straight), _restore_final(config, resumed)
  assert int(a.step) == int(b.step) == 4
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _without_timing(read_metrics(os.path.join(straight, "metrics.jsonl"))) == \
      _without_timing(read_metrics(os.path.join(resumed, "metrics.jsonl")))


def test_unknown_key_is_named_with_suggestion():
  config = tiny_config("prime")
  with pytest.raises(ConfigError, match="Did you mean rollout.n"):
    apply_overrides(config, ["rollout.nn=3"])


def test_group_size_one_is_refused_for_leave_one_out_methods():
  with pytest.raises(ConfigError, match="rollout.n >= 2"):
    validate(tiny_config("rloo", **{"rollout.n": 1}))


def test_missing_data_file_fails_before_compiling(tmp_path):
  config = tiny_config("prime", **{"task.train_file": str(tmp_path / "absent.jsonl")})
  with pytest.raises(ConfigError, match="task.train_file"):
    validate(config)


def test_batch_not_divisible_by_mesh():
  config = tiny_config("prime", **{"mesh.data": 8, "rollout.prompts_per_step": 3,
                                "train.mini_batch_size": 0})
  with pytest.raises(ConfigError, match="mesh"):
    validate(config)


def test_periodic_eval_is_logged_and_reproducible(tmp_path):
  """eval.every=2 adds eval/* metrics at steps 2 and 4; the same run gives the same numbers."""
  config = tiny_config("rloo", **{"eval.every": 2, "eval.n": 2, "eval.num_problems": 4})
  first, second = str(tmp_path / "a"), str(tmp_path / "b")
  train(config, first)
  train(config, second, max_steps=2)
  train(config, second)
  rows = read_metrics(os.path.join(first, "metrics.jsonl"))
  evals = [{k: v for k, v in r.items() if k.startswith("eval/")} for r in rows]
  assert [sorted(e) for e in evals] == [[], sorted(["eval/mean_at_n", "eval/pass_at_n",
                                                   "eval/greedy"])] * 2
  for e in evals[1::2]:
    assert 0.0 <= e["eval/mean_at_n"] <= e["eval/pass_at_n"] <= 1.0
  resumed = read_metrics(os.path.join(second, "metrics.jsonl"))
  assert [{k: v for k, v in r.items() if k.startswith("eval/")} for r in resumed] == evals
