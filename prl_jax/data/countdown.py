"""Countdown: reach a target from given numbers with + - * /, one operation per line.

Rules (what `check` enforces): each given number is used at most once; an operation may combine
given numbers and earlier results; every intermediate result is an integer (division only when
exact, never by zero). Not every number has to be used.

Question and solution::

  make 24 from 3 4 6 1

  3+1=4
  4*6=24
  The answer is (3+1)*6

The generator builds the target from a random expression over the numbers (so every problem is
solvable) and the solver searches for a shortest sequence of operations by iterative deepening.
Difficulty is the number of given numbers; held-out problems have more numbers than training ones.
"""

from __future__ import annotations

import ast
import random
import re
import warnings
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache
from typing import Any

from prl_jax.data import templates
from prl_jax.data.unseen import unseen_budget

TASK = "countdown"
TRAIN_NUMBERS = (3, 4)
HELDOUT_NUMBERS = (5, 5)
OPS = "+-*/"

# Patterns are written so that no two adjacent repetitions can share characters: (\d+\s+)*\d+
# instead of (\d+\s*)+, [ \t]*(?:\.[ \t]*)? instead of \s*\.?\s*. The ambiguous forms backtrack
# exponentially or quadratically on adversarial responses.
_QUESTION_RE = re.compile(r"make\s+(-?\d{1,12})\s+from\s+((?:\d{1,12}\s+)*\d{1,12})\s*$", re.IGNORECASE)
_STEP_RE = re.compile(r"^\s*(-?\d{1,30})\s*([+\-*/])\s*(-?\d{1,30})\s*=\s*(-?\d{1,30})[ \t]*(?:\.[ \t]*)?$")
_ANSWER_RE = re.compile(r"The answer is[:\s]*(.*)$", re.IGNORECASE | re.MULTILINE)
# Longer answers are not worth parsing: a legal expression over a handful of numbers is short.
_MAX_EXPR_CHARS = 200
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _apply(a: int, op: str, b: int) -> int | None:
  """a op b, or None when the result is not an integer (inexact or zero division)."""
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if op == "/":
    return a // b if b != 0 and a % b == 0 else None
  raise ValueError(f"unknown operator {op!r}; countdown uses {OPS}")


def format_question(numbers: Sequence[int], target: int) -> str:
  """The question text, e.g. "make 24 from 3 4 6 1"."""
  return f"make {target} from " + " ".join(str(n) for n in numbers)


def parse_question(question: str) -> tuple[list[int], int]:
  """Inverse of `format_question`: (numbers, target)."""
  m = _QUESTION_RE.match(question.strip())
  if not m:
    raise ValueError(f"not a countdown question: {question!r}; expected e.g. 'make 24 from 3 4 6 1'")
  return [int(x) for x in m[2].split()], int(m[1])


# ----------------------------------------------------------------------------- expressions


def _join(left: tuple[str, str | None], op: str, right: tuple[str, str | None]) -> tuple[str, str]:
  """Combine two (text, top operator) expressions, adding only the parentheses precedence needs."""
  lt, lop = left
  rt, rop = right
  if lop and _PRECEDENCE[lop] < _PRECEDENCE[op]:
    lt = f"({lt})"
  # The right operand also needs them at equal precedence for the non-associative - and /.
  if rop and (_PRECEDENCE[rop] < _PRECEDENCE[op] or (_PRECEDENCE[rop] == _PRECEDENCE[op] and op in "-/")):
    rt = f"({rt})"
  return f"{lt}{op}{rt}", op


def _eval_node(node: ast.AST, used: list[int]) -> int:
  """Evaluate a parsed expression, collecting leaves; raise ValueError on anything illegal."""
  if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
    used.append(node.value)
    return node.value
  if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
    a = _eval_node(node.left, used)
    b = _eval_node(node.right, used)
    op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(node.op)]
    c = _apply(a, op, b)
    if c is None:
      raise ValueError("non-integer intermediate result")
    return c
  raise ValueError(f"illegal element {type(node).__name__} in a countdown expression")


def evaluate_expression(expr: str, numbers: Sequence[int]) -> int | None:
  """Value of a final expression such as "(6-4)*(3+1)*3" if it is legal for `numbers`, else None."""
  expr = expr.strip().rstrip(".").replace("×", "*").replace("÷", "/").replace("x", "*")
  if not expr or len(expr) > _MAX_EXPR_CHARS:
    return None
  try:
    with warnings.catch_warnings():  # model text such as "2or 3" parses with a SyntaxWarning
      warnings.simplefilter("ignore", SyntaxWarning)  # that would reach the run's log
      tree = ast.parse(expr, mode="eval").body
    used: list[int] = []
    value = _eval_node(tree, used)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None
  if Counter(used) - Counter(numbers):
    return None  # a number used more often than given
  return value


# ----------------------------------------------------------------------------- solver


def _search(
  values: list[tuple[int, tuple[str, str | None]]], target: int, depth: int, seen: set
) -> list[tuple[int, str, int, int, tuple[str, str | None]]] | None:
  """Depth-limited search for steps reaching `target`; `seen` prunes repeated states."""
  if any(v == target for v, _ in values):
    return []
  if depth == 0 or len(values) < 2:
    return None
  key = (depth, tuple(sorted(v for v, _ in values)))
  if key in seen:
    return None
  seen.add(key)
  for i in range(len(values)):
    for j in range(len(values)):
      if i == j:
        continue
      (a, ea), (b, eb) = values[i], values[j]
      for op in OPS:
        # Commutative operations once per pair; keep results positive like the game does.
        if op in "+*" and i > j:
          continue
        c = _apply(a, op, b)
        if c is None or c <= 0:
          continue
        rest = [values[k] for k in range(len(values)) if k not in (i, j)]
        expr = _join(ea, op, eb)
        tail = _search(rest + [(c, expr)], target, depth - 1, seen)
        if tail is not None:
          return [(a, op, b, c, expr)] + tail
  return None


def solve_steps(numbers: Sequence[int], target: int) -> list[tuple[int, str, int, int, tuple[str, str | None]]]:
  """A shortest list of (a, op, b, result, expression) reaching the target (iterative deepening)."""
  values = [(n, (str(n), None)) for n in numbers]
  for depth in range(len(numbers)):
    steps = _search(values, target, depth, set())
    if steps is not None:
      return steps
  raise ValueError(f"no solution: {target} cannot be made from {list(numbers)}")


def format_solution(lines: Sequence[tuple[int, str, int, int]], expression: str) -> str:
  """The response format: one "a op b=c" per line, then "The answer is <expression>"."""
  return "\n".join([f"{a}{op}{b}={c}" for a, op, b, c in lines] + [f"The answer is {expression}"])


def solve(question: str) -> str:
  """Solution text (`format_solution`) of a shortest solution."""
  numbers, target = parse_question(question)
  steps = solve_steps(numbers, target)
  final = steps[-1][4][0] if steps else str(target)
  return format_solution([step[:4] for step in steps], final)


# ----------------------------------------------------------------------------- all solutions
# What counts as a distinct solution: prl_jax.data.countdown_solutions's docstring.

Line = tuple[int, str, int, int]  # (a, op, b, c): "a op b=c"
Key = tuple[Line, ...]  # sorted canonical lines: one distinct solution


def canonical_line(a: int, op: str, b: int, c: int) -> Line:
  """The line with the larger operand first for the commutative + and *, as is otherwise."""
  if op in "+*" and b > a:
    a, b = b, a
  return (a, op, b, c)


def solution_key(lines: Sequence[Line]) -> Key:
  """What identifies a solution: its canonical lines, sorted (order- and operand-order-free)."""
  return tuple(sorted(canonical_line(*line) for line in lines))


def _format_tree(tree) -> tuple[str, str | None]:
  """(text, top operator) of a (value, op, left, right) tree, leaves (value,), via `_join`."""
  if len(tree) == 1:
    return str(tree[0]), None
  return _join(_format_tree(tree[2]), tree[1], _format_tree(tree[3]))


class _Enough(Exception):
  """Raised inside the search once `limit` solutions are found."""


def _enumerate(numbers: tuple[int, ...], target: int, limit: int | None) -> dict[Key, tuple]:
  """Depth-first search over every line sequence; stops after `limit` solutions (None: all)."""
  found: dict[Key, tuple] = {}

  def search(pool: list, lines: list[Line]) -> None:
    # pool: (value, produced by a line?, tree). A solution ends when the last line's result is
    # the target and no other line's result is left unused in the pool.
    for i in range(len(pool)):
      for j in range(i + 1, len(pool)):
        rest = [p for k, p in enumerate(pool) if k != i and k != j]
        open_lines = any(p[1] for p in rest)
        for (x, _, tx), (y, _, ty) in ((pool[i], pool[j]), (pool[j], pool[i])):
          for op in OPS:
            if op in "+*" and x < y:
              continue  # + and * are written larger operand first; the other order covers it
            c = _apply(x, op, y)
            if c is None or c <= 0 or (x == y and op in "-/" and tx is pool[j][2]):
              continue  # (the second clause: x - x and x / x once, not once per order)
            line, tree = (x, op, y, c), (c, op, tx, ty)
            new = lines + [line]
            if c == target and not open_lines:
              key = solution_key(new)
              if key not in found:
                found[key] = (tuple(new), _format_tree(tree)[0])
                if limit is not None and len(found) >= limit:
                  raise _Enough
            if rest:
              search(rest + [(c, True, tree)], new)

  try:
    search([(n, False, (n,)) for n in numbers], [])
  except _Enough:
    pass
  return found


@lru_cache(maxsize=4096)
def _solutions_cached(numbers: tuple[int, ...], target: int) -> tuple[tuple[Key, tuple], ...]:
  return tuple(sorted(_enumerate(numbers, target, None).items()))


def solutions(numbers: Sequence[int], target: int) -> dict[Key, tuple[tuple[Line, ...], str]]:
  """Every distinct solution (module docstring) -> (its lines in an order they can be written,
  the final expression). Deterministic; at most len(numbers) - 1 lines each."""
  return dict(_solutions_cached(tuple(sorted(numbers)), int(target)))


def count_solutions(question: str, at_most: int | None = None) -> int:
  """The number of distinct solutions of a countdown question, or `at_most` once it has that many
  (a cheaper search for filters)."""
  numbers, target = parse_question(question)
  if at_most is None:
    return len(solutions(numbers, target))
  return len(_enumerate(tuple(sorted(numbers)), int(target), at_most))


# ----------------------------------------------------------------------------- generator


def _random_target(rng: random.Random, numbers: Sequence[int], max_target: int) -> int | None:
  """Combine the numbers in random order with random legal operations; None if out of range."""
  pool = list(numbers)
  rng.shuffle(pool)
  while len(pool) > 1:
    a, b = pool.pop(), pool.pop()
    options = [c for op in OPS if (c := _apply(a, op, b)) is not None and c > 0]
    options += [c for op in "-/" if (c := _apply(b, op, a)) is not None and c > 0]
    if not options:
      return None
    pool.append(rng.choice(options))
  target = pool[0]
  return target if 1 <= target <= max_target and target not in numbers else None


def make_example(question: str, *, id: str, difficulty: int, template: str = "plain") -> dict[str, Any]:
  """The common task schema for one countdown problem (answer = the target)."""
  _, target = parse_question(question)
  return {
    "id": id,
    "prompt": templates.render(template, question),
    "question": question,
    "solution": solve(question),
    "answer": str(target),
    "difficulty": difficulty,
    "task": TASK,
  }


def generate(
  num: int,
  num_numbers: int | tuple[int, int] = TRAIN_NUMBERS,
  seed: int = 0,
  *,
  low: int = 1,
  high: int = 25,
  max_target: int = 200,
  template: str = "plain",
  split: str = "train",
  exclude: Collection[str] = (),
  min_solutions: int = 0,
) -> list[dict[str, Any]]:
  """`num` solvable problems with `num_numbers` numbers (int or inclusive range) from [low, high].

  The target is the value of a random expression over all the numbers, kept in [1, max_target]
  and different from every given number (otherwise the problem needs no operation). Questions in
  `exclude` (e.g. the training questions, for an eval split) are skipped and drawn again, and so
  are those with fewer than `min_solutions` distinct solutions (`count_solutions`; 0 keeps all).
  """
  lo, hi = (num_numbers, num_numbers) if isinstance(num_numbers, int) else tuple(num_numbers)
  if not 2 <= lo <= hi:
    raise ValueError(f"num_numbers must be >= 2 (or a range 2 <= lo <= hi), got {num_numbers!r}")
  if not 1 <= low <= high:
    raise ValueError(f"number range must satisfy 1 <= low <= high, got [{low}, {high}]")
  rng = random.Random(f"{TASK}:{split}:{seed}:{lo}:{hi}:{low}:{high}:{max_target}")
  examples, draws = [], 0
  while len(examples) < num:
    draws = unseen_budget(draws, num, len(examples), exclude, split)
    k = rng.randint(lo, hi)
    numbers = [rng.randint(low, high) for _ in range(k)]
    target = _random_target(rng, numbers, max_target)
    if target is None:
      continue
    question = format_question(numbers, target)
    if question in exclude or (min_solutions > 1
                               and count_solutions(question, min_solutions) < min_solutions):
      continue
    i = len(examples)
    examples.append(make_example(question, id=f"{TASK}-{split}-{seed}-{i}", difficulty=k, template=template))
  return examples


def generate_heldout(
  num: int, seed: int = 0, num_numbers: int | tuple[int, int] = HELDOUT_NUMBERS, **kwargs: Any
) -> list[dict[str, Any]]:
  """Problems with more numbers than the training range, from a separate stream (split "heldout")."""
  return generate(num, num_numbers, seed, split="heldout", **kwargs)


# ----------------------------------------------------------------------------- checker


def _problem(example: Mapping[str, Any] | str) -> tuple[list[int], int]:
  """(numbers, target) from an example dict or a question string."""
  return parse_question(example["question"] if isinstance(example, Mapping) else example)


def steps_reach(steps: Sequence[tuple[int, str, int, int]], numbers: Sequence[int], target: int) -> bool:
  """Whether the operations are legal for `numbers` and the last one produces `target`."""
  pool = Counter(numbers)
  for a, op, b, c in steps:
    pool[a] -= 1
    pool[b] -= 1
    if pool[a] < 0 or pool[b] < 0 or _apply(a, op, b) != c:
      return False
    pool[c] += 1
  return bool(steps) and steps[-1][3] == target


def parse_steps(response: str) -> list[tuple[int, str, int, int]] | None:
  """Every line holding '=' as (a, op, b, c); None if such a line is not a single operation.

  Lines stating the final answer are not steps. Rejecting malformed equations (rather than
  skipping them) keeps a response from hiding illegal work between legal lines.
  """
  steps = []
  for line in response.splitlines():
    if "=" not in line or _ANSWER_RE.search(line):
      continue
    m = _STEP_RE.match(line.replace("×", "*").replace("÷", "/"))
    if not m:
      return None
    steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
  return steps


def check(response: str, example: Mapping[str, Any] | str) -> float:
  """1.0 iff the response legally reaches the target, else 0.0.

  Everything the response states must hold: its operation lines must be legal and end at the
  target, and its answer ("The answer is <expression or number>") must be a legal expression
  equal to the target, or the target itself. A bare number with no work scores 0.
  """
  try:
    numbers, target = _problem(example)
    steps = parse_steps(response)
    if steps is None:
      return 0.0
    answers = _ANSWER_RE.findall(response)
    answer = answers[-1].strip().rstrip(".").strip() if answers else None
    has_work = bool(steps)
    if steps and not steps_reach(steps, numbers, target):
      return 0.0
    if answer:
      lhs, _, rhs = answer.partition("=")
      if rhs and rhs.strip() != str(target):
        return 0.0
      if not re.fullmatch(r"-?\d+", lhs.strip()):
        has_work = True
        if evaluate_expression(lhs, numbers) != target:
          return 0.0
      elif int(lhs) != target:
        return 0.0
    return float(has_work)
  except (ValueError, TypeError, KeyError, RecursionError):
    return 0.0
