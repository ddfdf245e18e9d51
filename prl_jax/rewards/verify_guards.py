"""Input guards: refuse answers that could make SymPy hang or exhaust memory before it sees them.

math-verify stops slow parsing with SIGALRM, which exists only in a process's main thread and
cannot interrupt C-level big-integer arithmetic (a huge power or factorial), so an answer scored
from a worker thread with no process pool would never return. Every such answer is recognised
here, from its text, in time linear in its length: the magnitude of each power's exponent and of
each factorial's argument is estimated in floating point (which overflows to inf, never hangs).
The guards err on the side of refusing: a refused answer scores 0.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence

MAX_ANSWER_CHARS = 512  # answers longer than this are compared as strings only
MAX_DIGITS = 300  # a longer digit run is not an answer
_MAX_EXPONENT = 10_000  # larger exponents build numbers of unbounded size
_MAX_RESULT_DIGITS = 10_000  # the size of a power's value that SymPy may still compute
_MAX_FACTORIAL = 3_000  # 3000! has ~9,100 digits: SymPy computes it in milliseconds
_MAX_NESTING = 20
_MAX_SYMBOLIC_EXPONENT = 40  # (x+1)^{200} - (x^{200}+1) takes SymPy seconds to simplify
_MAX_TERMS = 1_000  # sums and products SymPy may expand term by term
_MAX_BINOMIAL = 10_000

_POWER_CHAIN_RE = re.compile(r"(\d+(?:\.\d+)?)((?:\^-?\d+(?:\.\d+)?)+)")
_OPEN, _CLOSE = "({[", ")}]"
_LIMITS_RE = re.compile(r"\\(?:sum|prod|int|oint|bigcup|bigcap)\s*_\s*$")


def _nesting_depth(s: str) -> int:
  """Deepest nesting of (), [] and {}; unbalanced closers are ignored."""
  depth = deepest = 0
  for ch in s:
    if ch in _OPEN:
      depth += 1
      deepest = max(deepest, depth)
    elif ch in _CLOSE:
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


# ----------------------------------------------------------------------------- numeric magnitude

_FRAC_RE = re.compile(r"\\[dtc]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_ALLOWED = re.compile(r"[0-9.+\-*/() ]*")


def _safe_pow(a: float, b: float) -> float:
  """a**b in floats, inf when it would overflow (never builds a big integer)."""
  if a == 0 or abs(a) == 1:
    return abs(a)
  if abs(b) * math.log10(abs(a)) > 300:
    return math.inf if b > 0 else 0.0
  return abs(a) ** b


def _eval_node(node: ast.AST) -> float:
  """Magnitude of a numeric expression tree in floats (inf on overflow); ValueError otherwise."""
  if isinstance(node, ast.Expression):
    return _eval_node(node.body)
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
    return float(node.value) if abs(node.value) < 1e300 else math.inf
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    return _eval_node(node.operand)
  if isinstance(node, ast.BinOp):
    a, b = _eval_node(node.left), _eval_node(node.right)
    if isinstance(node.op, ast.Pow):
      return _safe_pow(a, b)
    if isinstance(node.op, (ast.Add, ast.Sub)):
      return a + b  # magnitudes: an upper bound
    if isinstance(node.op, ast.Mult):
      return a * b
    if isinstance(node.op, ast.Div):
      return a / b if b else math.inf
  raise ValueError("not a numeric expression")


def _numeric_magnitude(expr: str) -> float | None:
  """An upper bound on |expr| for a purely numeric LaTeX expression (digits, + - * /, \\cdot,
  \\times, \\frac, ^, groups), inf when huge; None when it has anything else (letters)."""
  s = expr.replace("\\cdot", "*").replace("\\times", "*").replace("\\left", "").replace("\\right", "")
  for _ in range(_MAX_NESTING):
    s, n = _FRAC_RE.subn(r"((\1)/(\2))", s)
    if not n:
      break
  s = s.replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")").replace("^", "**")
  if "!" in s:
    return math.inf  # a factorial inside an exponent or argument: refuse
  if not s.strip() or not _ALLOWED.fullmatch(s):
    return None
  try:
    return _eval_node(ast.parse(s.replace("** *", "**"), mode="eval"))
  except (SyntaxError, ValueError, RecursionError, OverflowError):
    return math.inf if re.search(r"\d", s) and "**" in s else None


def _group_before(s: str, end: int) -> int:
  """Start index of the atom ending just before s[end]: a digit run or a bracketed group."""
  i = end - 1
  while i >= 0 and s[i] == " ":
    i -= 1
  if i < 0:
    return end
  if s[i] in _CLOSE:
    depth = 0
    while i >= 0:
      depth += s[i] in _CLOSE
      depth -= s[i] in _OPEN
      if depth == 0:
        return i
      i -= 1
    return 0
  while i >= 0 and (s[i].isdigit() or s[i] == "."):
    i -= 1
  return i + 1


def _group_after(s: str, start: int) -> int:
  """End index (exclusive) of the atom starting at s[start]: a digit run, a group or one char."""
  i = start
  while i < len(s) and s[i] == " ":
    i += 1
  if i >= len(s):
    return i
  if s[i] in _OPEN:
    depth = 0
    while i < len(s):
      depth += s[i] in _OPEN
      depth -= s[i] in _CLOSE
      if depth == 0:
        return i + 1
      i += 1
    return len(s)
  j = i
  if s[j] in "+-":
    j += 1
  while j < len(s) and (s[j].isdigit() or s[j] == "."):
    j += 1
  return j if j > i else i + 1


def _binomial_too_big(n_text: str, k_text: str) -> bool:
  """Whether C(n, k) has more than _MAX_RESULT_DIGITS digits (or n is huge and k unknown)."""
  n, k = _numeric_magnitude(n_text), _numeric_magnitude(k_text)
  if n is None:
    return False
  if k is None or not math.isfinite(n):
    return n > _MAX_BINOMIAL
  k = min(k, max(n - k, 0.0))
  digits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(10)
  return digits > _MAX_RESULT_DIGITS


def _atom_start(s: str, end: int) -> int:
  """Start of the operand ending at s[end], a power's base included ("10^{7}" in "10^{7}!")."""
  start = _group_before(s, end)
  while 0 < start <= end and s[:start].rstrip().endswith("^"):
    start = _group_before(s, len(s[:start].rstrip()) - 1)
  return start


def _huge_atoms(s: str) -> str | None:
  """Why a power, factorial, binomial, sum or product in `s` is too large to evaluate, or None."""
  for m in re.finditer(r"(?<!\\)!(?!=)", s):
    value = _numeric_magnitude(s[_atom_start(s, m.start()) : m.start()])
    own = _numeric_magnitude(s[_group_before(s, m.start()) : m.start()])
    # "2^{10}!" may read 2^(10!): a factorial in an exponent is bounded like an exponent.
    in_exponent = s[: _group_before(s, m.start())].rstrip().endswith("^")
    if (value is not None and value > _MAX_FACTORIAL) or (in_exponent and own is not None and own > 7):
      return "a factorial too large to evaluate"
  for m in re.finditer(r"\\[dt]?binom\s*", s):
    n_end = _group_after(s, m.end())
    if _binomial_too_big(s[m.end() : n_end], s[n_end : _group_after(s, n_end)]):
      return "a binomial too large to evaluate"
  for m in re.finditer(r"\{([^{}]*)\\choose([^{}]*)\}", s):
    if _binomial_too_big(m[1], m[2]):
      return "a binomial too large to evaluate"
  for m in re.finditer(r"\\(?:sum|prod)\s*_\s*(?:\{[^{}]*\}|\S)\s*\^", s):
    limit = _numeric_magnitude(s[m.end() : _group_after(s, m.end())])
    if limit is not None and limit > _MAX_TERMS:
      return "a sum or product with too many terms"
  for m in re.finditer(r"\^|\*\*", s):
    exponent = s[m.end() : _group_after(s, m.end())]
    e = _numeric_magnitude(exponent)
    if e is None:
      continue
    base_start = _group_before(s, m.start())
    if _LIMITS_RE.search(s[:base_start]):
      continue  # the upper limit of a sum, product or integral (bounded below), not a power
    base = _numeric_magnitude(s[base_start : m.start()])
    if base is None and e > _MAX_SYMBOLIC_EXPONENT:
      return "a symbolic power too large to simplify"
    if e > _MAX_EXPONENT or e * math.log10(max(base or 10.0, 2.0)) > _MAX_RESULT_DIGITS:
      return "a power too large to evaluate"
  return None


def unsafe_for_sympy(answer: str) -> str | None:
  """Why `answer` must not reach SymPy (a reason string), or None if it looks harmless."""
  if len(answer) > MAX_ANSWER_CHARS:
    return f"longer than {MAX_ANSWER_CHARS} characters"
  if re.search(rf"\d{{{MAX_DIGITS + 1}}}", answer):
    return f"a number with more than {MAX_DIGITS} digits"
  if _nesting_depth(answer) > _MAX_NESTING:
    return f"nested deeper than {_MAX_NESTING}"
  # Right-associative chains such as 9**9**9 and 9^{9^{9}}: flattened, which only over-estimates.
  flat = re.sub(r"[{}()\s]|\\left|\\right", "", answer.replace("**", "^"))
  for m in _POWER_CHAIN_RE.finditer(flat):
    if _power_too_big(float(m[1]), [float(e) for e in m[2].split("^")[1:]]):
      return "a power too large to evaluate"
  return _huge_atoms(answer.replace("\\left", "").replace("\\right", ""))
