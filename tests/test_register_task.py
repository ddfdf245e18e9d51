"""The register-chain task: generator, checkers and buggy demonstrator against independent
references (a digit-by-digit re-implementation written from the task's definition) and against
responses corrupted at known lines."""

import collections
import random

import numpy as np
import pytest

from prl_jax.data import register

BUGS = register.bug_types(0)


def _reference_values(question):
  """v_i = (v_{i-1} +/- d_i) mod 10, read character by character."""
  start, body = question.split(":")
  v, out = int(start), []
  for sign, digit in zip(body[0::2], body[1::2]):
    v = (v + int(digit)) % 10 if sign == "+" else (v - int(digit)) % 10
    out.append(v)
  return out


def _reference_labels(response, question):
  """Line i is right iff it reads '<sign><digit>=<v>' with the question's i-th operation and
  v = that operation applied to the value on line i-1 (the start value for line 0)."""
  start, body = question.split(":")
  ops = [body[i:i + 2] for i in range(0, len(body), 2)]
  labels, prev = [], int(start)
  for i, line in enumerate(response.strip().splitlines()):
    line = line.strip()
    ok_shape = (len(line) == 4 and line[0] in "+-" and line[1].isdigit() and line[2] == "="
                and line[3].isdigit())
    if not ok_shape or i >= len(ops) or prev is None:
      labels.append(False)
      prev = None
      continue
    d, v = int(line[1]), int(line[3])
    want = (prev + d) % 10 if line[0] == "+" else (prev - d) % 10
    labels.append(line[:2] == ops[i] and v == want)
    prev = v
  return labels


def test_generator_is_deterministic_mixes_bug_operations_and_solves_right():
  a = register.generate(300, seed=3)
  assert a == register.generate(300, seed=3)
  assert a != register.generate(300, seed=4)
  for ex in a:
    start, ops = register.parse_question(ex["question"])
    assert len(ops) == 8 and 0 <= start <= 9
    assert ex["bug_ops"] == sum(op in BUGS for op in ops)
    assert 1 <= ex["bug_ops"] <= 4
    assert [int(l[-1]) for l in ex["solution"].splitlines()] == _reference_values(ex["question"])
    assert register.check(ex["solution"], ex) == 1.0
    assert register.first_error(ex["solution"], ex) is None
  assert set(collections.Counter(ex["bug_ops"] for ex in a)) == {1, 2, 3, 4}
  held = register.generate_heldout(50, seed=3)
  assert {ex["difficulty"] for ex in held} == {12}
  evals = register.generate(50, seed=3, split="eval", exclude={ex["question"] for ex in a})
  assert not {ex["question"] for ex in evals} & {ex["question"] for ex in a}


def test_bug_types_are_fixed_by_seed_and_never_right():
  assert register.bug_types(0) == BUGS and len(BUGS) == 5
  assert register.bug_types(1) != BUGS
  assert all(1 <= s <= register.MAX_SHIFT for s in BUGS.values())
  with pytest.raises(ValueError, match="num_bugs"):
    register.bug_types(0, 0)


def _corrupt(solution, line, new_value):
  lines = solution.splitlines()
  lines[line] = lines[line][:3] + str(new_value)
  return "\n".join(lines)


def test_step_checker_and_first_error_on_responses_corrupted_at_known_lines():
  rng = random.Random(0)
  for ex in register.generate(200, seed=5):
    q = ex["question"]
    k = ex["difficulty"]
    line = rng.randrange(k)
    wrong = (int(ex["solution"].splitlines()[line][-1]) + rng.randint(1, 9)) % 10
    response = _corrupt(ex["solution"], line, wrong)
    labels = register.step_labels(response, ex)
    assert labels == _reference_labels(response, q)
    assert register.first_error(response, ex) == line
    # Later lines recomputed from the wrong value are locally right (checkable from the line
    # before); the outcome is then wrong unless the error is on no line at all.
    start, ops = register.parse_question(q)
    written, v = [], start
    for i, op in enumerate(ops):
      v = wrong if i == line else register.apply(v, op)
      written.append(v)
    propagated = register.format_lines(ops, written)
    assert register.step_labels(propagated, ex) == [i != line for i in range(k)]
    assert register.check(propagated, ex) == 0.0  # additions: the shift reaches the end
    assert register.first_error(propagated, ex) == line
  ex = register.generate(1, seed=5)[0]
  lines = ex["solution"].splitlines()
  assert register.first_error("\n".join(lines[:5]), ex) == 5  # stopped early
  assert register.check("\n".join(lines[:5]), ex) == 0.0
  assert register.check("\n".join(lines + [lines[-1]]), ex) == 0.0  # a line too many
  assert register.check(ex["solution"].replace("=", " = "), ex) == 0.0  # not the line format
  assert register.step_labels("garbage\n" + ex["solution"], ex)[:2] == [False, False]


def test_buggy_demonstrator_error_rates_and_success():
  """Measured per-step rates match bug_rate on bug types and slip_rate elsewhere (binomial 5
  sigma), demonstrations carry on from the value they wrote, success is 5-15% and the most
  common final line of 8 demonstrations is usually wrong."""
  rng = random.Random(1)
  examples = register.generate(600, seed=7)
  bug_steps = bug_wrong = other_steps = other_wrong = 0
  success, majority_wrong = [], 0
  for ex in examples:
    start, ops = register.parse_question(ex["question"])
    demos = [register.demonstrate(ex["question"], rng, BUGS) for _ in range(8)]
    for demo in demos:
      written = [int(line[-1]) for line in demo.splitlines()]
      prev = start
      for op, v in zip(ops, written):
        right = register.apply(prev, op)
        if op in BUGS:
          bug_steps += 1
          bug_wrong += v != right
          assert v in (right, (right + BUGS[op]) % 10)  # the fixed rule, nothing else
        else:
          other_steps += 1
          other_wrong += v != right
        prev = v
      success.append(register.check(demo, ex))
    finals = collections.Counter(d.splitlines()[-1] for d in demos)
    majority_wrong += finals.most_common(1)[0][0] != ex["solution"].splitlines()[-1]
  for wrong, steps, rate in ((bug_wrong, bug_steps, 0.7), (other_wrong, other_steps, 0.02)):
    assert abs(wrong / steps - rate) < 5 * np.sqrt(rate * (1 - rate) / steps)
  assert 0.05 <= np.mean(success) <= 0.15
  assert majority_wrong / len(examples) > 0.8


def test_coincidental_success_is_rare():
  rng = random.Random(2)
  examples = register.generate(400, seed=9)
  demos = [register.demonstrate(ex["question"], rng, BUGS) for ex in examples for _ in range(4)]
  rate = register.coincidence_rate([ex for ex in examples for _ in range(4)], demos)
  assert rate < 0.01
