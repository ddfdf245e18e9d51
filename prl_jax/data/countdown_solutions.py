"""Every solution of a countdown problem, the uniform demonstrator, and distinct-solution counts.

A solution is a set of operation lines "a op b=c" (countdown's response format) that
- uses each given number at most once and each line's result at most once,
- keeps every result a positive integer (division only when exact), as `countdown.solve` does,
- uses every line's result in a later line except the last, whose result is the target
  (no dead-end lines: a solution is an expression tree over some of the given numbers).

Two solutions are the same when they have the same multiset of canonical lines, where the
commutative + and * write their larger operand first ("3+4=7" and "4+3=7" are one line). So
(3+1)*6 and 6*(1+3) are one solution, the order the lines are written in does not matter, and
(6-4)*3 and 3*6-3*4 are two. Trivial variants are solutions too: 3*4*1 and 3*4/1 are two
solutions of "make 12 from 3 4 1" besides 3*4.

    solutions([3, 4, 6, 1], 24)   # {key: lines} with lines a written-out order of the key's lines
    uniform_demonstration("make 24 from 3 4 6 1", random.Random(0))
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from prl_jax.data import countdown
from prl_jax.data.countdown import Key, format_solution, solution_key, solutions


def uniform_demonstration(question: str, rng: random.Random) -> str:
  """A solution drawn uniformly among the question's distinct solutions, written out."""
  numbers, target = countdown.parse_question(question)
  found = list(solutions(numbers, target).values())
  if not found:
    raise ValueError(f"no solution: {question!r}")
  lines, expression = found[rng.randrange(len(found))]
  return format_solution(lines, expression)


def needed_lines(lines: Sequence[countdown.Line]) -> list[countdown.Line]:
  """The lines the last line's result depends on, in order: dead-end lines (whose result no later
  line uses) are dropped. An operand is read from the unused result of an earlier line when one
  has its value (the latest such), else it is a given number."""
  unused: dict[int, list[int]] = {}  # value -> earlier lines whose result is still unused
  inputs: list[list[int]] = []
  for i, (a, _, b, c) in enumerate(lines):
    inputs.append([unused[v].pop() for v in (a, b) if unused.get(v)])
    unused.setdefault(c, []).append(i)
  keep, todo = set(), [len(lines) - 1] if lines else []
  while todo:
    i = todo.pop()
    if i not in keep:
      keep.add(i)
      todo += inputs[i]
  return [lines[i] for i in sorted(keep)]


def response_key(response: str, example: Mapping[str, Any] | str) -> Key | None:
  """The solution a correct response states (its key), or None when it does not solve the
  example (`countdown.check`). Dead-end lines are not part of the solution (`needed_lines`), so
  "3-1=2, 4*6=24" states the same solution as "4*6=24"."""
  if countdown.check(response, example) != 1.0:
    return None
  lines = countdown.parse_steps(response)
  return solution_key(needed_lines(lines)) if lines else None


def distinct_correct(responses: Sequence[str], example: Mapping[str, Any] | str) -> int:
  """The number of distinct solutions among a problem's correct responses."""
  keys = {response_key(r, example) for r in responses}
  keys.discard(None)
  return len(keys)
