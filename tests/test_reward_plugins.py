"""task.reward_fn: verl compute_score and TRL batch functions from files, weighted, logged."""

import os

import numpy as np
import pytest

from prl_jax.data import math_files
from prl_jax.rewards import plugins
from prl_jax.rewards.verify import Verifier

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VERL_FN = os.path.join(FIXTURES, "reward_verl.py")
TRL_FN = os.path.join(FIXTURES, "reward_trl.py")


def _set(spec, weights="", verifier=None):
  verifier = verifier or Verifier(workers=0)
  return plugins.RewardSet(plugins.load_rewards(spec, weights, verifier), verifier)


def test_verl_compute_score_gets_verls_arguments_and_dict_extras_are_logged():
  rows = math_files.load("verl", os.path.join(FIXTURES, "verl_rows.jsonl"))[:2]
  texts = ["She sold 24 in May.\n#### 72", "#### 13"]
  rewards, metrics = _set(f"{VERL_FN}:compute_score").score(texts, rows)
  # gsm8k row right (1.0); MATH row wrong, and the 0.1 format credit is GSM8K's only.
  assert rewards == [1.0, 0.0]
  assert metrics["reward/compute_score"] == pytest.approx(0.5)
  assert metrics["reward/compute_score/chars"] == pytest.approx((len(texts[0]) + len(texts[1])) / 2)
  assert metrics["reward/compute_score/split_is_train"] == pytest.approx(0.5)  # extra_info passed
  rewards, _ = _set(f"{VERL_FN}:compute_score").score(["#### 71"], rows[:1])
  assert rewards == [pytest.approx(0.1)]  # data_source picked the GSM8K branch


def test_trl_batch_functions_get_chat_completions_and_columns():
  rows = math_files.load("trl", os.path.join(FIXTURES, "trl_prompts.jsonl"))
  texts = ["so 15% is \\boxed{12}", "it has 6 divisors"]
  rewards, metrics = _set(f"{TRL_FN}:format_reward").score(texts, rows)
  assert rewards == [1.0, 0.0]  # the chat row's completion arrived as messages and was read
  solution = rows[0]["columns"]["solution"]
  expected = len(set(solution.split()) & set(texts[0].split())) / len(set(solution.split()))
  rewards, _ = _set(f"{TRL_FN}:solution_overlap").score(texts, rows)
  assert rewards == [pytest.approx(expected), 0.0]  # None (no solution column) counts 0


def test_weighted_sum_with_the_builtin_verifier_each_logged():
  rows = math_files.load("trl", os.path.join(FIXTURES, "trl_prompts.jsonl"))
  texts = ["so 15% is \\boxed{12}", "\\boxed{5}"]
  reward = _set(f"verify,{TRL_FN}:format_reward,{VERL_FN}:plain_score", "1.0,0.5,0.25")
  rewards, metrics = reward.score(texts, rows)
  # verify: [1, 0]; format: [1, 1]; plain_score (answer "12"/"6" in the text): [2, 0]
  assert rewards == [pytest.approx(1 + 0.5 + 0.5), pytest.approx(0.5)]
  assert metrics == {"reward/verify": 0.5, "reward/format_reward": 1.0, "reward/plain_score": 1.0}
  assert reward(texts, rows) == rewards  # callable like a verifier (eval, labels)


def test_unit_outcome_check_names_the_method_and_the_fix():
  plugins.check_unit_outcome(np.array([0.0, 0.5, 1.0]), "prime")
  with pytest.raises(plugins.RewardFnError, match=r"method=prime .* \[0, 1\].*response 1 scored 2"):
    plugins.check_unit_outcome(np.array([0.0, 2.0, -1.0]), "prime")
  with pytest.raises(plugins.RewardFnError, match="nan"):
    plugins.check_unit_outcome(np.array([np.nan]), "erprm")


@pytest.mark.parametrize("spec, weights, message", [
    ("rewards.py", "", "expected FILE.py:FUNCTION"),
    ("no_such_module_xyz:f", "", "importing no_such_module_xyz failed"),
    ("missing.py:f", "", "no such file 'missing.py'"),
    (f"{TRL_FN}:nope", "", "has no function 'nope'"),
    (f"{TRL_FN}:not_a_reward", "", "neither verl's compute_score"),
    (f"{TRL_FN}:format_reward", "1,2", "2 weights for 1"),
    (f"{TRL_FN}:format_reward", "one", "comma-separated numbers"),
])
def test_bad_reward_configs_name_the_key(spec, weights, message):
  with pytest.raises(plugins.RewardFnError, match=message):
    plugins.load_rewards(spec, weights, Verifier(workers=0))


def test_an_installed_module_names_a_function_too():
  # A module path (as for verl's reward_score package, whose files import each other).
  (reward,) = plugins.load_rewards("tests.fixtures.reward_trl:format_reward", "", None)
  assert reward.kind == "trl" and reward.fn(["\\boxed{1}", "1"]) == [1.0, 0.0]


def test_verl_dict_without_score_is_an_error(tmp_path):
  path = tmp_path / "r.py"
  path.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info):\n"
                  "  return {'acc': 1.0}\n")
  with pytest.raises(plugins.RewardFnError, match="without 'score'"):
    _set(f"{path}:compute_score").score(["x"], [{"answer": "1", "task": "math"}])


def _constant(tmp_path, value):
  path = tmp_path / "const.py"
  path.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info):\n"
                  f"  return {{'score': {value}, 'seen_task': float(data_source == 'arithmetic')}}\n")
  return f"{path}:compute_score"


@pytest.mark.slow  # an RL run (~20 s); the summing and the logged names are tested above
def test_training_logs_each_reward_and_sums_them(tmp_path):
  from prl_jax.run.metrics_file import read_metrics
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  spec = _constant(tmp_path, 0.25)
  config = tiny_config("rloo", **{"train.steps": 1, "task.reward_fn": f"verify,{spec}",
                                  "task.reward_weights": "1.0,2.0"})
  train(config, str(tmp_path / "run"))
  (row,) = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  assert row["reward/compute_score"] == 0.25 and row["reward/compute_score/seen_task"] == 1.0
  assert row["train/reward"] == pytest.approx(row["reward/verify"] + 2 * 0.25)


def test_prime_refuses_an_outcome_outside_the_unit_interval(tmp_path):
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  config = tiny_config("prime", **{"train.steps": 1, "task.reward_fn": _constant(tmp_path, 1.5)})
  with pytest.raises(plugins.RewardFnError, match="method=prime reads the outcome reward as a "
                                                  "probability"):
    train(config, str(tmp_path / "run"))


def test_a_bad_reward_fn_is_a_config_error_before_training(tmp_path):
  from prl_jax.config import ConfigError
  from prl_jax.run.context import build_context
  from tests.test_train_loop import tiny_config

  config = tiny_config("rloo", **{"task.reward_fn": f"{TRL_FN}:missing_fn"})
  with pytest.raises(ConfigError, match="task.reward_fn=.*has no function 'missing_fn'"):
    build_context(config, str(tmp_path / "run"))
