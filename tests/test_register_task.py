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
  assert register.step_accuracy([ex["solution"], "\n".join(lines[:6])], [ex, ex]) == \
      (1 + 6 / 8) / 2


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


def test_line_error_rates_recover_the_demonstrators_rates_and_count_exactly():
  """On the demonstrator's own chains line_error_rates gives bug_rate / slip_rate (binomial 5
  sigma), every bug-type error by the fixed rule; on hand-made lines the counts are exact."""
  rng = random.Random(3)
  examples = register.generate(400, seed=11)
  demos = [register.demonstrate(ex["question"], rng, BUGS) for ex in examples]
  rates = register.line_error_rates(demos, examples, BUGS)
  bug_lines = sum(op in BUGS for ex in examples
                  for op in register.parse_question(ex["question"])[1])
  plain_lines = 8 * len(examples) - bug_lines
  assert abs(rates["bug"] - 0.7) < 5 * np.sqrt(0.21 / bug_lines)
  assert abs(rates["plain"] - 0.02) < 5 * np.sqrt(0.0196 / plain_lines)
  assert rates["bug_rule"] == rates["bug"]
  # 2:+1-5 with the bug {(+, 1): shift 2}: "+1=5" is the bug's rule (2+1+2), "-5=0" is right
  # from the written 5; a wrong echo, a wrong value and a missing line are plain errors.
  ex = {"question": "2:+1-5"}
  bugs = {("+", 1): 2}
  assert register.line_error_rates(["+1=5\n-5=0"], [ex], bugs) == {
      "plain": 0.0, "bug": 1.0, "bug_rule": 1.0}
  assert register.line_error_rates(["+1=3\n-4=9", "+1=4\n-5=8", "+1=3"], [ex] * 3, bugs) == {
      "plain": 1.0, "bug": 1 / 3, "bug_rule": 0.0}


def test_state_keyed_bugs_fire_on_their_triples_only():
  """keys="state": the bugs are (value, operation, operand) triples spread over the ten values; the
  generator puts them, read along the true values by an independent walk, exactly where it says,
  and the demonstrator applies them at bug_rate judged on the value it holds."""
  bugs = register.bug_types(0, 30, keys="state")
  assert bugs == register.bug_types(0, 30, keys="state") != register.bug_types(1, 30, "state")
  assert collections.Counter(v for v, _, _ in bugs) == {v: 3 for v in range(10)}
  assert all(1 <= s <= register.MAX_SHIFT for s in bugs.values())
  assert len(register.bug_types(0, 25, keys="state")) == 25
  for bad in (9, 180):
    with pytest.raises(ValueError, match="state keys"):
      register.bug_types(0, bad, keys="state")
  with pytest.raises(ValueError, match="keys"):
    register.bug_types(0, 5, keys="value")
  wide = register.bug_types(0, 30, keys="state", max_shift=9)
  assert wide.keys() == bugs.keys() and len(set(wide.values())) > 2
  assert all(1 <= s <= 9 for s in wide.values())
  for bad in (-1, 10):
    with pytest.raises(ValueError, match="max_shift"):
      register.bug_types(0, 30, keys="state", max_shift=bad)
  examples = register.generate(300, seed=5, num_bugs=30, min_bugs=3, max_bugs=3,
                               bug_keys="state")
  assert examples == register.generate(300, seed=5, num_bugs=30, min_bugs=3, max_bugs=3,
                                       bug_keys="state")
  for ex in examples:
    start, body = ex["question"].split(":")
    previous = [int(start)] + _reference_values(ex["question"])[:-1]
    triples = [(v, body[i], int(body[i + 1])) for v, i in zip(previous, range(0, len(body), 2))]
    assert ex["bug_ops"] == 3 == sum(t in bugs for t in triples)
  # On the demonstrator's chains the rates are bug_rate and slip_rate (binomial, 5 sigma).
  rng = random.Random(4)
  demos = [register.demonstrate(ex["question"], rng, bugs, bug_rate=0.55) for ex in examples]
  rates = register.line_error_rates(demos, examples, bugs)
  assert abs(rates["bug"] - 0.55) < 5 * np.sqrt(0.55 * 0.45 / 900)
  assert abs(rates["plain"] - 0.02) < 5 * np.sqrt(0.02 * 0.98 / 1500)
  assert rates["bug_rule"] == rates["bug"]
  # 2:+1+1 with the bug {(2, +, 1): shift 2}: the first "+1" (from 2) is a bug line, the second
  # (from the written value) is one only when that value is 2 again.
  ex, state_bug = {"question": "2:+1+1"}, {(2, "+", 1): 2}
  assert register.line_error_rates(["+1=5\n+1=6"], [ex], state_bug) == {
      "plain": 0.0, "bug": 1.0, "bug_rule": 1.0}
  assert register.line_error_rates(["+1=3\n+1=4"], [ex], state_bug) == {
      "plain": 0.0, "bug": 0.0, "bug_rule": 0.0}
  assert register.demonstrate("3:+1", random.Random(0), state_bug, bug_rate=1.0,
                              slip_rate=0.0) == "+1=4"


def test_a_demonstrator_without_a_rule_writes_every_digit_of_a_bug_cell_alike():
  """max_shift=0: the same bug triples, each with shift 0, and a firing bug writes a fresh
  uniformly random wrong digit, so at bug_rate 0.9 each of the ten digits of a bug cell comes up
  with probability 0.1 (chi-square against uniform, per cell and pooled); plain lines keep the
  slip rate; line_error_rates counts every wrong bug line as the rule's."""
  ruled = register.bug_types(0, 30, keys="state", max_shift=9)
  bugs = register.bug_types(0, 30, keys="state", max_shift=0)
  assert bugs.keys() == ruled.keys() and set(bugs.values()) == {0}
  rng = random.Random(9)
  cell, draws = (4, "+", 3), 20000
  assert cell not in bugs and (cell[0], "-", 3) not in bugs
  written = collections.Counter(
      register.demonstrate("4:+3", rng, {cell: 0}, bug_rate=0.9, slip_rate=0.0)[-1]
      for _ in range(draws))
  # Ten equally likely digits: chi-square with 9 degrees of freedom, 27.9 is its 0.999 quantile.
  assert sorted(written) == list("0123456789")
  assert sum((c - draws / 10) ** 2 / (draws / 10) for c in written.values()) < 27.9
  examples = register.generate(400, seed=3, num_bugs=30, min_bugs=3, max_bugs=3,
                               bug_keys="state")
  demos = [register.demonstrate(ex["question"], rng, bugs, bug_rate=0.9) for ex in examples]
  rates = register.line_error_rates(demos, examples, bugs)
  assert abs(rates["bug"] - 0.9) < 5 * np.sqrt(0.09 / 1200)
  assert abs(rates["plain"] - 0.02) < 5 * np.sqrt(0.0196 / 2000)
  assert rates["bug_rule"] == rates["bug"]
  # The wrong digit is drawn afresh: one bug line, 200 demonstrations, many wrong digits.
  assert len({register.demonstrate("4:+3", rng, {cell: 0}, bug_rate=1.0, slip_rate=0.0)
              for _ in range(200)}) == 9


def test_table_rule_is_a_fixed_permutation_per_operation():
  """rule="table": each symbol is a permutation of 0..9, fixed; the solution, checker and step
  labels follow it (against an independent walk through the tables), and "add" is unchanged."""
  tables = register.op_tables()
  assert tables == register.op_tables() and len(tables) == 18
  assert all(sorted(t) == list(range(10)) for t in tables.values())
  assert len(set(tables.values())) == 18
  examples = register.generate(200, seed=6, num_bugs=30, min_bugs=2, max_bugs=2,
                               bug_keys="state", rule="table")
  bugs = register.bug_types(0, 30, keys="state")
  for ex in examples:
    assert ex["rule"] == "table"
    start, body = ex["question"].split(":")
    v, walk, triples = int(start), [], []
    for sign, d in zip(body[0::2], body[1::2]):
      triples.append((v, sign, int(d)))
      v = tables[(sign, int(d))][v]
      walk.append(v)
    assert [int(line[-1]) for line in ex["solution"].splitlines()] == walk
    assert ex["bug_ops"] == 2 == sum(t in bugs for t in triples)
    assert register.check(ex["solution"], ex) == 1.0
    # The verifier passes task, question and answer only: the answer decides.
    slim = {k: ex[k] for k in ("task", "question", "answer")}
    assert register.check(ex["solution"], slim) == 1.0
    assert register.check(register.solve(ex["question"]), slim) == float(
        register.values(*register.parse_question(ex["question"]))[-2:] == walk[-2:])
    lines = ex["solution"].splitlines()
    lines[3] = lines[3][:3] + str((walk[3] + 1) % 10)
    assert register.step_labels("\n".join(lines), ex) == [True] * 3 + [False] * 2 + [True] * 3
  assert "rule" not in register.generate(1, seed=6)[0]
  with pytest.raises(ValueError, match="rule"):
    register.generate(1, rule="mul")
  rng = random.Random(5)
  demos = [register.demonstrate(ex["question"], rng, bugs, bug_rate=0.55, rule="table")
           for ex in examples]
  rates = register.line_error_rates(demos, examples, bugs)
  assert abs(rates["bug"] - 0.55) < 5 * np.sqrt(0.55 * 0.45 / 400)
  assert rates["bug_rule"] == rates["bug"]


def test_hard_chains_carry_the_hard_half_of_the_bugs_only():
  bugs = register.bug_types(0, 30, keys="state")
  easy, hard = register.split_bugs(bugs)
  assert len(easy) == len(hard) == 15 and easy.keys() | hard.keys() == bugs.keys()
  assert {v for v, _, _ in easy} == {v for v, _, _ in hard} == set(range(10))
  examples = register.generate(400, seed=7, num_bugs=30, min_bugs=1, max_bugs=1,
                               bug_keys="state", rule="table", hard_bugs=4, easy_share=0.3)
  kinds = collections.Counter()
  for ex in examples:
    start, body = ex["question"].split(":")
    v, cells = int(start), []
    for sign, d in zip(body[0::2], body[1::2]):
      cells.append((v, sign, int(d)))
      v = register.apply(v, (sign, int(d)), "table")
    in_easy, in_hard = sum(c in easy for c in cells), sum(c in hard for c in cells)
    assert (in_easy, in_hard) in ((1, 0), (0, 4)) and ex["bug_ops"] == in_easy + in_hard
    kinds[in_hard > 0] += 1
  assert abs(kinds[False] / 400 - 0.3) < 5 * np.sqrt(0.21 / 400)
  for bad in ({"bug_keys": "op", "num_bugs": 5}, {"bug_keys": "state", "num_bugs": 12}):
    with pytest.raises(ValueError, match="hard_bugs"):
      register.generate(2, hard_bugs=3, **bad)


def test_an_eval_split_keeps_the_hard_share_or_says_it_cannot():
  """Redrawing a training question keeps the chain's kind: with few distinct hard chains the
  eval split used to fill up with easy ones silently."""
  kw = dict(num_bugs=30, min_bugs=2, max_bugs=2, bug_keys="state", rule="table", easy_share=0.5)
  train = register.generate(3000, seed=0, hard_bugs=4, **kw)
  evals = register.generate(300, seed=0, split="eval", hard_bugs=4,
                            exclude={ex["question"] for ex in train}, **kw)
  assert not {ex["question"] for ex in evals} & {ex["question"] for ex in train}
  hard = sum(ex["bug_ops"] == 4 for ex in evals)
  assert abs(hard / 300 - 0.5) < 5 * np.sqrt(0.25 / 300)
  train = register.generate(10000, seed=0, hard_bugs=8, **kw)  # a few hundred distinct hard
  with pytest.raises(ValueError, match="hard_bugs"):
    register.generate(256, seed=0, split="eval", hard_bugs=8,
                      exclude={ex["question"] for ex in train}, **kw)


def test_coincidental_success_is_rare():
  rng = random.Random(2)
  examples = register.generate(400, seed=9)
  demos = [register.demonstrate(ex["question"], rng, BUGS) for ex in examples for _ in range(4)]
  rate = register.coincidence_rate([ex for ex in examples for _ in range(4)], demos)
  assert rate < 0.01


def test_task_is_registered_and_verified_through_the_run_verifier():
  from prl_jax.data.registry import get_task
  from prl_jax.eval.evaluate import answer_extractor
  from prl_jax.rewards.verify import Verifier

  task = get_task("register")
  examples = task.generate(6, (8, 8), 0, bug_seed=0)
  wrong = [_corrupt(ex["solution"], 7, (int(ex["answer"][-1]) + 1) % 10) for ex in examples]
  with Verifier(workers=0) as verify:
    assert verify([ex["solution"] for ex in examples] + wrong, examples + examples) == \
        [1.0] * 6 + [0.0] * 6
  extract = answer_extractor("register")
  assert [extract(ex["solution"], ex) for ex in examples] == [ex["answer"] for ex in examples]
  assert extract("+1=2", examples[0]) is None


def _task_config(**changes):
  import ml_collections

  from configs.base import get_config
  task = get_config().task
  task.name = "register"
  task.update(changes)
  return ml_collections.FrozenConfigDict(task)


def test_sft_demonstrator_solver_buggy_and_refusals():
  from prl_jax.config import ConfigError
  from prl_jax.data.demonstrations import demonstrator

  examples = register.generate(400, seed=11)
  assert demonstrator(_task_config())(examples[0], None) is examples[0]
  buggy = demonstrator(_task_config(demonstrator="buggy"))
  demos = [buggy(ex, np.random.default_rng(i)) for i, ex in enumerate(examples)]
  again = [buggy(ex, np.random.default_rng(i)) for i, ex in enumerate(examples)]
  assert demos == again  # a function of the SFT's data generator only
  assert all(d["question"] == ex["question"] for d, ex in zip(demos, examples))
  success = np.mean([register.check(d["solution"], ex) for d, ex in zip(demos, examples)])
  assert 0.05 <= success <= 0.15
  with pytest.raises(ConfigError, match="register task's demonstrator"):
    demonstrator(_task_config(demonstrator="buggy", name="arithmetic"))
  with pytest.raises(ConfigError, match="task.demonstrator='typo'"):
    demonstrator(_task_config(demonstrator="typo"))


def test_sft_on_the_buggy_demonstrator_runs_and_resumes_exactly(tmp_path):
  """Two SFT steps on register chains from the buggy demonstrator; "2 steps" equals "1 step,
  resume, 1 step" (the demonstrations follow the saved data generator)."""
  import os

  import jax

  from prl_jax.config import apply_overrides, load_config_file
  from prl_jax.models import hf
  from prl_jax.train.sft import sft

  config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "mini",
                                         "sft.py"))
  apply_overrides(config, ["task.name=register", "task.demonstrator=buggy", "sft.steps=2",
                           "task.min_ops=8", "task.max_ops=8",
                           "sft.batch_size=4", "sft.warmup_steps=1", "task.num_train=16",
                           "task.num_eval=4", "task.max_prompt_len=32",
                           "rollout.max_new_tokens=40", "checkpoint.every=1",
                           "log.progress=false", "log.tensorboard=false", "mesh.num_devices=1"])
  straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
  sft(config, straight)
  sft(config, resumed, max_steps=1)
  sft(config, resumed)
  _, a = hf.load_hf(os.path.join(straight, "final_hf"))
  _, b = hf.load_hf(os.path.join(resumed, "final_hf"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
