"""Math answers: extract the final answer of a response and compare it with the gold answer.

1. `extract_answer(text)` (`verify_extract`): boxed answers (several connected boxes read as one
   list), "####", "final answer is", the last math span, and a plain last number only in a
   response with no LaTeX.
2. `math_equal(pred, gold)` compares two answers, strictly when in doubt (a false positive pays a
   wrong answer, which RL then reinforces):
   - LaTeX is normalised without losing structure (matrix rows `\\\\`, `10,\\!080`);
   - multiple-choice letters compare as letters ("(D) (2,0)" == "D");
   - plain numbers compare in Python (`verify_numbers`): exact for integers and fractions, a
     relative tolerance for decimals, units kept ("5 pm" != "5 am");
   - everything else goes to math-verify (symbolic equality; sets unordered, tuples ordered,
     intervals, matrices), after input guards (`verify_guards`) refuse anything that could hang
     SymPy; an equality math-verify reaches after dropping different trailing text of both sides
     (different units) is refused.

`score_math` is both as one scorer; `prl_jax.rewards.verify.Verifier` runs it (and the synthetic
tasks' checkers) safely over a batch.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from prl_jax.rewards.verify_extract import (
  MAX_RESPONSE_CHARS,
  extract_answer,
  reference_answer,
)
from prl_jax.rewards.verify_guards import MAX_ANSWER_CHARS, unsafe_for_sympy
from prl_jax.rewards.verify_numbers import (
  choice_letter,
  numbers_equal,
  parse_number,
  rounds_to,
  values_close,
)

__all__ = ["MAX_RESPONSE_CHARS", "extract_answer", "math_equal", "reference_answer", "score_math"]

# ----------------------------------------------------------------------------- normalisation

# `\\` (a matrix row or line break) must survive; `\,` `\;` `\:` `\ ` `\quad` are spacing.
_SPACING = re.compile(r"(\\\\)|\\[,;: ]|\\q?quad(?![a-zA-Z])")
_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,\\!|,\\,)\s*(?=\d{3}(?!\d))")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_CONNECTIVES = re.compile(r"\s*(?:\\text\s*\{\s*(?:and|or)\s*\}|\\(?:text|mbox)\{\s*,?\s*\}|(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z]))\s*")


def _normalize(s: str) -> str:
  """Remove presentation-only LaTeX so equal answers look alike; keeps the mathematical content."""
  s = s.strip().replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = s.replace("\\cfrac", "\\frac").replace("\\left", "").replace("\\right", "").replace("\\%", "%")
  s = _THOUSANDS.sub(",", s)
  s = s.replace("\\!", "").replace("\\$", "").replace("$", "")
  s = _SPACING.sub(lambda m: m.group(1) or " ", s)
  s = _DEGREES.sub("", s)
  if re.search(r"\d", s) and "\\text{" not in s.replace("\\text{ and }", ""):
    s = _CONNECTIVES.sub(", ", s)  # "7, -2, and -5" / "6 \text{ and } 8": a list
    s = re.sub(r"(?:,\s*){2,}", ", ", s).strip(", ")
  return s.strip().rstrip(".").strip()


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def _text_key(s: str) -> str:
  """A string key for text answers: wrappers removed, case and spacing ignored."""
  return re.sub(r"\s+", "", _TEXT_WRAPPERS.sub(r"\1", s)).lower()


# ----------------------------------------------------------------------------- math-verify


class _Overrun(BaseException):
  """Raised inside SymPy when a thread's deadline passes: a BaseException, so that no
  `except Exception` in SymPy or math-verify swallows it and carries on."""


@contextlib.contextmanager
def _thread_deadline(seconds: float | None):
  """Off the main thread, where SIGALRM cannot be used, stop Python-level work after `seconds`
  by a trace function that checks the clock at every function call (SymPy's simplification is
  Python code; C-level big-number work is refused earlier by the guards)."""
  if seconds is None or threading.current_thread() is threading.main_thread():
    yield
    return
  end = time.monotonic() + seconds
  previous = sys.gettrace()

  def tracer(frame, event, arg):
    if time.monotonic() > end:
      raise _Overrun
    return previous(frame, event, arg) if previous is not None else None

  sys.settrace(tracer)
  try:
    yield
  finally:
    sys.settrace(previous)


def _signal_timeout(timeout: float | None) -> int | None:
  """math-verify's SIGALRM timeout in whole seconds, or None off the main thread (it would raise)."""
  if timeout is None or threading.current_thread() is not threading.main_thread():
    return None
  return max(1, int(timeout))


_UNIT_GROUPS = re.compile(r"\\(?:text|textbf|textnormal|textrm|mbox|mathrm)\s*\{[^{}]*\}")


def _left_out(answer: str, extracted: str) -> tuple[str, str]:
  """Letters of `answer` after its last "=" that math-verify's extraction left out, as
  (glued, spaced): letters glued to a digit ("5pm", "10cm") are not a unit it understood and
  must match exactly; words after a space or in \\text{} ("125 miles") are units."""
  tail = answer.rsplit("=", 1)[-1]
  kept = set(re.findall(r"[a-zA-Z]+", re.sub(r"\\[a-zA-Z]+", " ", extracted)))
  glued = [m[1] for m in re.finditer(r"\d([a-zA-Z]+)", _UNIT_GROUPS.sub(" ", tail)) if m[1] not in kept]
  words = re.findall(r"[a-zA-Z]+", re.sub(r"\\[a-zA-Z]+", " ", tail))
  spaced = [w for w in words if w not in kept and w not in glued]
  return " ".join(glued).lower(), " ".join(spaced).lower()


def _as_fraction(expr) -> Fraction | None:
  """A real number's value to 30 significant digits as a Fraction; None for anything else."""
  import sympy

  value = sympy.N(expr, 30)
  return Fraction(str(value)) if isinstance(value, sympy.Float) else None


def _numbers_recheck(pred_parsed: list, gold_parsed: list) -> bool:
  """For a numeric pair involving a float, equality by `verify_numbers` rules instead of
  math-verify's 6-decimal rounding (under which any two numbers below 5e-7 are equal)."""
  import sympy

  p, g = pred_parsed[0], gold_parsed[0]
  if not (isinstance(p, sympy.Expr) and isinstance(g, sympy.Expr) and p.is_number and g.is_number):
    return True
  if not (p.has(sympy.Float) or g.has(sympy.Float)):
    return True
  pn, gn = parse_number(str(pred_parsed[-1])), parse_number(str(gold_parsed[-1]))
  if pn is not None and gn is not None:
    return numbers_equal(pn, gn)
  a, b = _as_fraction(p), _as_fraction(g)
  if a is None or b is None:
    return True  # complex values: math-verify's verdict stands
  # A written decimal against an irrational value: a correct rounding, or a relative 1e-6.
  return values_close(a, b) or any(
    n is not None and rounds_to(n, other, exact_value=False) for n, other in ((pn, b), (gn, a))
  )


def _rounded_irrational(pred_parsed: list, gold_parsed: list) -> bool:
  """Whether one side is a decimal that correctly rounds the other, an irrational number, with
  at least six significant digits (3.14159 for pi, not 3.1416), as for a rational gold."""
  import sympy

  for written, other in ((pred_parsed, gold_parsed), (gold_parsed, pred_parsed)):
    number, value = parse_number(str(written[-1])), other[0]
    if number is None or number.exact or not isinstance(value, sympy.Expr):
      continue
    if value.is_number and value.is_rational is False and (approx := _as_fraction(value)) is not None:
      if rounds_to(number, approx, exact_value=False):
        return True
  return False


def _sympy_equal(pred: str, gold: str, timeout: float | None) -> bool:
  """math-verify on the two answers wrapped in \\boxed{} so its extractor takes them whole."""
  import sympy
  from math_verify import parse, verify  # imported lazily: SymPy takes a second to import

  seconds = _signal_timeout(timeout)
  gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=seconds)
  pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=seconds)
  if len(gold_parsed) < 2 or len(pred_parsed) < 2:
    return False
  if not verify(gold_parsed, pred_parsed, timeout_seconds=seconds):
    return _rounded_irrational(pred_parsed, gold_parsed)
  # Both sides truncated, differently, to what math-verify could read: units or words differ.
  (pg, pw), (gg, gw) = _left_out(pred, str(pred_parsed[-1])), _left_out(gold, str(gold_parsed[-1]))
  if pg != gg or (pw and gw and pw != gw):
    return False
  # math-verify rounds floats to 6 decimals (absolute): recheck numbers with a relative tolerance.
  return _numbers_recheck(pred_parsed, gold_parsed)
  return True


def math_equal(pred: str | None, gold: str | None, *, timeout: float | None = 3.0) -> bool:
  """Whether the answer `pred` equals the reference answer `gold` (answers, not whole responses).

  Never raises (except for a missing math-verify, a set-up error). Within `timeout` seconds in
  every mode: math-verify's SIGALRM timeout on a main thread, a trace-function deadline on other
  threads, and everywhere the input guards for C-level work no signal could interrupt.
  """
  if pred is None or gold is None:
    return False
  pred, gold = str(pred), str(gold)
  if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
    return pred.strip() == gold.strip()  # no answer is that long; keep every regex linear
  try:
    pred, gold = _normalize(pred), _normalize(gold)
    if not pred or not gold:
      return False
    gold_letter = choice_letter(gold, with_text=True)
    if gold_letter is not None:
      return choice_letter(pred, with_text=True) == gold_letter
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
      return numbers_equal(p, g)
    if _text_key(pred) == _text_key(gold):
      return True
    if unsafe_for_sympy(pred) or unsafe_for_sympy(gold):
      return False
    with _thread_deadline(timeout):
      return _sympy_equal(pred, gold, timeout)
  except ImportError:
    raise
  except _Overrun:
    return False
  except Exception:  # a verifier must never take the training loop down
    return False


def score_math(response: str, example: Mapping[str, Any] | str, *, timeout: float | None = 3.0) -> float:
  """1.0 iff the answer extracted from `response` equals the example's "answer", else 0.0.

  The gold may be a bare answer ("\\frac{1}{2}", "$\\frac{1}{2}$") or a solution with boxes.
  """
  gold = example["answer"] if isinstance(example, Mapping) else example
  if not isinstance(response, str) or len(response) > MAX_RESPONSE_CHARS:
    return 0.0
  return float(math_equal(extract_answer(response), reference_answer(str(gold)), timeout=timeout))
