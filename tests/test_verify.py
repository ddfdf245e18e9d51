"""Outcome verifiers: answer formats, extraction, adversarial inputs, the process pool."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prl_jax.data import arithmetic, countdown
from prl_jax.rewards.math_answer import extract_answer, math_equal, score_math
from prl_jax.rewards.verify_guards import unsafe_for_sympy
from prl_jax.rewards.verify import Verifier

# (prediction, reference, equal?)
ANSWER_FORMATS = [
  # integers, signs, spacing
  ("72", "72", True),
  ("-3", "-3", True),
  ("-3", "3", False),
  ("+5", "5", True),
  ("−7", "-7", True),  # unicode minus
  ("\\!5", "5", True),
  ("5\\,000", "5000", True),
  ("12", "12.0", True),
  # thousands separators
  ("1,000", "1000", True),
  ("1{,}000", "1000", True),
  ("1,000,000", "1000000", True),
  ("1,2", "12", False),
  # fractions and decimals
  ("\\frac{1}{2}", "1/2", True),
  ("\\dfrac{1}{2}", "0.5", True),
  ("\\tfrac{3}{4}", "\\frac34", True),
  ("0.5", "1/2", True),
  ("2/4", "1/2", True),
  ("-\\frac{1}{2}", "-0.5", True),
  ("\\frac{1}{2}", "\\frac{1}{3}", False),
  ("0.333", "\\frac{1}{3}", False),
  ("0.333333", "\\frac{1}{3}", True),  # decimals agree to 6 places
  (".5", "0.5", True),
  # percentages
  ("50\\%", "50", True),
  ("50%", "0.5", True),
  ("50%", "5", False),
  # scientific notation
  ("1.5e3", "1500", True),
  ("1.5\\times10^{3}", "1500", True),
  ("3\\times 10^{-2}", "0.03", True),
  ("1e3", "100", False),
  # units and currency
  ("5 cm", "5", True),
  ("5\\text{ cm}", "5", True),
  ("\\$5", "5", True),
  ("$5.00", "5", True),
  ("90^\\circ", "90", True),
  ("6 cm", "5", False),
  # symbolic: sqrt, pi, expressions
  ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
  ("3\\sqrt{3}", "\\sqrt{27}", True),
  ("2\\sqrt{3}", "\\sqrt{27}", False),
  ("2\\pi", "2 \\pi", True),
  ("\\pi", "3.14", False),
  ("x^2+2x+1", "(x+1)^2", True),
  ("x=5", "5", True),
  # intervals, tuples, sets
  ("[0,1)", "[0, 1)", True),
  ("[0,1]", "[0, 1)", False),
  ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)", True),
  ("(1,2)", "(2, 1)", False),
  ("\\{1,2\\}", "\\{2,1\\}", True),
  ("\\infty", "\\infty", True),
  # text answers and choices
  ("\\text{Monday}", "Monday", True),
  ("Tuesday", "\\text{Monday}", False),
  ("(B)", "B", True),
  ("\\text{(C)}", "C", True),
  ("A", "C", False),
  # nothing to compare
  (None, "5", False),
  ("", "5", False),
]


@pytest.mark.parametrize("pred,gold,equal", ANSWER_FORMATS)
def test_math_equal_formats(pred, gold, equal):
  assert math_equal(pred, gold) is equal


def test_format_table_is_broad():
  assert len(ANSWER_FORMATS) >= 30
  assert sum(e for *_, e in ANSWER_FORMATS) >= 15 and sum(not e for *_, e in ANSWER_FORMATS) >= 15


EXTRACTIONS = [
  ("so $\\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
  ("first \\boxed{1}, then \\boxed{2}", "2"),
  ("\\boxed{\\left\\{1, 2\\right\\}}", "\\left\\{1, 2\\right\\}"),
  ("\\fbox{7}", "7"),
  ("x \\boxed 7 y", "7"),
  ("Natalia sold 72.\n#### 72", "72"),
  ("... #### 1,234", "1,234"),
  ("The answer is 80", "80"),
  ("The answer is: $\\frac{3}{4}$.", "\\frac{3}{4}"),
  ("Final answer: \\(x=2\\)", "x=2"),
  ("The answer is\n42\n", "42"),
  ("we get 3, and then 7 apples", "7"),
  ("she has 1/2 left", "1/2"),
  ("The roots are \\boxed{-2} and \\boxed{1}.", "-2, 1"),
  ("\\boxed{5}. Final Answer: The final answer is $6$. I hope it is correct.", "6"),  # restated after
  ("\\boxed{5}. The final answer is 5, since it works.", "5"),  # not a clear restatement: the box
  ("Final Answer: The largest $n$ is 34.", "34"),
  ("So $\\frac{1}{3}$ of them.", "\\frac{1}{3}"),
  ("so \\frac{1}{3}", None),  # LaTeX without delimiters in a sentence: no digit run of it
  ("no numbers here", None),
  ("", None),
]


@pytest.mark.parametrize("text,answer", EXTRACTIONS)
def test_extract_answer(text, answer):
  assert extract_answer(text) == answer


def test_score_math_on_responses():
  assert score_math("Adding up, the total is \\boxed{1,000} dollars.", {"answer": "1000"}) == 1.0
  assert score_math("So the answer is $\\boxed{\\dfrac{1}{2}}$.", {"answer": "0.5"}) == 1.0
  assert score_math("Thus 48+24=72.\n#### 72", "72") == 1.0
  assert score_math("The answer is 71", "72") == 0.0
  assert score_math("I don't know.", "72") == 0.0


# The classes of issue 17, each with its right verdict worked out by hand.
CHECKER_CLASSES = [
  # matrices: the row separator `\\` followed by a space is structure, not spacing
  ("\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "\\begin{pmatrix}-7\\\\16\\\\5\\end{pmatrix}", True),
  ("\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "\\begin{pmatrix}-7\\\\16\\\\6\\end{pmatrix}", False),
  ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}3 & 4\\\\1 & 2\\end{pmatrix}", False),
  # tuples are ordered, sets are not
  ("(3,2)", "(2,3)", False),
  ("(2, 3)", "\\left(2,3\\right)", True),
  ("\\{3,2\\}", "\\{2,3\\}", True),
  ("-2, 1", "1,-2", True),
  # thousands separators
  ("10,\\!080", "10080", True),
  ("10{,}080", "10,080", True),
  ("10,\\!081", "10080", False),
  # relative tolerance: 1.16e-7 and 7.25e-11 differ by a factor of 1600
  ("1.16\\times10^{-7}", "7.25\\times10^{-11}", False),
  ("1.16e-7", "1.16\\times10^{-7}", True),
  ("0.0000001", "0.0000002", False),
  ("0.333333", "\\frac{1}{3}", True),  # six significant digits, correctly rounded
  ("0.3333", "\\frac{1}{3}", False),  # four are not the value (math-verify, PRM800K agree)
  ("0.6666", "\\frac{2}{3}", False),  # truncated, not rounded
  ("0.33", "\\frac{1}{3}", False),
  ("0.6666666666666666", "\\frac{2}{3}", True),  # a float printed to 16 places
  ("1000000.5", "1000000", False),  # relatively close, but both are written exactly
  ("346.0", "346.000001", False),
  ("1.0000005", "1.0000004", False),
  ("5 x", "5", False),  # a single letter after a number is mathematics, not a unit
  # irrational golds: a correct rounding with six or more digits, never an absolute 1e-6
  ("3.14159", "\\pi", True),
  ("3.1416", "\\pi", False),
  ("3.141592", "\\pi", False),  # truncated
  ("1e-9", "\\sqrt{2}\\times10^{-8}", False),
  ("1.414214\\times10^{-8}", "\\sqrt{2}\\times10^{-8}", True),
  ("5 pi", "5", False),
  # multiple choice with the option's text
  ("(D) (2,0)", "D", True),
  ("(D) (2,0)", "C", False),
  ("D", "\\text{(D)}", True),
  # units are kept
  ("5\\text{ pm}", "5\\text{ am}", False),
  ("5pm", "5am", False),
  ("5 \\text{ p.m.}", "5\\text{ pm}", True),
  ("5\\text{ cm}", "5\\text{ m}", False),
  ("10cm", "10", False),  # letters glued to a number are not a unit anyone parsed
]


@pytest.mark.parametrize("pred,gold,equal", CHECKER_CLASSES)
def test_checker_classes(pred, gold, equal):
  assert math_equal(pred, gold) is equal


def _render(value, rng):
  """`value` (a Fraction) written in one of the ways answers write numbers."""
  sign = "-" if value < 0 else ""
  v = abs(value)
  forms = [f"{sign}\\frac{{{v.numerator}}}{{{v.denominator}}}", f"{sign}{v.numerator}/{v.denominator}"]
  if v.denominator == 1:
    n = v.numerator
    forms += [f"{sign}{n}", f"{sign}{n:,}", f"{sign}{n:,}".replace(",", "{,}"), f"{sign}{n}.0"]
  d = v.denominator
  while d % 2 == 0:
    d //= 2
  while d % 5 == 0:
    d //= 5
  if d == 1:  # a terminating decimal, written exactly
    places = 0
    while (v * 10**places).denominator != 1:
      places += 1
    digits = str((v * 10**places).numerator).rjust(places + 1, "0")
    forms.append(f"{sign}{digits[:-places]}.{digits[-places:]}" if places else f"{sign}{v.numerator}")
  return rng.choice(forms)


def test_numbers_agree_with_exact_arithmetic():
  """Random rationals in random notations: equal exactly when the Fractions are equal."""
  import random
  from fractions import Fraction

  rng = random.Random(0)
  for _ in range(400):
    a = Fraction(rng.randint(-3000, 3000), rng.choice([1, 1, 2, 4, 5, 8, 3, 7, 1000]))
    b = a if rng.random() < 0.5 else a + Fraction(rng.choice([1, -1]), rng.choice([1, 3, 10, 1000, 10**6]))
    pa, pb = _render(a, rng), _render(b, rng)
    assert math_equal(pa, pb) is (a == b), (pa, pb)


RESPONSES = [
  # (response, gold, reward): extraction as the reference graders do it
  ("Final Answer: The final answer is $42$. I hope it is correct.", "42", 1.0),
  ("Final Answer: The final answer is $41$. I hope it is correct.", "42", 0.0),
  ("So the probability is $\\frac{1}{3}$.", "3", 0.0),  # no digit run of LaTeX is an answer
  ("So the probability is $\\frac{1}{3}$.", "\\frac{1}{3}", 1.0),
  ("The ratio is $\\frac{1+\\sqrt5}{2}$.", "2", 0.0),
  ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "1,-2", 1.0),
  ("The roots are $\\boxed{-2}$ and $\\boxed{1}$.", "1", 0.0),
  ("First $\\boxed{5}$. Wait, that is wrong: it is $\\boxed{6}$.", "6", 1.0),  # a correction
  ("\\boxed{1}", "The roots are $\\boxed{1}$ and $\\boxed{-2}$.", 0.0),  # a multi-box gold
  ("Its value is $\\boxed{255}$. In all, $10,455. Final Answer: The final answer is $10,455$.", "10455", 1.0),
  ("$\\boxed{\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}}$", "$\\begin{pmatrix}-7\\\\16\\\\5\\end{pmatrix}$", 1.0),
]


@pytest.mark.parametrize("response,gold,reward", RESPONSES)
def test_score_math_classes(response, gold, reward):
  assert score_math(response, {"answer": gold}) == reward


# Accepted by the guards' first version, then stopped only by math-verify's SIGALRM, which does
# not exist off the main thread: from a thread with no pool they ran for minutes.
THREAD_BOMBS = ["\\boxed{(10^{7})!}", "\\boxed{2^{10\\cdot10^{8}}}", "\\boxed{10^{10}!}",
                "\\boxed{\\binom{10^{7}}{5000000}}", "\\boxed{\\sum_{k=1}^{10^{8}} k!}"]


_THREAD_SCRIPT = """
import json, sys, threading, time
from prl_jax.rewards.verify import Verifier
bombs = json.loads(sys.argv[1])
assert Verifier(workers=0)(["\\\\boxed{5}"], ["5"]) == [1.0]
results = {}
def score():
  results["inline"] = Verifier(workers=0)(bombs, ["5"] * len(bombs))
  results["symbolic"] = Verifier(workers=0, timeout=3.0)(["\\\\boxed{(x+y+z+1)^{40}}"],
                                                         ["(x+y+z)^{40}"])
start = time.monotonic()
thread = threading.Thread(target=score, daemon=True)
thread.start()
thread.join(timeout=60.0)
print(json.dumps({"alive": thread.is_alive(), "seconds": time.monotonic() - start, **results}))
"""


def test_bombs_return_quickly_from_a_thread_without_a_pool():
  # In a fresh interpreter: what earlier tests left in this process (their threads, SymPy's
  # caches) must not decide it; full-suite runs on a loaded machine timed out here although the
  # file alone passes in seconds. Imports and a first parse happen before the clock starts.
  # Unguarded, the bombs ran for minutes; alone this takes ~1 s.
  done = subprocess.run([sys.executable, "-c", _THREAD_SCRIPT, json.dumps(THREAD_BOMBS)],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert not out["alive"], "an answer did not return within 60 s from a worker thread"
  assert out["inline"] == [0.0] * len(THREAD_BOMBS)
  # Python-level SymPy work (expanding a power of a sum) stops at the thread's deadline.
  assert out["symbolic"] == [0.0]
  assert out["seconds"] < 20.0


# ----------------------------------------------------------------------------- adversarial

ADVERSARIAL = [
  "x" * 1_000_000,
  "{" * 1_000_000,
  "\\boxed{" * 200_000,
  "\\boxed{" + "}" * 100_000,
  "7" * 1_000_000,
  "\\boxed{9**9**9**9}",
  "\\boxed{9^{9^{9^{9}}}}",
  "\\boxed{10^{10^{10}}}",
  "\\boxed{2^{10000000}}",
  "\\boxed{(9^9)^(9^9)}",
  "\\boxed{100000!}",
  "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
  "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
  "\\boxed{" + "x+" * 20000 + "1}",
  "\\boxed{1e999999999}",
  "The answer is \\frac{1}{0}",
  "\\boxed{\\sqrt{-1}}\x00\ud800",
]


@pytest.mark.parametrize("response", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_score_zero_quickly(response):
  start = time.monotonic()
  assert Verifier(workers=0)([response], [{"task": "math", "answer": "5"}]) == [0.0]
  assert score_math(response, "5") == 0.0
  assert math_equal(response[:2000], "5") is False
  assert time.monotonic() - start < 3.0


# Inputs that make ambiguous regular expressions backtrack for minutes.
BACKTRACKING = [
  "The answer is 24" + " " * 200_000 + "x",
  "6*4=24" + " " * 200_000 + "x",
  "The answer is " + "1 " * 200_000 + "x",
  "1+" * 200_000,
  "the answer is " * 100_000,
  "\\boxed{\\text{" + " cm" * 200_000,
]


@pytest.mark.parametrize("task", ["arithmetic", "countdown", "math"])
def test_adversarial_inputs_for_every_checker(task):
  example = {"task": task, "answer": "24", "question": "make 24 from 3 4 6 1"}
  responses = ADVERSARIAL + BACKTRACKING
  start = time.monotonic()
  assert Verifier()(responses, [example] * len(responses)) == [0.0] * len(responses)
  assert time.monotonic() - start < 5.0


def test_adversarial_questions_do_not_backtrack():
  start = time.monotonic()
  assert countdown.check("6*4=24", {"question": "make 24 from " + "1" * 40 + "x"}) == 0.0
  assert countdown.check("6*4=24", {"question": "make 24 from " + "1 " * 50_000 + "x"}) == 0.0
  assert time.monotonic() - start < 2.0


def test_guards_refuse_bombs_but_not_ordinary_powers():
  bombs = ["9^{9^{9}}", "9**9**9**9", "10^{100000}", "2^{2^{2^{2^{2}}}}", "5000!", "1" * 400,
           "(10^{7})!", "2^{10\\cdot10^{8}}", "10^{10}!", "\\binom{10^{7}}{5000000}", "\\sum_{k=1}^{10^{9}} k",
           "(x+1)^{3000}", "\\sin^{1000}(x)"]
  for bomb in bombs:
    assert unsafe_for_sympy(bomb), bomb
  for fine in ["2^{10}", "2^{2024}", "x^{40}", "10^{-5}", "e^{i\\pi}", "\\frac{2^{3}}{4}", "5!",
               "\\frac{1}{2004!}", "(n+1)!", "\\binom{10^{6}}{3}", "\\sum_{k=1}^{100} k^2", "2^{x}"]:
    assert unsafe_for_sympy(fine) is None, fine
  assert math_equal("2^{10}", "1024") and math_equal("5!", "120")


# ----------------------------------------------------------------------------- the Verifier


def _examples():
  a = arithmetic.generate(4, 3, seed=0)
  c = countdown.generate(4, 3, seed=0)
  math = [{"task": "math", "answer": "\\frac{1}{2}"}, {"task": "gsm8k", "answer": "72"}, "5"]
  responses = [e["solution"] for e in a] + ["The answer is 0"] + [e["solution"] for e in c] + ["The answer is 1"]
  responses += ["\\boxed{0.5}", "#### 71", "The answer is 5"]
  examples = a + a[:1] + c + c[:1] + math
  expected = [1.0] * 4 + [0.0] + [1.0] * 4 + [0.0] + [1.0, 0.0, 1.0]
  return responses, examples, expected


def test_verifier_inline_mixes_tasks():
  responses, examples, expected = _examples()
  assert Verifier(workers=0)(responses, examples) == expected


def test_verifier_errors_are_clear():
  with pytest.raises(ValueError, match="no verifier for task 'chess'"):
    Verifier()(["x"], [{"task": "chess", "answer": "1"}])
  with pytest.raises(ValueError, match="2 responses but 1 examples"):
    Verifier()(["a", "b"], ["1"])
  with pytest.raises(ValueError, match="workers"):
    Verifier(workers=-2)
  with pytest.raises(ValueError, match="needs a 'question' field"):
    Verifier()(["6*4=24"], [{"task": "countdown", "answer": "24"}])
  with pytest.raises(ValueError, match="start_method"):
    Verifier(workers=1, start_method="fork")


def _sleeps(response, example):
  """A scorer that hangs (the kind of worker the pool must kill)."""
  time.sleep(60)
  return 1.0


def _big_power(response, example):
  """A scorer stuck in C-level integer arithmetic, which no signal can interrupt."""
  n = int(response)
  return float(n**n**n**n > 0)


def _crashes(response, example):
  """A scorer whose worker dies, as if killed by the operating system."""
  import os

  os._exit(1)


def _fine_but_slow(response, example):
  """A correct answer that takes a second: still in flight when a neighbour's worker dies."""
  time.sleep(1.0)
  return 1.0


def _crashes_soon(response, example):
  """A worker that dies while the job beside it is still running."""
  import os

  time.sleep(0.2)
  os._exit(1)


# Slow: two deadlines run out and the pool is started four times (each worker imports SymPy).
@pytest.mark.slow
def test_verifier_pool_matches_inline_and_survives_hangs():
  responses, examples, expected = _examples()
  scorers = {"sleep": _sleeps, "bigpow": _big_power, "crash": _crashes}
  with Verifier(workers=2, timeout=3.0, scorers=scorers) as verifier:
    assert verifier(responses, examples) == expected
    hung = [{"task": "sleep", "answer": "1"}, {"task": "bigpow", "answer": "1"}]
    start = time.monotonic()
    out = verifier(["x", "9"] + responses, hung + examples)
    assert out == [0.0, 0.0] + expected
    assert verifier.restarts >= 1
    assert time.monotonic() - start < 30.0  # two timeouts + pool restarts, never a hang
    # A dead worker breaks the pool: it is replaced and the batch still completes.
    out = verifier(["x"] + responses[:3], [{"task": "crash", "answer": "1"}] + examples[:3])
    assert out == [0.0] + expected[:3]
    # The pool keeps working afterwards.
    assert verifier(responses[-3:], examples[-3:]) == expected[-3:]
  assert verifier._pool is None


@pytest.mark.slow
def test_crash_is_charged_to_the_answer_that_caused_it():
  """A worker's death fails every answer in flight. With two workers the crashing answer and a
  slow correct one are in flight together, and both fail; retried side by side they would fail
  again, so the innocent one would score 0. Retried alone, each gets its own verdict."""
  scorers = {"slow": _fine_but_slow, "crash": _crashes_soon}
  examples = [{"task": "crash", "answer": "1"}, {"task": "slow", "answer": "1"},
              {"task": "slow", "answer": "1"}]
  with Verifier(workers=2, timeout=10.0, scorers=scorers) as verifier:
    assert verifier(["x", "y", "z"], examples) == [0.0, 1.0, 1.0]
    assert verifier.restarts == 2  # the first crash, beside the slow answer; the second, alone


def test_verifier_pool_refuses_bombs_within_timeout():
  bombs = ADVERSARIAL[5:12]
  with Verifier(workers=2, timeout=2.0) as verifier:
    start = time.monotonic()
    assert verifier(bombs, ["5"] * len(bombs)) == [0.0] * len(bombs)
    assert time.monotonic() - start < 10.0



def test_auto_workers_pool_math_only():
  """workers=-1 (the training default) scores synthetic tasks inline and pools math answers."""
  responses, examples, expected = _examples()
  synthetic = [(r, e, x) for r, e, x in zip(responses, examples, expected)
               if isinstance(e, dict) and e.get("task") in ("arithmetic", "countdown")]
  with Verifier(workers=-1) as verifier:
    assert verifier.workers >= 1
    assert verifier([r for r, _, _ in synthetic], [e for _, e, _ in synthetic]) == [x for *_, x in synthetic]
    assert verifier._pool is None  # no math answer yet: no worker started
    assert verifier(responses, examples) == expected
    assert verifier._pool is not None


# ----------------------------------------------------------------------------- graded cases

CASES = Path(__file__).parent / "fixtures" / "checker_cases.jsonl"


def _cases():
  return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_graded_cases_are_sourced_and_explained():
  cases = _cases()
  assert len(cases) >= 200
  for case in cases:
    assert case["source"] and case["cls"] and case["expected"] in (0, 1)
    if case["expected"] != case["source_verdict"]:
      assert len(case["note"]) > 20, f"case {case['id']} overrides its source without a reason"


@pytest.mark.slow
def test_agreement_with_public_graders():
  """The reference graders' verdicts (benchmarks/checker_agreement.py prints the detail): never a
  false positive, and at least 97% agreement overall."""
  cases = _cases()
  verdicts = [score_math(c["response"], c["gold"]) == 1.0 for c in cases]
  false_pos = [c["id"] for c, v in zip(cases, verdicts) if v and not c["expected"]]
  agree = sum(v == bool(c["expected"]) for c, v in zip(cases, verdicts))
  assert not false_pos
  assert agree / len(cases) >= 0.97
