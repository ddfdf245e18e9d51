"""Synthetic tasks: generators are deterministic, solutions pass their checkers, cheats do not."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.data import arithmetic, countdown, get_task, templates
from prl_jax.data.registry import TASKS
from prl_jax.data.math_files import SCHEMA

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


# ----------------------------------------------------------------------------- arithmetic


def test_arithmetic_schema_and_determinism():
  a = arithmetic.generate(20, (1, 4), seed=3)
  assert a == arithmetic.generate(20, (1, 4), seed=3)
  assert a != arithmetic.generate(20, (1, 4), seed=4)
  assert len({e["id"] for e in a}) == 20
  for e in a:
    assert tuple(e) == SCHEMA
    assert e["task"] == "arithmetic"
    assert e["prompt"] == f"Q: {e['question']}\nA: "
    operands, ops = arithmetic.parse_question(e["question"])
    assert e["difficulty"] == len(ops) and 1 <= len(ops) <= 4
    assert all(1 <= x <= 99 for x in operands)
    assert e["answer"] == str(eval(e["question"]))  # Python's precedence is the reference


def test_arithmetic_example_solution():
  assert arithmetic.solve("37+58-19+4") == "37+58=95\n95-19=76\n76+4=80\nThe answer is 80"
  # Products first, as a calculator would.
  assert arithmetic.solve("2+3*4") == "3*4=12\n2+12=14\nThe answer is 14"


def test_arithmetic_heldout_is_longer_and_nonnegative():
  train = arithmetic.generate(50, arithmetic.TRAIN_OPS, seed=0)
  held = arithmetic.generate_heldout(50, seed=0)
  assert max(e["difficulty"] for e in train) < min(e["difficulty"] for e in held)
  for e in train + held:
    steps = arithmetic.solve_steps(*arithmetic.parse_question(e["question"]))
    assert all(c >= 0 for *_, c in steps)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, num_ops=st.integers(1, 10), ops=st.sampled_from(["+-", "+-*", "*", "+"]), neg=st.booleans())
def test_arithmetic_solution_passes_checker(seed, num_ops, ops, neg):
  (e,) = arithmetic.generate(1, num_ops, seed, ops=ops, allow_negative=neg)
  assert arithmetic.check(e["solution"], e) == 1.0
  assert all(arithmetic.step_correct(e["solution"]))
  assert int(e["answer"]) == eval(e["question"])
  wrong = e["solution"].rsplit("The answer is", 1)[0] + f"The answer is {int(e['answer']) + 1}"
  assert arithmetic.check(wrong, e) == 0.0


def test_arithmetic_checker_rejects_bad_format():
  e = {"answer": "80"}
  assert arithmetic.check("The answer is 80", e) == 1.0
  assert arithmetic.check("The answer is 80.", e) == 1.0
  assert arithmetic.check("80", e) == 0.0  # no answer line
  assert arithmetic.check("The answer is 8O", e) == 0.0
  assert arithmetic.check("The answer is 79\nThe answer is 80", e) == 1.0  # the last one counts
  assert arithmetic.check("The answer is 80\nThe answer is 79", e) == 0.0
  assert arithmetic.check("The answer is " + "9" * 5000, e) == 0.0
  assert arithmetic.step_correct("37+58=95\n95-19=75\nnoise\nThe answer is 75") == [True, False]


def test_arithmetic_rejects_bad_arguments():
  with pytest.raises(ValueError, match="not an arithmetic chain"):
    arithmetic.parse_question("3+/4")
  with pytest.raises(ValueError, match="ops"):
    arithmetic.generate(1, 2, 0, ops="+/")
  with pytest.raises(ValueError, match="num_ops"):
    arithmetic.generate(1, 0, 0)


# ----------------------------------------------------------------------------- countdown


def test_countdown_schema_and_determinism():
  a = countdown.generate(20, (3, 4), seed=1)
  assert a == countdown.generate(20, (3, 4), seed=1)
  assert a != countdown.generate(20, (3, 4), seed=2)
  for e in a:
    assert tuple(e) == SCHEMA and e["task"] == "countdown"
    numbers, target = countdown.parse_question(e["question"])
    assert e["difficulty"] == len(numbers) and 3 <= len(numbers) <= 4
    assert str(target) == e["answer"] and target not in numbers
    assert e["solution"].count("\n") <= len(numbers) - 1  # at most one operation per number pair
  held = countdown.generate_heldout(10, seed=1)
  assert min(e["difficulty"] for e in held) > countdown.TRAIN_NUMBERS[1]


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, k=st.integers(2, 5))
def test_countdown_solution_passes_checker(seed, k):
  (e,) = countdown.generate(1, k, seed)
  assert countdown.check(e["solution"], e) == 1.0
  # The final expression alone is also a legal answer.
  expr = e["solution"].rsplit("The answer is ", 1)[1]
  assert countdown.check(f"The answer is {expr}", e) == 1.0
  # Changing the last result breaks it.
  lines = e["solution"].splitlines()
  a, rest = lines[-2].split("=")
  bad = "\n".join(lines[:-2] + [f"{a}={int(rest) + 1}"])
  assert countdown.check(bad, e) == 0.0


def test_countdown_example():
  e = {"question": "make 24 from 3 4 6 1"}
  good = "3+1=4\n4*6=24\nThe answer is (3+1)*6"
  assert countdown.check(good, e) == 1.0
  assert countdown.check("The answer is (3+1)*6", e) == 1.0
  # A produced 3 next to the given 3: both may be used.
  assert countdown.check("4-1=3\n3*3=9", {"question": "make 9 from 3 4 1"}) == 1.0
  # The docstring-style trap: 3 used twice.
  assert countdown.check("6-4=2\n3+1=4\n2*4=8\n8*3=24", e) == 0.0
  assert countdown.check("6*4=24", e) == 1.0  # not every number has to be used
  assert countdown.check("6*4=24\nThe answer is 24", e) == 1.0
  assert countdown.check("The answer is 6*(3+1)", e) == 1.0
  assert countdown.check("6 × 4 = 24\nThe answer is 6 × 4 = 24.", e) == 1.0


@pytest.mark.parametrize(
  "response",
  [
    "6*4=24\n24*1=25",  # arithmetic error
    "6*4=24\n24*1=24\n24/1=24",  # 1 used twice
    "8*3=24",  # 8 is not given (and was never produced)
    "6*4=24\nThe answer is 25",  # stated answer disagrees
    "3/6=0\n6*4=24",  # inexact division
    "6*4=23",  # does not reach the target
    "The answer is 24",  # no work
    "6*4*1=24",  # more than one operation on a line
    "6*4=24\nso 6 4 = 24 ok",  # a malformed equation line
    "The answer is 6*4*1*1",  # 1 used twice in the expression
    "The answer is 3**3-3",  # power is not an allowed operation
    "The answer is (6/4)*(4*4)",  # non-integer intermediate result
    "The answer is -(6*4)",  # unary minus is not an operation
    "The answer is __import__('os')",
    "The answer is " + "(" * 500 + "6" + ")" * 500,
    "The answer is 6*4 = 25",
  ],
)
def test_countdown_rejects_illegal(response):
  assert countdown.check(response, {"question": "make 24 from 3 4 6 1"}) == 0.0


def test_countdown_question_round_trip_and_errors():
  assert countdown.parse_question(countdown.format_question([3, 4], 7)) == ([3, 4], 7)
  with pytest.raises(ValueError, match="not a countdown question"):
    countdown.parse_question("24 from 3 4")
  with pytest.raises(ValueError, match="no solution"):
    countdown.solve_steps([2, 2], 999)
  assert countdown.check("6*4=24", {"question": "garbage"}) == 0.0


def test_countdown_expression_parentheses():
  assert countdown.evaluate_expression("8-(4-2)", [8, 4, 2]) == 6
  assert countdown.evaluate_expression("8/(4/2)", [8, 4, 2]) == 4
  assert countdown.evaluate_expression("8/4/2", [8, 4, 2]) == 1  # left-associative: (8/4)/2
  assert countdown.evaluate_expression("7/2*2", [7, 2, 2]) is None


def test_countdown_expression_from_model_text_warns_nothing():
  """Python parses "2or 3" with a SyntaxWarning ("invalid decimal literal") printed into the
  run's log; a policy's answer line must be judged silently (here: illegal, so None)."""
  import warnings
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert countdown.evaluate_expression("2or 3", [2, 3]) is None
    assert countdown.evaluate_expression("3and 4", [3, 4]) is None
  assert not caught


# ----------------------------------------------------------------------------- registry and templates


def test_get_task():
  assert set(TASKS) == {"arithmetic", "countdown", "register"}
  task = get_task("countdown")
  (e,) = task.generate(1, 3, 0)
  assert task.check(task.solve(e["question"]), e) == 1.0
  (h,) = get_task("arithmetic").generate_heldout(1, 0)
  assert get_task("arithmetic").check(h["solution"], h) == 1.0
  with pytest.raises(ValueError, match="unknown task 'sudoku'.*arithmetic.*countdown"):
    get_task("sudoku")


def test_templates():
  assert templates.render("plain", "1+2") == "Q: 1+2\nA: "
  msgs = templates.render("qwen_math", "What is {x}?")
  assert msgs[0]["role"] == "system" and "\\boxed{}" in msgs[0]["content"]
  assert msgs[-1] == {"role": "user", "content": "What is {x}?"}
  eurus = templates.render("prime_eurus2", "Q")
  assert eurus[-1]["content"].startswith("Q\n") and "\\boxed" in eurus[-1]["content"]
  text = templates.render("er_prm_gsm8k", "How many?")
  assert isinstance(text, str) and "How many?" in text and "The answer is:" in text
  for t in templates.TEMPLATES.values():
    assert t.paper and t.messages("q")[-1]["role"] == "user"
  with pytest.raises(ValueError, match="unknown prompt template"):
    templates.get_template("nope")
  e = arithmetic.generate(1, 2, 0, template="qwen_math")[0]
  assert e["prompt"][-1]["content"] == e["question"]
