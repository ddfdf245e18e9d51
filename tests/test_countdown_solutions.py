"""Countdown's solution enumeration, the uniform demonstrator and distinct-solution counts
(prl_jax.data.countdown, prl_jax.data.countdown_solutions, prl_jax.eval.exploration)."""

import itertools
import random

import ml_collections
import numpy as np
import pytest
from scipy import stats

from prl_jax.config import ConfigError
from prl_jax.data import countdown
from prl_jax.data import countdown_solutions as cs
from prl_jax.data.demonstrations import demonstrator
from prl_jax.eval.exploration import exploration_summary


def _reference(numbers, target):
  """Every solution by brute force over expression trees: for every subset of the numbers'
  positions and every split of it into two non-empty parts, every tree of each part combined by
  every operator in both operand orders; a solution's identity is the sorted tuple of its lines,
  + and * written larger operand first."""
  def trees(positions):
    if len(positions) == 1:
      return [(numbers[positions[0]], ())]
    out = []
    for r in range(1, len(positions)):
      for left in itertools.combinations(positions, r):
        right = tuple(p for p in positions if p not in left)
        for (a, la), (b, lb) in itertools.product(trees(left), trees(right)):
          for op in "+-*/":
            if op == "+":
              c = a + b
            elif op == "-":
              c = a - b
            elif op == "*":
              c = a * b
            else:
              c = a // b if a % b == 0 else 0
            if c <= 0:
              continue
            line = (max(a, b), op, min(a, b), c) if op in "+*" else (a, op, b, c)
            out.append((c, la + lb + (line,)))
    return out

  found = set()
  for size in range(2, len(numbers) + 1):
    for positions in itertools.combinations(range(len(numbers)), size):
      for value, lines in trees(positions):
        if value == target:
          found.add(tuple(sorted(lines)))
  return found


def test_solutions_match_the_brute_force_reference():
  assert len(countdown.solutions([3, 4, 1], 12)) == 7  # 4*3, then *1, /1 on 12, 3, or 4
  rng = random.Random(0)
  for _ in range(40):
    numbers = [rng.randint(1, 9) for _ in range(rng.choice((3, 4)))]
    target = rng.randint(1, 40)
    assert set(countdown.solutions(numbers, target)) == _reference(numbers, target), (numbers,
                                                                                      target)
  examples = countdown.generate(20, (3, 4), seed=3)
  for ex in examples:
    numbers, target = countdown.parse_question(ex["question"])
    assert set(countdown.solutions(numbers, target)) == _reference(numbers, target)


def test_every_written_solution_passes_the_checker_and_keeps_its_key():
  for ex in countdown.generate(30, (3, 4), seed=5):
    numbers, target = countdown.parse_question(ex["question"])
    for key, (lines, expression) in countdown.solutions(numbers, target).items():
      text = cs.format_solution(lines, expression)
      assert countdown.check(text, ex) == 1.0, text
      assert cs.response_key(text, ex) == key


def test_count_solutions_and_the_generator_filter():
  assert countdown.count_solutions("make 12 from 3 4 1") == 7
  assert countdown.count_solutions("make 12 from 3 4 1", at_most=3) == 3
  examples = countdown.generate(40, (3, 4), seed=1, min_solutions=6)
  assert all(countdown.count_solutions(ex["question"]) >= 6 for ex in examples)
  # The filter only skips problems: without it the stream is the generator's as before.
  assert countdown.generate(5, (3, 4), seed=1) == countdown.generate(5, (3, 4), seed=1,
                                                                     min_solutions=0)


def test_the_uniform_demonstrator_is_uniform_valid_and_deterministic():
  question = "make 24 from 3 4 6 1"
  keys = sorted(countdown.solutions([3, 4, 6, 1], 24))
  rng = random.Random(0)
  draws = [cs.response_key(cs.uniform_demonstration(question, rng), question)
           for _ in range(4000)]
  counts = np.array([draws.count(k) for k in keys])
  assert counts.sum() == 4000  # every draw is a correct solution of the problem
  assert stats.chisquare(counts).pvalue > 1e-3, counts
  task = ml_collections.ConfigDict({"name": "countdown", "demonstrator": "uniform"})
  demo = demonstrator(task)
  examples = countdown.generate(20, (3, 4), seed=2)
  first = [demo(ex, np.random.default_rng(7))["solution"] for ex in examples]
  again = [demo(ex, np.random.default_rng(7))["solution"] for ex in examples]
  assert first == again
  rng = np.random.default_rng(1)
  for ex in examples:
    assert countdown.check(demo(ex, rng)["solution"], ex) == 1.0
  with pytest.raises(ConfigError, match="countdown"):
    demonstrator(ml_collections.ConfigDict({"name": "register", "demonstrator": "uniform"}))


def test_distinct_correct_counts_solutions_not_orderings():
  ex = "make 24 from 3 4 6 1"
  same = ["3+1=4\n4*6=24\nThe answer is (3+1)*6", "1+3=4\n6*4=24\nThe answer is 6*(1+3)"]
  other = "6-4=2\n3+1=4\n2*4=8\nThe answer is 8"  # wrong: not counted
  second = "4*6=24\n24*1=24\nThe answer is 4*6*1"
  assert cs.distinct_correct(same, ex) == 1
  assert cs.distinct_correct(same + [other, other], ex) == 1
  assert cs.distinct_correct(same + [second], ex) == 2
  assert cs.distinct_correct([], ex) == 0
  # A dead-end line (its result never used) does not make another solution.
  dead_end = "3-1=2\n4*6=24\nThe answer is 4*6"
  assert countdown.check(dead_end, ex) == 1.0
  assert cs.response_key(dead_end, ex) == cs.response_key("4*6=24\nThe answer is 4*6", ex)
  assert cs.distinct_correct(same + [dead_end, "6*4=24\nThe answer is 6*4"], ex) == 2


def test_needed_lines_follow_results_back_from_the_last_line():
  lines = [(3, "-", 1, 2), (6, "+", 1, 7), (2, "*", 6, 12), (12, "*", 2, 24)]
  # 6+1 is a dead end; the last line's 2 is a given number once 3-1's result was used by 2*6.
  assert cs.needed_lines(lines) == [(3, "-", 1, 2), (2, "*", 6, 12), (12, "*", 2, 24)]
  assert cs.needed_lines([]) == []
  # Every enumerated solution keeps all its lines (no solution has a dead end).
  for key, (sol_lines, _) in countdown.solutions([3, 4, 6, 1], 24).items():
    assert countdown.solution_key(cs.needed_lines(list(sol_lines))) == key


def test_exploration_summary():
  out = exploration_summary([0, 4, 8], [0, 2, 1], [3, 4, 2], n=8)
  assert out["pass@1"] == pytest.approx(np.mean([0, 0.5, 1.0]))
  assert out["pass@8"] == pytest.approx(2 / 3)
  assert len(out["pass_at_k"]) == 8 and "pass@64" not in out
  assert out["distinct_mean"] == pytest.approx(1.0)
  assert out["distinct_share"] == pytest.approx(np.mean([0, 0.5, 0.5]))
  assert out["distinct_per_correct"] == pytest.approx(3 / 12)
  assert out["solved"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError):
    exploration_summary([1], [2], [3], n=8)
  # More distinct solutions than enumerated (an enumeration limit): the share is capped, no error.
  assert exploration_summary([5], [4], [3], n=8)["distinct_share"] == 1.0
