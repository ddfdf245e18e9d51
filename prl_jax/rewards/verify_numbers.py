"""Plain numbers and multiple-choice letters, compared in Python without SymPy (fast and exact).

A number is read with its unit: 12, -3, 1,000, 10,\\!080, 0.5, .5, 3/4, \\frac{3}{4}, 1.5e3,
1.5\\times10^{3}, 50\\%, \\$5, "5 cm", "5\\text{ pm}". Two numbers are equal when

- their units agree, or only one side states a unit (a gold "5" accepts "5 cm"; "5 pm" != "5 am");
- and their values agree: exactly when both can be written exactly (integers, fractions with a
  finite decimal expansion, decimals: 1.16e-7 != 7.25e-11, 346.0 != 346.000001); a decimal
  against a fraction with no finite expansion (1/3, 1/12) agrees when it is that fraction
  correctly rounded to its last place with at least six significant digits (0.333333 == 1/3;
  0.3333 != 1/3, as math-verify, PRM800K's grader and Hendrycks et al.'s MATH grader all
  decide), or within a relative 1e-6 (0.6666666666666666 == 2/3);
- a percentage may be read as its number or as a fraction (50% == 50 == 0.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

REL_TOL = Fraction(1, 10**6)
MIN_ROUNDED_DIGITS = 6  # the precision math-verify compares at (6 decimals of a value near 1)


@dataclass(frozen=True)
class Number:
  value: Fraction
  exact: bool  # an integer or a fraction (not a written decimal)
  places: int  # decimal places written (for the rounding rule)
  digits: int  # significant digits written
  percent: bool
  unit: str  # lower-case letters of the unit, "" for none


_INT_PART = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DECIMAL_RE = re.compile(rf"([+-]?)({_INT_PART}(?:\.\d*)?|\.\d+)")
_SCI_RE = re.compile(
  r"([+-]?)(\d+(?:\.\d+)?)\s*(?:[eE]|\\times\s*10\s*\^|\\cdot\s*10\s*\^|\*\s*10\s*\^)\s*\{?\s*([+-]?\d{1,4})\s*\}?"
)
_SLASH_RE = re.compile(r"([+-]?)(\d+)\s*/\s*(\d+)")
_FRAC_RE = re.compile(r"([+-]?)\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
# A unit: \text{...}-like groups or words after the number, optionally squared/cubed.
_UNIT_RE = re.compile(
  r"^(.*?[\d}])((?:\s*\\(?:text|mbox|textnormal|mathrm|textrm)\s*\{[^{}]*\}|\s+[a-zA-Z][a-zA-Z. ]*)"
  r"(?:\s*\^\s*\{?\d\}?)?)$"
)
_MAX_DIGITS = 300


def _unit_key(unit: str) -> str:
  """The letters of a unit, lower-cased: "\\text{ P.M.}" -> "pm", "cm^2" -> "cm2"."""
  unit = re.sub(r"\\[a-zA-Z]+", "", unit)
  return re.sub(r"[^a-z0-9]", "", unit.lower())


def _decimal(sign: str, digits: str) -> tuple[Fraction, int, int]:
  """(value, decimal places, significant digits) of a written decimal like 1,000.50."""
  digits = digits.replace(",", "")
  whole, _, frac = digits.partition(".")
  value = Fraction(digits.rstrip(".") or "0")
  significant = len((whole + frac).lstrip("0")) or 1
  return (-value if sign == "-" else value), len(frac), significant


_NOT_UNITS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "mod", "and", "or", "i", "e"}


def _is_unit(text: str) -> bool:
  """Whether the text after a number is a unit: a \\text{} group, or a word of two or more
  letters that is not mathematics ("5 x" is 5x, "5 pi" is 5pi, "1e5" is a number)."""
  text = text.strip()
  if text.startswith("\\"):
    return True
  first = re.match(r"[a-zA-Z]+", text)
  return bool(first) and len(first[0]) >= 2 and first[0].lower() not in _NOT_UNITS


def parse_number(s: str) -> Number | None:
  """The number written in `s` (already normalised), or None for anything else."""
  s = s.strip()
  percent = s.endswith("%") or s.endswith("percent")
  s = re.sub(r"\s*(?:%|percent)$", "", s)
  unit = ""
  if (m := _UNIT_RE.match(s)) and _is_unit(m[2]):
    s, unit = m[1], _unit_key(m[2])
  s = s.strip().lstrip("$").rstrip("€£¥").strip()
  if re.fullmatch(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):
    s = s.replace(" ", "")
  if len(s) > _MAX_DIGITS or not s:
    return None
  if m := _SCI_RE.fullmatch(s):
    mantissa, places, digits = _decimal(m[1], m[2])
    exponent = int(m[3])
    value = mantissa * Fraction(10) ** exponent
    return Number(value, False, places - exponent, digits, percent, unit)
  if (m := _FRAC_RE.fullmatch(s)) or (m := _SLASH_RE.fullmatch(s)):
    groups = [g for g in m.groups()[1:] if g is not None]
    num, den = int(groups[0]), int(groups[1])
    if den == 0:
      return None
    return Number(Fraction(-num if m[1] == "-" else num, den), True, 0, 0, percent, unit)
  if m := _DECIMAL_RE.fullmatch(s):
    value, places, digits = _decimal(m[1], m[2])
    return Number(value, places == 0, places, digits, percent, unit)
  return None


def rounds_to(written: Number, value: Fraction, *, exact_value: bool = True) -> bool:
  """Whether `written` (a decimal) is `value` rounded half-up to its last written place, where
  `value` has no finite decimal expansion (1/3, 2/3): a value that can be written exactly
  (346.000001) is not paid by a rounding of it (346.0). exact_value=False: `value` is an
  irrational number's 30-digit approximation, never written exactly."""
  if written.exact or written.digits < MIN_ROUNDED_DIGITS or written.places > 20:
    return False
  if exact_value and _terminates(value):
    return False
  scale = Fraction(10) ** written.places
  mag = abs(value) * scale
  rounded = (mag.numerator * 2 + mag.denominator) // (2 * mag.denominator)
  return Fraction(rounded) / scale == abs(written.value) and (value < 0) == (written.value < 0)


def values_close(a: Fraction, b: Fraction) -> bool:
  """|a - b| <= REL_TOL * max(|a|, |b|)."""
  return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def _terminates(value: Fraction) -> bool:
  """Whether `value` has a finite decimal expansion (its denominator is 2^a 5^b)."""
  den = value.denominator
  for p in (2, 5):
    while den % p == 0:
      den //= p
  return den == 1


def numbers_equal(pred: Number, gold: Number) -> bool:
  """Equality of two written numbers (the rules of the module docstring)."""
  if pred.unit and gold.unit and pred.unit != gold.unit:
    return False
  exact = pred.exact and gold.exact
  for a in {pred.value, pred.value / 100} if pred.percent else {pred.value}:
    for b in {gold.value, gold.value / 100} if gold.percent else {gold.value}:
      if a == b:
        return True
      if exact or (_terminates(a) and _terminates(b)):
        continue  # both can be written exactly: equal only when equal
      if values_close(a, b) or rounds_to(pred, b) or rounds_to(gold, a):
        return True
  return False


# ----------------------------------------------------------------------------- choices

_LETTER_ONLY = re.compile(r"\(?([A-E])\)?\.?")
_LETTER_WITH_TEXT = re.compile(r"(?:\(([A-E])\)|([A-E])[.:)])\s*\S.*", re.DOTALL)


def choice_letter(s: str, *, with_text: bool) -> str | None:
  """The option letter A-E of "D", "(D)", "\\text{(D)}", and with_text also "(D) (2,0)", "D. 12"."""
  s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s).strip()
  if m := _LETTER_ONLY.fullmatch(s):
    return m[1]
  if with_text and (m := _LETTER_WITH_TEXT.fullmatch(s)):
    return m[1] or m[2]
  return None
