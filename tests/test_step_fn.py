"""algo.steps.score_fn: a step scorer from a file feeds the oracle's step rewards and ER-PRM's
solution scores in place of the task's checker and a trained PRM."""

import os
import types

import numpy as np
import pytest

from prl_jax.config import ConfigError
from prl_jax.data import arithmetic, register
from prl_jax.prm import step_fn
from prl_jax.prm.frozen import frozen_scorer
from prl_jax.rewards.plugins import RewardFnError
from prl_jax.train.step_checker import checker_step_rewards
from tests.test_oracle import _rows

SCORER = os.path.join(os.path.dirname(__file__), "fixtures", "step_scorer.py")


def _steps_options(name, delimiter="\n"):
  return types.SimpleNamespace(score_fn=f"{SCORER}:{name}", delimiter=delimiter,
                               get=lambda key: f"{SCORER}:{name}" if key == "score_fn" else None)


def test_rule_based_scores_sit_on_each_steps_last_token():
  ex = arithmetic.generate(1, (3, 3), seed=5)[0]
  lines = ex["solution"].split("\n")  # equations, then "The answer is N"
  first, rest = lines[0].split("=")
  wrong = "\n".join([f"{first}={int(rest) + 1}"] + lines[1:])
  texts = [ex["solution"], wrong]
  _, mask, ends = _rows(texts, width=64)
  rewards = checker_step_rewards(texts, [ex, ex], ends, _steps_options("equation_steps"))
  for b, text in enumerate(texts):
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    positions = newlines + [len(text)]  # each line's newline; the last line's score on the EOS
    want = np.zeros(mask.shape[1], np.float32)
    # Later equations are true in both (they continue from the value written).
    want[positions] = [1.0 if b == 0 else 0.0] + [1.0] * (len(lines) - 2) + [0.5]
    np.testing.assert_array_equal(rewards[b], want)


def test_a_scorer_that_is_the_checker_gives_the_checkers_rewards(tmp_path):
  path = tmp_path / "checker.py"
  path.write_text("from prl_jax.data import register\n"
                  "def score(response, example, steps):\n"
                  "  return [float(x) for x in register.step_labels(response, example)]\n")
  ex = register.generate(1, seed=2)[0]
  lines = ex["solution"].splitlines()
  broken = "\n".join(lines[:3] + [lines[3][:3] + str((int(lines[3][-1]) + 3) % 10)] + lines[4:])
  _, _, ends = _rows([ex["solution"], broken])
  options = types.SimpleNamespace(score_fn=f"{path}:score", delimiter="\n",
                                  get=lambda key: f"{path}:score")
  np.testing.assert_array_equal(
      checker_step_rewards([ex["solution"], broken], [ex, ex], ends, options),
      checker_step_rewards([ex["solution"], broken], [ex, ex], ends))


def test_a_scorer_must_score_every_step():
  with pytest.raises(RewardFnError, match=r"algo.steps.score_fn: returned 1 scores for the 2 steps"):
    step_fn.step_score_lists(step_fn.load_step_fn(f"{SCORER}:one_too_few"), ["1+1=2\n2+1=3"],
                             [{}], "\n")


def test_erprm_solution_scores_aggregate_the_step_scores():
  config = types.SimpleNamespace(algo=types.SimpleNamespace(
      steps=types.SimpleNamespace(score_fn=f"{SCORER}:equation_steps", delimiter="\n"),
      erprm=types.SimpleNamespace(agg="min")))
  score = frozen_scorer(types.SimpleNamespace(config=config))
  rollouts = types.SimpleNamespace(texts=["1+2=3\n3+4=7", "1+2=3\nThe answer is 3",
                                          "1+2=4\n4+4=8"], examples=[{}] * 3)
  scored = score(rollouts)
  np.testing.assert_allclose(scored.solution, [1.0, 0.5, 0.0])
  assert scored.steps == [[1.0, 1.0], [1.0, 0.5], [0.0, 1.0]]  # for the step diagnostics
  config.algo.erprm.agg = "mean"
  np.testing.assert_allclose(frozen_scorer(types.SimpleNamespace(config=config))(rollouts).solution,
                             [1.0, 0.75, 0.5])


def test_frozen_step_scores_reach_the_step_diagnostics_line_by_line():
  """The loop places a frozen scorer's step scores on the step ends; the step diagnostics read
  them back line by line, and ER-PRM's recipe hands them over as its process reward."""
  import jax.numpy as jnp
  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.models.tokenizer import CharTokenizer
  from prl_jax.train.step_diagnostics import line_scores, step_auroc
  from tests.test_recipes import _inputs, _options

  ex = register.generate(1, seed=6)[0]
  lines = ex["solution"].splitlines()
  v = (int(lines[3][-1]) + 1) % 10
  texts = [ex["solution"], "\n".join(lines[:3] + [lines[3][:3] + str(v)] + lines[4:])]
  tokens, mask, ends = _rows(texts)
  scores = [[0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.4, 0.7], [0.6, 0.2, 0.0, 0.35, 9, 9, 9, 9]]
  placed = step_fn.place_on_step_ends(scores, ends)
  newline = CharTokenizer().encode("\n")
  np.testing.assert_allclose(line_scores(placed, tokens, mask, newline), scores)
  # Right lines (8 in row 0, 3 in row 1) above the first error's 0.35: 6 of 11.
  assert step_auroc(placed, tokens, mask, newline, texts, [ex, ex]) == pytest.approx(6 / 11)
  x = _inputs([1.0, 0.0], [0.9, 0.1], 2, length=placed.shape[1])
  out = get_recipe("erprm").advantages(_options(1), x.replace(prm_steps=jnp.asarray(placed)))
  np.testing.assert_array_equal(out.process_reward, placed)
  assert get_recipe("erprm").advantages(_options(1), x).process_reward is None


def test_erprm_trains_on_a_step_scorer_without_a_prm_dir(tmp_path):
  from prl_jax.run.metrics_file import read_metrics
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  config = tiny_config("erprm", **{"train.steps": 1,
                                   "algo.steps.score_fn": f"{SCORER}:constant_quarter"})
  train(config, str(tmp_path / "run"))
  (row,) = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  assert row["erprm/score_mean"] == pytest.approx(0.25)
  # 0.25 on every step end of a response: its process return is a positive multiple of 0.25.
  assert row["process/return_mean"] > 0
  config = tiny_config("erprm", **{"algo.steps.score_fn": f"{SCORER}:missing"})
  with pytest.raises(ConfigError, match="algo.steps.score_fn=.*has no function 'missing'"):
    train(config, str(tmp_path / "run2"))
