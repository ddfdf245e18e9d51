"""Plain numbers and multiple-choice letters, compared in Python without SymPy (fast and exact).

A number is read with its unit: 12, -3, 1,000, 10,\\!080, 0.5, .5, 3/4, \\frac{3}{4}, 1.5e3,
1.5\\times10^{3}, 50\\%, \\$5, "5 cm", "5\\text{ pm}". Two numbers are equal when

- their units agree, or only one side states a unit (a gold "5" accepts "5 cm"; "5 pm" != "5 am");
- and their values agree: exactly when both are exact (integers, fractions); otherwise, for a
  written decimal, when the decimal is the other value correctly rounded to its last place and
  shows at least four significant digits (0.3333 == 1/3, but 0.333 != 1/3, as in Hendrycks et
  al.'s MATH grader), or when |a - b| <= 1e-6 max(|a|, |b|) (relative, so 1.16e-7 != 7.25e-11)
  and less than one unit of each decimal's last place (so 1000000.5 != 1000000);
- a percentage may be read as its number or as a fraction (50% == 50 == 0.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

REL_TOL = Fraction(1, 10**6)
MIN_ROUNDED_DIGITS = 4


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


def _rounds_to(written: Number, value: Fraction) -> bool:
  """Whether `written` (a decimal) is `value` rounded half-up to its last written place."""
  if written.exact or written.digits < MIN_ROUNDED_DIGITS or written.places > 20:
    return False
  scale = Fraction(10) ** written.places
  mag = abs(value) * scale
  rounded = (mag.numerator * 2 + mag.denominator) // (2 * mag.denominator)
  return Fraction(rounded) / scale == abs(written.value) and (value < 0) == (written.value < 0)


def values_close(a: Fraction, b: Fraction) -> bool:
  """|a - b| <= REL_TOL * max(|a|, |b|)."""
  return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def _within_last_place(written: Number, value: Fraction) -> bool:
  """|written - value| < one unit of the decimal's last written place (exact numbers: always):
  1000000.5 is not 1000000, though they agree to a relative 5e-7."""
  return written.exact or abs(written.value - value) < Fraction(10) ** -written.places


def numbers_equal(pred: Number, gold: Number) -> bool:
  """Equality of two written numbers (the rules of the module docstring)."""
  if pred.unit and gold.unit and pred.unit != gold.unit:
    return False
  exact = pred.exact and gold.exact
  for a in {pred.value, pred.value / 100} if pred.percent else {pred.value}:
    for b in {gold.value, gold.value / 100} if gold.percent else {gold.value}:
      if a == b:
        return True
      close = values_close(a, b) and _within_last_place(pred, b) and _within_last_place(gold, a)
      if not exact and (close or _rounds_to(pred, b) or _rounds_to(gold, a)):
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
