"""Math answers: extract the final answer of a response and compare it with the gold answer.

1. `extract_answer(text)` pulls the final answer out of a response: the last \\boxed{...}
   (nested braces), else the last "#### N", else the last "The answer is X", else the last number.
2. `math_equal(pred, gold)` compares two answers. Plain numbers (integers, decimals, fractions,
   \\frac, percentages, thousands separators, scientific notation, units) are compared exactly in
   Python; text answers by a normalised string; everything else by math-verify on SymPy. Inputs
   that could make SymPy hang or explode (huge powers, factorials, giant numbers, long or deeply
   nested input) are refused before SymPy sees them.

`score_math` is both as one scorer; `prl_jax.rewards.verify.Verifier` runs it (and the synthetic
tasks' checkers) safely over a batch.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

# Responses longer than this score 0 without being read (about 100k tokens of text).
MAX_RESPONSE_CHARS = 400_000
# Answers longer than this are compared as strings only, never parsed by SymPy.
MAX_ANSWER_CHARS = 512
_MAX_DIGITS = 300  # a longer digit run is not an answer, and int() refuses > 4300 digits anyway
_MAX_EXPONENT = 10_000  # larger literal exponents build numbers of unbounded size
_MAX_RESULT_DIGITS = 10_000  # the size of a power's value that SymPy may still compute
_MAX_FACTORIAL = 1_000
_MAX_NESTING = 20
_TAIL_CHARS = 2_000  # the "final number" fallback looks at the end of the response only

# ----------------------------------------------------------------------------- extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?[ \t]*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def _braced_group(text: str, start: int, limit: int = 20_000) -> str | None:
  """Contents of the {...} group opening at text[start], or None if unbalanced within `limit`."""
  depth = 0
  i, end = start, min(len(text), start + limit)
  while i < end:
    ch = text[i]
    if ch == "\\":
      i += 2  # an escaped \{ or \} is a literal brace, not a group delimiter
      continue
    if ch == "{":
      depth += 1
    elif ch == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1 : i]
    i += 1
  return None


def last_boxed(text: str, tries: int = 8) -> str | None:
  """Contents of the last well-formed \\boxed{...} or \\fbox{...}; also "\\boxed 5".

  Only the last few occurrences are tried, so a text full of broken boxes stays linear time.
  """
  end = len(text)
  for _ in range(tries):
    hits = [(text.rfind(cmd, 0, end), cmd) for cmd in _BOX_COMMANDS]
    pos, cmd = max(hits)
    if pos < 0:
      return None
    j = pos + len(cmd)
    while j < len(text) and text[j] == " ":
      j += 1
    if j < len(text) and text[j] == "{":
      content = _braced_group(text, j)
      if content is not None:
        return content
    elif j > pos + len(cmd) and j < len(text):
      m = re.match(r"[^\s$]+", text[j : j + 200])
      if m:
        return m.group(0)
    end = pos
  return None


def _after_marker(text: str, pos: int) -> str:
  """The rest of the line after `pos`, or the next non-empty line when that is empty."""
  line_end = text.find("\n", pos)
  rest = text[pos : line_end if line_end >= 0 else len(text)].strip()
  if not rest and line_end >= 0:
    following = text[line_end + 1 : line_end + 2000].splitlines()
    rest = next((ln.strip() for ln in following if ln.strip()), "")
  return rest


def _clean_answer(answer: str) -> str:
  """Strip sentence punctuation and math delimiters around an extracted answer."""
  answer = answer.strip().rstrip(".").strip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
      answer = answer[len(left) : len(answer) - len(right)].strip()
  return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
  """The final answer stated in `text`, or None.

  Priority: the last \\boxed{...} (nested braces allowed), the last "#### N" (GSM8K), the last
  "The answer is X" / "Final answer: X", the last number in the final 2,000 characters.
  Linear in the length of the text.
  """
  if not text:
    return None
  boxed = last_boxed(text)
  if boxed is not None:
    return _clean_answer(boxed) or None
  pos = text.rfind("####")
  if pos >= 0:
    return _clean_answer(_after_marker(text, pos + 4)) or None
  last = None
  for last in _ANSWER_IS_RE.finditer(text):
    pass
  if last is not None:
    answer = _clean_answer(_after_marker(text, last.end()))
    if answer:
      return answer
  numbers = _NUMBER_RE.findall(text[-_TAIL_CHARS:])
  return numbers[-1] if numbers else None


# ----------------------------------------------------------------------------- normalisation

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad\b")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")


def _normalize(s: str) -> str:
  """Remove presentation-only LaTeX so equal answers look alike; keeps the mathematical content."""
  s = s.strip().replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = s.replace("{,}", ",").replace("\\left", "").replace("\\right", "").replace("\\%", "%")
  s = s.replace("\\$", "").replace("$", "")
  s = _SPACING.sub(" ", s)
  s = _DEGREES.sub("", s)
  return s.strip().rstrip(".").strip()


def _text_key(s: str) -> str:
  """A string key for text answers: wrappers removed, case and spacing ignored, "(B)" == "B"."""
  s = _TEXT_WRAPPERS.sub(r"\1", _normalize(s)).lower()
  s = re.sub(r"\s+", "", s)
  m = re.fullmatch(r"\(([a-z])\)", s)
  return m.group(1) if m else s


_INT_PART = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DECIMAL_RE = re.compile(rf"([+-]?)({_INT_PART}(?:\.\d*)?|\.\d+)")
_SCI_RE = re.compile(
  r"([+-]?\d+(?:\.\d+)?)\s*(?:[eE]|\\times\s*10\s*\^|\\cdot\s*10\s*\^|\*\s*10\s*\^)\s*\{?\s*([+-]?\d{1,4})\s*\}?"
)
_SLASH_RE = re.compile(r"([+-]?)(\d+)\s*/\s*(\d+)")
_FRAC_RE = re.compile(r"([+-]?)\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
# A unit is a \text{} group or words of two or more letters after a space ("5 cm", not "5 x").
_UNIT_RE = re.compile(r"^(.*?\d)\s*(?:\\text\s*\{[^{}]*\}|\\mbox\s*\{[^{}]*\}|\s[a-zA-Z]{2,}(?:\s+[a-zA-Z]+)*)$")


def _parse_number(s: str) -> tuple[Fraction, bool, bool] | None:
  """(value, exact, percent) of a plain number, or None for anything else.

  Accepts 12, -3, 1,000, 0.5, .5, 3/4, \\frac{3}{4}, \\frac34, 1.5e3, 1.5\\times10^{3}, 50%,
  and a trailing unit ("5 cm", "5\\text{ cm}") or leading currency sign. `exact` is False for
  decimals, which are then compared to 6 decimal places like math-verify does.
  """
  s = _normalize(s)
  percent = s.endswith("%")
  s = s.rstrip("%").strip()
  m = _UNIT_RE.match(s)
  if m:
    s = m.group(1)
  s = s.replace(" ", "") if re.fullmatch(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s) else s
  if len(s) > _MAX_DIGITS:
    return None
  if m := _SCI_RE.fullmatch(s):
    mantissa, exponent = Fraction(m[1]), int(m[2])
    return mantissa * Fraction(10) ** exponent, "." not in m[1], percent
  if m := _FRAC_RE.fullmatch(s):
    num, den = int(m[2] or m[3]), int(m[4] or m[5])
    return (None if den == 0 else (Fraction(-num if m[1] == "-" else num, den), True, percent))
  if m := _SLASH_RE.fullmatch(s):
    num, den = int(m[2]), int(m[3])
    return (None if den == 0 else (Fraction(-num if m[1] == "-" else num, den), True, percent))
  if m := _DECIMAL_RE.fullmatch(s):
    digits = m[2].replace(",", "")
    value = Fraction(digits.rstrip(".") or "0")
    return (-value if m[1] == "-" else value), "." not in digits, percent
  return None


def _numbers_equal(pred: tuple[Fraction, bool, bool], gold: tuple[Fraction, bool, bool]) -> bool:
  """Exact equality of rationals, to 6 decimals if either is a decimal; "50%" may mean 0.5."""
  (p, p_exact, p_pct), (g, g_exact, g_pct) = pred, gold
  exact = p_exact and g_exact
  for a in {p, p / 100} if p_pct else {p}:
    for b in {g, g / 100} if g_pct else {g}:
      if a == b or (not exact and round(a, 6) == round(b, 6)):
        return True
  return False


# ----------------------------------------------------------------------------- guards

_POWER_CHAIN_RE = re.compile(r"(\d+(?:\.\d+)?)((?:\^-?\d+(?:\.\d+)?)+)")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")


def _nesting_depth(s: str) -> int:
  """Deepest nesting of (), [] and {}; unbalanced closers are ignored."""
  depth = deepest = 0
  for ch in s:
    if ch in "([{":
      depth += 1
      deepest = max(deepest, depth)
    elif ch in ")]}":
      depth = max(0, depth - 1)
  return deepest


def _power_too_big(base: float, exponents: Sequence[float]) -> bool:
  """Whether base^e1^e2^... (right-associative) needs more than _MAX_RESULT_DIGITS digits."""
  value = abs(exponents[-1])
  for b in [base, *exponents[:-1]][::-1]:
    if value > _MAX_EXPONENT:
      return True
    digits = value * math.log10(max(abs(b), 2.0))
    if digits > _MAX_RESULT_DIGITS:
      return True
    value = abs(b) ** value if digits < 300 else math.inf
  return False


def unsafe_for_sympy(answer: str) -> str | None:
  """Why `answer` must not reach SymPy (a reason string), or None if it looks harmless.

  Powers are checked on a flattened copy (braces, parentheses and spaces removed, ** read as ^),
  which only ever over-estimates the size of a power, so the check errs on the side of refusing.
  """
  if len(answer) > MAX_ANSWER_CHARS:
    return f"longer than {MAX_ANSWER_CHARS} characters"
  if re.search(rf"\d{{{_MAX_DIGITS + 1}}}", answer):
    return f"a number with more than {_MAX_DIGITS} digits"
  if _nesting_depth(answer) > _MAX_NESTING:
    return f"nested deeper than {_MAX_NESTING}"
  flat = re.sub(r"[{}()\s]|\\left|\\right", "", answer.replace("**", "^"))
  for m in _POWER_CHAIN_RE.finditer(flat):
    exponents = [float(e) for e in m[2].split("^")[1:]]
    if _power_too_big(float(m[1]), exponents):
      return "a power too large to evaluate"
  if any(int(n) > _MAX_FACTORIAL for n in _FACTORIAL_RE.findall(flat)):
    return "a factorial too large to evaluate"
  return None


# ----------------------------------------------------------------------------- comparison


def _signal_timeout(timeout: float | None) -> int | None:
  """math-verify's SIGALRM timeout in whole seconds, or None off the main thread (it would raise)."""
  if timeout is None or threading.current_thread() is not threading.main_thread():
    return None
  return max(1, int(timeout))


def _sympy_equal(pred: str, gold: str, timeout: float | None) -> bool:
  """math-verify on the two answers wrapped in \\boxed{} so its LaTeX extractor takes them whole."""
  from math_verify import parse, verify  # imported lazily: SymPy takes a second to import

  seconds = _signal_timeout(timeout)
  gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=seconds)
  pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=seconds)
  if not gold_parsed or not pred_parsed:
    return False
  return bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds))


def math_equal(pred: str | None, gold: str | None, *, timeout: float | None = 3.0) -> bool:
  """Whether the answer `pred` equals the reference answer `gold` (answers, not whole responses).

  Plain numbers never reach SymPy; equal text keys ("\\text{Monday}" vs "monday") match at once;
  otherwise math-verify decides (symbolic equality, intervals, tuples, sets, sqrt, pi, ...), with
  its own timeout of `timeout` seconds when called from a main thread. Never raises.
  """
  if pred is None or gold is None:
    return False
  pred, gold = str(pred), str(gold)
  if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
    return pred.strip() == gold.strip()  # no answer is that long; keep every regex linear
  try:
    p, g = _parse_number(pred), _parse_number(gold)
    if p is not None and g is not None:
      return _numbers_equal(p, g)
    pk, gk = _text_key(pred), _text_key(gold)
    if pk and pk == gk:
      return True
    if unsafe_for_sympy(pred) or unsafe_for_sympy(gold):
      return False
    return _sympy_equal(_normalize(pred), _normalize(gold), timeout)
  except ImportError:
    raise  # a missing math-verify is a set-up error, not a wrong answer
  except Exception:  # a verifier must never take the training loop down
    return False


def score_math(response: str, example: Mapping[str, Any] | str, *, timeout: float | None = 3.0) -> float:
  """1.0 iff the answer extracted from `response` equals the example's "answer", else 0.0."""
  gold = example["answer"] if isinstance(example, Mapping) else example
  if len(response) > MAX_RESPONSE_CHARS:
    return 0.0
  return float(math_equal(extract_answer(response), gold, timeout=timeout))
