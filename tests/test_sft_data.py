"""What the SFT demonstrates: the training split, or with sft.max_ops the same task's problems
up to longer chains than RL trains on (the lab's held-out split is 12 operations long)."""

import os
import types

import pytest

from prl_jax.config import ConfigError, load_config_file
from prl_jax.data import register
from prl_jax.run import context
from prl_jax.run.config_checks import check_config
from prl_jax.train.sft import demonstration_problems

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "lab")


def _config(**sft):
  config = load_config_file(os.path.join(CONFIGS, "budget.py"))
  config.task.num_train = 400
  config.task.num_eval = 8
  config.task.max_prompt_len = 36
  config.sft.update(sft)
  return config


def _ctx(config):
  tokenizer = context._tokenizer(config)
  train, _, _ = context.split_examples(config, tokenizer)
  return types.SimpleNamespace(tokenizer=tokenizer, train_examples=train)


def _lengths(examples):
  return {len(register.parse_question(ex["question"])[1]) for ex in examples}


def test_sft_max_ops_reaches_longer_chains_than_the_training_split():
  plain = _config()
  ctx = _ctx(plain)
  assert demonstration_problems(plain, ctx) is ctx.train_examples
  assert _lengths(ctx.train_examples) == {8}
  longer = _config(max_ops=12)
  problems = demonstration_problems(longer, ctx)
  assert _lengths(problems) == set(range(8, 13)) and len(problems) == 400
  # Every one a problem of the task, prompt rendered, its solution right.
  assert all(ex["prompt"] and register.check(ex["solution"], ex) == 1.0 for ex in problems)
  assert longer.task.max_ops == 8  # the run's own split is left as it was


def test_sft_max_ops_below_the_split_or_on_a_data_file_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="sft.max_ops=6 < task.max_ops=8"):
    check_config(_config(max_ops=6))
  config = _config(max_ops=12)
  config.task.train_file = str(tmp_path / "train.jsonl")
  with pytest.raises(ConfigError, match="sft.max_ops=12 lengthens a synthetic task"):
    demonstration_problems(config, types.SimpleNamespace(train_examples=[]))
