"""\\boxed{...} answers in text: the boxes a text holds and the answer they state.

Used by both the data loaders (the gold answer of a MATH or Numina solution) and the answer
checker (`prl_jax.rewards.verify_extract`): the last box and the boxes connected to it
("\\boxed{-2} and \\boxed{1}" reads "-2, 1"), a box inside another being part of it.
"""

from __future__ import annotations

import re

MAX_BOXES = 16  # only the last boxes are read, so a text full of broken boxes stays linear

BOX_RE = re.compile(r"\\(?:boxed|fbox)")
COMMAND_RE = re.compile(r"\\[a-zA-Z]+")


def braced_group(text: str, start: int, limit: int = 20_000) -> str | None:
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


def boxes(text: str) -> list[tuple[int, int, str]]:
  """(start, end, contents) of the last well-formed boxes, in order; also "\\boxed 5"."""
  starts = [m for m in BOX_RE.finditer(text, max(0, len(text) - 200_000))][-MAX_BOXES:]
  found = []
  for m in starts:
    j = m.end()
    while j < len(text) and text[j] == " ":
      j += 1
    if j < len(text) and text[j] == "{":
      content = braced_group(text, j)
      if content is not None:
        found.append((m.start(), j + len(content) + 2, content))
    elif j > m.end() and j < len(text):
      word = re.match(r"[^\s$]+", text[j : j + 200])
      if word:
        found.append((m.start(), j + word.end(), word.group(0)))
  # A box inside another box is part of it, not a separate answer.
  return [b for b in found if not any(o[0] < b[0] and b[1] <= o[1] for o in found)]


def joinable(gap: str) -> bool:
  """Whether the text between two boxes only connects them: punctuation, spacing, math
  delimiters, and at most five short words one of which is "and"/"or" ("\\boxed{1} papers and
  \\boxed{2} bins"; not "\\boxed{1}, then \\boxed{2}", a correction)."""
  words = re.sub(r"[^a-z]+", " ", COMMAND_RE.sub(" ", gap).lower()).split()
  return len(gap) <= 80 and (not words or (len(words) <= 5 and bool({"and", "or"} & set(words))))


def boxed_answer(text: str) -> str | None:
  """The boxed answer: the last box and the boxes connected to it, joined by ", "."""
  found = boxes(text)
  if not found:
    return None
  group = [found[-1]]
  for prev in reversed(found[:-1]):
    if not joinable(text[prev[1] : group[0][0]]):
      break
    group.insert(0, prev)
  parts = [clean_answer(c) for _, _, c in group]
  return ", ".join(p for p in parts if p) or None


def clean_answer(answer: str) -> str:
  """Strip sentence punctuation and math delimiters around an extracted answer."""
  answer = answer.strip().rstrip(".").strip()
  while answer.startswith(("\\boxed{", "\\fbox{")) and answer.endswith("}"):
    inner = braced_group(answer, answer.index("{"))
    if inner is None or len(inner) != len(answer) - answer.index("{") - 2:
      break
    answer = inner.strip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
      answer = answer[len(left) : len(answer) - len(right)].strip()
  return answer.rstrip(".").strip()
