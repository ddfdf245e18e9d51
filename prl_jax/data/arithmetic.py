"""Synthetic arithmetic chains: "37+58-19+4", solved one operation per line.

The task is the smallest setting where process rewards mean something: every line of a solution is
one checkable operation, so step-level correctness is known exactly (`step_correct`) while the
training signal stays the outcome (`check`). Difficulty is the number of operations; held-out
chains are longer than the training ones to measure length generalisation.

A solution looks like::

  37+58=95
  95-19=76
  76+4=80
  The answer is 80

With `*` enabled the usual precedence holds: products are reduced first, then sums left to right,
so the written steps agree with what any calculator returns for the question.

Everything is deterministic in (seed, difficulty): the random generator is seeded with a string,
which Python hashes with SHA-512 rather than the per-process salted hash.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from prl_jax.data import templates
from prl_jax.data.unseen import unseen_budget

TASK = "arithmetic"
TRAIN_OPS = (1, 4)
HELDOUT_OPS = (5, 8)

# Trailing blanks are matched as [ \t]*(?:\.[ \t]*)? rather than \s*\.?\s*: two adjacent optional
# runs over the same characters backtrack quadratically on a long run of spaces.
_ANSWER_RE = re.compile(r"The answer is[ \t]*(-?\d{1,30})[ \t]*(?:\.[ \t]*)?$", re.IGNORECASE | re.MULTILINE)
_STEP_RE = re.compile(r"^\s*(-?\d{1,30})\s*([+\-*])\s*(-?\d{1,30})\s*=\s*(-?\d{1,30})\s*$")
_TOKEN_RE = re.compile(r"\d+|[+\-*]")


def _apply(a: int, op: str, b: int) -> int:
  """One binary operation of the chain."""
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  raise ValueError(f"unknown operator {op!r}; arithmetic chains use + - *")


def parse_question(question: str) -> tuple[list[int], list[str]]:
  """Split "37+58-19+4" into operands [37, 58, 19, 4] and operators ["+", "-", "+"]."""
  compact = question.replace(" ", "")
  tokens = _TOKEN_RE.findall(compact)
  well_formed = (
    "".join(tokens) == compact
    and len(tokens) % 2 == 1
    and all(t.isdigit() for t in tokens[0::2])
    and all(t in "+-*" for t in tokens[1::2])
  )
  if not well_formed:
    raise ValueError(f"not an arithmetic chain: {question!r}; expected e.g. '37+58-19+4'")
  return [int(t) for t in tokens[0::2]], tokens[1::2]


def format_question(operands: Sequence[int], ops: Sequence[str]) -> str:
  """Inverse of `parse_question`."""
  out = [str(operands[0])]
  for op, x in zip(ops, operands[1:]):
    out += [op, str(x)]
  return "".join(out)


def solve_steps(operands: Sequence[int], ops: Sequence[str]) -> list[tuple[int, str, int, int]]:
  """The chain reduced one operation at a time as (a, op, b, result), products first."""
  values, pending = list(operands), list(ops)
  steps = []
  # Precedence: reduce the leftmost product until none is left, then sums from the left.
  while pending:
    i = pending.index("*") if "*" in pending else 0
    a, op, b = values[i], pending[i], values[i + 1]
    c = _apply(a, op, b)
    steps.append((a, op, b, c))
    values[i : i + 2] = [c]
    del pending[i]
  return steps


def evaluate(question: str) -> int:
  """Value of a chain with the usual precedence."""
  operands, ops = parse_question(question)
  steps = solve_steps(operands, ops)
  return steps[-1][3] if steps else operands[0]


def solve(question: str) -> str:
  """Step-by-step solution: one "a op b=c" per line, then "The answer is N"."""
  operands, ops = parse_question(question)
  steps = solve_steps(operands, ops)
  lines = [f"{a}{op}{b}={c}" for a, op, b, c in steps]
  answer = steps[-1][3] if steps else operands[0]
  return "\n".join(lines + [f"The answer is {answer}"])


def _sample_chain(
  rng: random.Random, num_ops: int, ops: str, low: int, high: int, mul_high: int, allow_negative: bool
) -> tuple[list[int], list[str]]:
  """Draw one chain; with allow_negative=False retry, then fall back to turning '-' into '+'."""
  for _ in range(100):
    chosen = [rng.choice(ops) for _ in range(num_ops)]
    # Multiplicands stay small so that products of long chains remain readable numbers.
    operands = [rng.randint(low, high)]
    operands += [rng.randint(2, mul_high) if op == "*" else rng.randint(low, high) for op in chosen]
    steps = solve_steps(operands, chosen)
    if allow_negative or all(c >= 0 for *_, c in steps):
      return operands, chosen
  # Without subtraction every intermediate result is non-negative.
  return operands, ["+" if op == "-" else op for op in chosen]


def _difficulty_range(num_ops: int | tuple[int, int]) -> tuple[int, int]:
  """Accept a fixed number of operations or an inclusive (lo, hi) range."""
  lo, hi = (num_ops, num_ops) if isinstance(num_ops, int) else tuple(num_ops)
  if not 1 <= lo <= hi:
    raise ValueError(f"num_ops must be >= 1 (or a range lo <= hi), got {num_ops!r}")
  return lo, hi


def make_example(question: str, *, id: str, difficulty: int, template: str = "plain") -> dict[str, Any]:
  """The common task schema for one chain."""
  return {
    "id": id,
    "prompt": templates.render(template, question),
    "question": question,
    "solution": solve(question),
    "answer": str(evaluate(question)),
    "difficulty": difficulty,
    "task": TASK,
  }


def generate(
  num: int,
  num_ops: int | tuple[int, int] = TRAIN_OPS,
  seed: int = 0,
  *,
  ops: str = "+-",
  low: int = 1,
  high: int = 99,
  mul_high: int = 9,
  allow_negative: bool = False,
  template: str = "plain",
  split: str = "train",
  exclude: Collection[str] = (),
) -> list[dict[str, Any]]:
  """`num` chains with `num_ops` operations (an int or an inclusive range), deterministic in seed.

  ops: the operator alphabet ("+-" or "+-*"); operands are drawn from [low, high], multiplicands
  from [2, mul_high]. allow_negative=False keeps every intermediate result >= 0. Questions in
  `exclude` (e.g. the training questions, for an eval split) are skipped and drawn again.
  """
  if not ops or set(ops) - set("+-*"):
    raise ValueError(f"ops must be a non-empty subset of '+-*', got {ops!r}")
  if not 0 <= low <= high:
    raise ValueError(f"operand range must satisfy 0 <= low <= high, got [{low}, {high}]")
  lo, hi = _difficulty_range(num_ops)
  rng = random.Random(f"{TASK}:{split}:{seed}:{lo}:{hi}:{ops}:{low}:{high}")
  examples, draws = [], 0
  while len(examples) < num:
    draws = unseen_budget(draws, num, len(examples), exclude, split)
    k = rng.randint(lo, hi)
    operands, chosen = _sample_chain(rng, k, ops, low, high, mul_high, allow_negative)
    question = format_question(operands, chosen)
    if question in exclude:
      continue
    i = len(examples)
    examples.append(make_example(question, id=f"{TASK}-{split}-{seed}-{i}", difficulty=k, template=template))
  return examples


def generate_heldout(
  num: int, seed: int = 0, num_ops: int | tuple[int, int] = HELDOUT_OPS, **kwargs: Any
) -> list[dict[str, Any]]:
  """Longer chains than the training range, from a separate random stream (split "heldout")."""
  return generate(num, num_ops, seed, split="heldout", **kwargs)


def _gold(example: Mapping[str, Any] | str | int) -> int:
  """The reference answer of an example dict, or the answer itself."""
  value = example["answer"] if isinstance(example, Mapping) else example
  return int(str(value).strip())


def final_answer(response: str) -> int | None:
  """The integer of the last "The answer is N" line, or None."""
  matches = _ANSWER_RE.findall(response)
  return int(matches[-1]) if matches else None


def check(response: str, example: Mapping[str, Any] | str | int) -> float:
  """1.0 iff the last "The answer is N" line states the reference answer, else 0.0.

  The format is strict on purpose: a synthetic task teaches its own answer line, and a bare
  trailing number would reward truncated or rambling outputs. The phrase may close a sentence of
  free text ("So, the answer is 80."), which is how chat models asked for it (the
  `arithmetic_chat` template) write it; "The final answer is 80" or a bare "= 80" score 0.
  """
  try:
    predicted = final_answer(response)
    return float(predicted is not None and predicted == _gold(example))
  except (ValueError, TypeError, KeyError):
    return 0.0


def step_correct(response: str) -> list[bool]:
  """Per line that states an equation: whether "a op b=c" is arithmetically right.

  Ground-truth step labels for evaluating process reward models on this task; lines without
  '=' (such as the answer line) are not steps and are skipped.
  """
  labels = []
  for line in response.splitlines():
    if "=" not in line:
      continue
    m = _STEP_RE.match(line)
    labels.append(bool(m) and _apply(int(m[1]), m[2], int(m[3])) == int(m[4]))
  return labels
