"""Answer extraction: the final answer a response states, and the reference answer of a gold text.

The priority follows math-verify's extraction (Hugging Face Math-Verify, `parse` with its default
LaTeX and expression targets), which the reference graders share in spirit (Hendrycks et al.'s
MATH `last_boxed_only_string`, lm-evaluation-harness minerva_math's "Final Answer: The final
answer is X. I hope it is correct."):

1. "final answer is X" written after the last box when X is a math span or a number (the
   minerva format restating a result), else \\boxed{...} / \\fbox{...}: the last one, joined
   with the boxes just before it when only a connector separates them ("\\boxed{-2} and
   \\boxed{1}" reads "-2, 1"; boxes separated by a sentence, such as a correction, are not);
2. "####" (GSM8K), "final answer is X" / "the answer is X": the first math span after the
   marker, else what its sentence states ("The largest $n$ is 34." reads 34);
3. the last math span ($...$, \\(...\\), \\[...\\]) of the response, or a plain number written
   after it outside LaTeX; never a digit run inside LaTeX, so "$\\frac{1}{3}$" never reads as 3;
4. a short response of bare LaTeX with no words is the answer itself.

Markers, spans and numbers are looked for in the last 4,000 characters, boxes among the last 16
in the last 200,000, so the time is bounded whatever the length of the response.
"""

from __future__ import annotations

import re

from prl_jax.data.boxed import COMMAND_RE as _COMMAND_RE
from prl_jax.data.boxed import boxed_answer  # noqa: F401  (part of this module's interface)
from prl_jax.data.boxed import boxes as _boxes
from prl_jax.data.boxed import clean_answer as _clean_answer

MAX_RESPONSE_CHARS = 400_000  # responses longer than this score 0 unread
_TAIL_CHARS = 4_000  # markers, spans and numbers are looked for near the end only
_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\\)\$((?:\\\$|[^$\n])+?)(?<!\\)\$", re.DOTALL)
_MARKER_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n|\s+I hope\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![A-Za-z\d.,])-?(?:\d{1,3}(?:(?:,| (?=\d{3}(?![\d,.])))\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)%?")


def _spans(text: str) -> list[str]:
  """The contents of the math spans of `text`, in order."""
  return [next(g for g in m.groups() if g is not None) for m in _SPAN_RE.finditer(text)]


def _stated(sentence: str) -> str | None:
  """The answer a sentence states: a leading math span, a short phrase as it is, else what
  follows its last " is " ("The largest $n$ is 34"), reduced to its last math span or number."""
  sentence = sentence.strip().strip('"*').strip()
  if not sentence:
    return None
  spans = _spans(sentence)
  if spans and sentence.startswith(("$", "\\(", "\\[")):
    return _clean_answer(spans[0]) or None
  if len(sentence.split()) <= 4 and not re.search(r"\b(?:is|are|was)\b", sentence):
    return _clean_answer(sentence) or None
  tail = re.split(r"\s(?:is|are|was|equals)\s", sentence)[-1]
  return _last_stated(tail) if tail is not sentence else _last_stated(sentence)


def _after_marker(text: str) -> str | None:
  """The answer stated after a marker such as "The final answer is"."""
  rest = text.lstrip(" \t:*")
  if rest.startswith("\n"):  # "The answer is\n42": the next non-empty line
    rest = rest.strip()
  if rest.startswith(("$", "\\(", "\\[")) and (spans := _spans(rest[:2000])):
    return _clean_answer(spans[0]) or None
  m = _SENTENCE_END.search(rest)
  return _stated(rest[: m.start()] if m else rest)


def _last_stated(text: str) -> str | None:
  """The last math span or the last plain number outside math, whichever comes later; a text of
  bare LaTeX with no delimiters counts only when short (then it is the answer itself)."""
  spans = list(_SPAN_RE.finditer(text))
  outside = _SPAN_RE.sub(lambda m: " " * len(m.group(0)), text)
  numbers = [] if "\\" in outside else list(_NUMBER_RE.finditer(outside))
  if numbers and (not spans or numbers[-1].start() > spans[-1].end()):
    return numbers[-1].group(0).replace(" ", "")
  if spans:
    return _clean_answer(next(g for g in spans[-1].groups() if g is not None)) or None
  bare = text.strip()
  if "\\" in outside and len(bare) <= 100 and not re.search(r"[a-zA-Z]{2}", _COMMAND_RE.sub("", bare)):
    return _clean_answer(bare) or None  # the whole (short, wordless) response is the answer
  return None


def extract_answer(text: str) -> str | None:
  """The final answer stated in `text`, or None (the priority of the module docstring)."""
  if not text or len(text) > MAX_RESPONSE_CHARS:
    return None
  tail = text[-_TAIL_CHARS:]
  last = None
  for last in _MARKER_RE.finditer(tail):
    pass
  boxes = _boxes(text)
  # "Final Answer: The final answer is $X$" after the last box restates the answer (minerva).
  if last is not None and (not boxes or len(text) - len(tail) + last.start() > boxes[-1][1]):
    answer = _after_marker(tail[last.end() :])
    # After a box, only a clear restatement (a math span or a number) overrides it.
    restated = tail[last.end() :].lstrip(" \t:*\n").startswith(("$", "\\(", "\\["))
    if answer and (not boxes or restated or _NUMBER_RE.fullmatch(answer)):
      return answer
  boxed = boxed_answer(text)
  if boxed is not None:
    return boxed
  pos = tail.rfind("####")
  if pos >= 0:
    return _after_marker(tail[pos + 4 :])
  if last is not None and (answer := _after_marker(tail[last.end() :])):
    return answer
  return _last_stated(tail)


def reference_answer(gold: str) -> str:
  """The answer of a gold text: its boxed answer if it has one (a whole solution), else the text
  without math delimiters ("$\\frac{1}{2}$" -> "\\frac{1}{2}", "$1$ and $2$" -> "1 and 2")."""
  gold = str(gold).strip()
  if "\\boxed" in gold or "\\fbox" in gold:
    boxed = boxed_answer(gold)
    if boxed:
      return boxed
  if len(gold) > 200 or _MARKER_RE.search(gold) or "####" in gold:  # a solution, not an answer
    stated = extract_answer(gold)
    if stated:
      return stated
  gold = _clean_answer(gold)
  if "$" in gold and not "\\$" in gold:
    gold = gold.replace("$", "")
  return gold.strip()
