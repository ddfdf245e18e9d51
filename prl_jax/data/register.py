"""Register chain: K single-digit operations on a mod-10 register, one checkable line per step.

A miniature where process rewards have room to help: every step is checkable from its own line
and the previous value, responses are long enough for the first error to sit anywhere, and the
errors of a policy trained on a buggy demonstrator are systematic (a few operation types are
usually applied wrongly), which a process reward can localise and an outcome reward cannot.

Question and solution (start value 3, K = 4)::

  3:+4-2-7+1

  +4=7
  -2=5
  -7=8
  +1=9

Each line echoes its operation and the register's new value, v_i = (v_{i-1} op d_i) mod 10 (rule
"add"; with rule "table" each of the 18 operation symbols names a fixed random permutation of the
ten digits, v_i = T_{op_i}[v_{i-1}], a lookup with no arithmetic to generalise from). The
outcome checker asks for exactly K well-formed lines whose last two values are the true last two
values (v_{K-1}, v_K), so a wrong chain is paid only by a coincidence of two digits (measured by
tests/test_register_task.py and reported by `coincidence_rate`). `step_labels` is the step
checker (for diagnostics and the oracle control; learned methods never see it) and
`first_error` the ground-truth index of the first wrong line.

The buggy demonstrator (`demonstrate`) applies, on a hidden set of (operation, operand) types
(`bug_types`, fixed by `bug_seed`; with keys="state", of (previous value, operation, operand)
triples, many rarer bugs), a fixed wrong rule -- an off-by-s result with s fixed per bug -- with
probability `bug_rate`, elsewhere slips to a random wrong digit with probability
`slip_rate`, and always continues from the value it wrote. Problems mix `min_bugs..max_bugs`
operations of bug types into each chain, so the demonstrator's success rate is low and its most
common final answer is wrong.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from prl_jax.data import templates
from prl_jax.data.unseen import unseen_budget

TASK = "register"
MIN_OPS = 2
MIN_OPS_WHY = "a register chain's answer is its last two values"
TRAIN_OPS = (8, 8)
HELDOUT_OPS = (12, 12)
OPS = "+-"
# Every (operation, operand) type: + and - with operands 1..9. Additions only, so an error of s
# shifts every later value by s (a multiplication could map a wrong value onto the right one),
# and the bugs' shifts (1 or 2, at most 4 bugged steps: a total of 1..8) can never cancel: a
# chain with a bug applied ends wrong. Only a random slip can undo another error.
TYPES: tuple[tuple[str, int], ...] = tuple(
    [("+", d) for d in range(1, 10)] + [("-", d) for d in range(1, 10)])
MAX_SHIFT = 2

_QUESTION_RE = re.compile(r"^(\d):((?:[+\-]\d)+)$")
_LINE_RE = re.compile(r"^([+\-])(\d)=(\d)$")

Op = tuple[str, int]
BUG_KEYS = ("op", "state")
RULES = ("add", "table")


def op_tables() -> dict[Op, tuple[int, ...]]:
  """Rule "table": T_op, a fixed random permutation of 0..9 per operation symbol. A permutation
  keeps two different values different, so a chain that went wrong stays wrong, as with "add"."""
  rng = random.Random(f"{TASK}:table")
  return {t: tuple(rng.sample(range(10), 10)) for t in TYPES}


_TABLES = op_tables()


def apply(value: int, op: Op, rule: str = "add") -> int:
  """(value op d) mod 10, or T_op[value] with rule "table"."""
  sign, d = op
  if rule == "table":
    return _TABLES[op][value]
  if rule != "add":
    raise ValueError(f"unknown register rule {rule!r}; choose one of {RULES}")
  if sign == "+":
    return (value + d) % 10
  if sign == "-":
    return (value - d) % 10
  raise ValueError(f"unknown operation {sign!r}; the register uses {OPS}")


def format_question(start: int, ops: Sequence[Op]) -> str:
  return f"{start}:" + "".join(f"{s}{d}" for s, d in ops)


def parse_question(question: str) -> tuple[int, list[Op]]:
  m = _QUESTION_RE.match(question.strip())
  if not m:
    raise ValueError(f"not a register question: {question!r} (expected e.g. '3:+4-2-7')")
  body = m[2]
  return int(m[1]), [(body[i], int(body[i + 1])) for i in range(0, len(body), 2)]


def values(start: int, ops: Sequence[Op], rule: str = "add") -> list[int]:
  """The true register values v_1..v_K."""
  out, v = [], start
  for op in ops:
    v = apply(v, op, rule)
    out.append(v)
  return out


def format_lines(ops: Sequence[Op], written: Sequence[int]) -> str:
  return "\n".join(f"{s}{d}={v}" for (s, d), v in zip(ops, written))


def solve(question: str, rule: str = "add") -> str:
  """The clean demonstration: every line right."""
  start, ops = parse_question(question)
  return format_lines(ops, values(start, ops, rule))


# ------------------------------------------------------------------------------------------------
# The hidden bugs and the buggy demonstrator.


def bug_types(bug_seed: int, num_bugs: int = 5, keys: str = "op",
              max_shift: int = MAX_SHIFT) -> dict[tuple, int]:
  """The demonstrator's bugs and their fixed shifts, s in 1..max_shift, so a bugged step writes
  (v_true + s) mod 10, always wrong (max_shift = 9: a random wrong digit per bug). max_shift = 0
  gives every bug the shift 0, "no fixed rule": each time it fires the demonstrator writes a
  fresh uniformly random wrong digit (`demonstrate`), so at bug_rate 0.9 it writes every digit of
  that cell with probability 0.1, the right one included -- it does not know the cell. The bugs
  are the same triples or types whatever max_shift is:

    keys="op":    {(op, d): s}, num_bugs of the 18 (operation, operand) types, bugged whatever
                  the register holds;
    keys="state": {(v, op, d): s}, num_bugs of the 180 (previous value, operation, operand)
                  triples, spread evenly over the ten values (num_bugs // 10 or one more each),
                  so every value has a bugged and a clean operation.
  """
  if keys not in BUG_KEYS:
    raise ValueError(f"bug keys must be one of {BUG_KEYS}, got {keys!r}")
  if not 0 <= max_shift <= 9:
    raise ValueError(f"max_shift must lie in [0, 9] (a shift of 10 writes the right digit; 0: a "
                     f"fresh random wrong digit each time), got {max_shift}")
  rng = random.Random(f"{TASK}:bugs:{bug_seed}" + ("" if keys == "op" else f":{keys}"))
  shift = (lambda: 0) if max_shift == 0 else (lambda: rng.randint(1, max_shift))
  if keys == "op":
    if not 1 <= num_bugs < len(TYPES):
      raise ValueError(f"num_bugs must lie in [1, {len(TYPES) - 1}], got {num_bugs}")
    return {t: shift() for t in rng.sample(TYPES, num_bugs)}
  if not 10 <= num_bugs <= 10 * (len(TYPES) - 1):
    raise ValueError(f"with state keys num_bugs must lie in [10, {10 * (len(TYPES) - 1)}] (at "
                     f"least one bugged and one clean operation per value), got {num_bugs}")
  chosen = [(v, *t) for v in range(10)
            for t in rng.sample(TYPES, num_bugs // 10 + (v < num_bugs % 10))]
  return {t: shift() for t in chosen}


def configured_bugs(settings: Any) -> dict[tuple, int]:
  """The bugs of the task.register settings (bug_seed, num_bugs, bug_keys, max_shift)."""
  return bug_types(settings.bug_seed, settings.num_bugs, settings.bug_keys, settings.max_shift)


def bug_shift(bugs: Mapping[tuple, int], value: int | None, op: Op) -> int | None:
  """The shift of the bug that fires when `op` is applied to `value`, or None: bugs are keyed by
  the operation (`bug_types(keys="op")`) or by the value and the operation (keys="state")."""
  shift = bugs.get(op)
  return shift if shift is not None or value is None else bugs.get((value, *op))


def demonstrate(question: str, rng: random.Random, bugs: Mapping[tuple, int], *,
                bug_rate: float = 0.7, slip_rate: float = 0.02, rule: str = "add") -> str:
  """One demonstration: a bugged step (`bug_shift`, judged on the value the demonstrator holds)
  is applied wrongly with probability `bug_rate` (else right) -- by its fixed shift, or with
  shift 0 to a fresh uniformly random wrong digit -- any other step slips to a uniformly random
  wrong digit with probability `slip_rate`; each line continues from the value written on the
  line before."""
  start, ops = parse_question(question)
  written, v = [], start
  for op in ops:
    right = apply(v, op, rule)
    shift = bug_shift(bugs, v, op)
    if shift is not None:
      v = (right + (shift or rng.randint(1, 9))) % 10 if rng.random() < bug_rate else right
    elif rng.random() < slip_rate:
      v = (right + rng.randint(1, 9)) % 10
    else:
      v = right
    written.append(v)
  return format_lines(ops, written)


# ------------------------------------------------------------------------------------------------
# Problems.


def _options(bug_seed: int, num_bugs: int, min_bugs: int, max_bugs: int,
             bug_keys: str) -> dict[tuple, int]:
  if not 0 <= min_bugs <= max_bugs:
    raise ValueError(f"bug operations per chain must satisfy 0 <= min_bugs <= max_bugs, got "
                     f"[{min_bugs}, {max_bugs}]")
  return bug_types(bug_seed, num_bugs, bug_keys)


def split_bugs(bugs: Mapping[tuple, int]) -> tuple[dict[tuple, int], dict[tuple, int]]:
  """(easy, hard): the bugs in sorted order, alternately. With state keys spread evenly over the
  values (`bug_types`, >= 2 per value), every value has a bug of each half."""
  ordered = sorted(bugs)
  return ({t: bugs[t] for t in ordered[0::2]}, {t: bugs[t] for t in ordered[1::2]})


def _state_keyed_chain(rng: random.Random, k: int, where: set[int], bugs: Mapping[tuple, int],
                       place: Mapping[tuple, int], rule: str) -> tuple[int, list[Op]]:
  """A start value and k operations, walked along the true values: at the positions in `where`
  an operation bugged (in `place`) for the value the register holds, elsewhere one not bugged
  (in `bugs`)."""
  start = v = rng.randint(0, 9)
  ops = []
  for i in range(k):
    choices = [t for t in TYPES if ((v, *t) in (place if i in where else bugs)) == (i in where)]
    ops.append(rng.choice(choices))
    v = apply(v, ops[-1], rule)
  return start, ops


def make_example(start: int, ops: Sequence[Op], *, id: str, num_bug_ops: int,
                 template: str = "plain", rule: str = "add") -> dict[str, Any]:
  question = format_question(start, ops)
  true = values(start, ops, rule)
  return {
      "id": id,
      "prompt": templates.render(template, question),
      "question": question,
      "solution": solve(question, rule),
      "answer": f"{true[-2]},{true[-1]}" if len(true) > 1 else str(true[-1]),
      "difficulty": len(ops),
      "bug_ops": num_bug_ops,
      "task": TASK,
      **({} if rule == "add" else {"rule": rule}),
  }


def generate(num: int, num_ops: int | tuple[int, int] = TRAIN_OPS, seed: int = 0, *,
             bug_seed: int = 0, num_bugs: int = 5, min_bugs: int = 1, max_bugs: int = 4,
             bug_keys: str = "op", rule: str = "add", hard_bugs: int = 0,
             easy_share: float = 0.3, template: str = "plain", split: str = "train",
             exclude: Collection[str] = ()) -> list[dict[str, Any]]:
  """`num` chains of `num_ops` operations (an int or an inclusive range), deterministic in seed.

  Each chain places m ~ U{min_bugs..max_bugs} operations of the demonstrator's bug types
  (`bug_types(bug_seed, num_bugs, bug_keys)`; with state keys, bugged for the true value the
  register holds there) at random positions and fills the rest with clean ones; the start value
  is uniform on 0..9. Questions in `exclude` are drawn again.

  With hard_bugs > 0 the bugs split in two halves (`split_bugs`): a chain is easy with
  probability easy_share (m ~ U{min_bugs..max_bugs} bugs of the easy half) and otherwise hard
  (hard_bugs bugs of the hard half), so the hard half's bugs never appear in a chain the
  outcome pays often.
  """
  lo, hi = (num_ops, num_ops) if isinstance(num_ops, int) else tuple(num_ops)
  if not MIN_OPS <= lo <= hi:
    raise ValueError(f"register chains need num_ops >= {MIN_OPS} ({MIN_OPS_WHY}), "
                     f"got {num_ops!r}")
  bugs = _options(bug_seed, num_bugs, min_bugs, max_bugs, bug_keys)
  easy, hard = split_bugs(bugs) if hard_bugs else (bugs, bugs)
  if hard_bugs and (bug_keys != "state" or num_bugs < 20 or not 0 <= easy_share <= 1):
    raise ValueError(f"hard_bugs needs state-keyed bugs (bug_keys='state', got {bug_keys!r}) with "
                     f"num_bugs >= 20 (two per value, got {num_bugs}) and easy_share in [0, 1] "
                     f"(got {easy_share})")
  bugged, clean = sorted(bugs), [t for t in TYPES if t not in bugs]
  rng = random.Random(f"{TASK}:{split}:{seed}:{lo}:{hi}:{bug_seed}:{num_bugs}:{min_bugs}:"
                      f"{max_bugs}" + ("" if bug_keys == "op" else f":{bug_keys}")
                      + ("" if rule == "add" else f":{rule}")
                      + (f":{hard_bugs}:{easy_share}" if hard_bugs else ""))
  if rule not in RULES:
    raise ValueError(f"unknown register rule {rule!r}; choose one of {RULES}")
  examples, draws, is_hard = [], 0, None
  while len(examples) < num:
    draws = unseen_budget(draws, num, len(examples), exclude, split)
    k = rng.randint(lo, hi)
    # A chain's kind is drawn once per example: an excluded (training) question is redrawn as
    # the same kind, so an eval split keeps easy_share even when the hard chains are few.
    if is_hard is None:
      is_hard = bool(hard_bugs) and rng.random() >= easy_share
    m = min(hard_bugs if is_hard else rng.randint(min_bugs, max_bugs), k)
    where = set(rng.sample(range(k), m))
    if bug_keys == "state":
      start, ops = _state_keyed_chain(rng, k, where, bugs, hard if is_hard else easy, rule)
    else:
      ops = [rng.choice(bugged) if i in where else rng.choice(clean) for i in range(k)]
      start = rng.randint(0, 9)
    question = format_question(start, ops)
    if question in exclude:
      continue
    examples.append(make_example(start, ops, id=f"{TASK}-{split}-{seed}-{len(examples)}",
                                 num_bug_ops=m, template=template, rule=rule))
    is_hard = None
  return examples


def generate_heldout(num: int, seed: int = 0, num_ops: int | tuple[int, int] = HELDOUT_OPS,
                     **kwargs: Any) -> list[dict[str, Any]]:
  """Longer chains (K = 12) from a separate random stream (split "heldout")."""
  return generate(num, num_ops, seed, split="heldout", **kwargs)


# ------------------------------------------------------------------------------------------------
# Checkers.


def _question(example: Mapping[str, Any] | str) -> str:
  return example["question"] if isinstance(example, Mapping) else example


def _rule(example: Mapping[str, Any] | str) -> str:
  """The example's rule ("add" unless it says otherwise; a bare question is "add")."""
  return example.get("rule", "add") if isinstance(example, Mapping) else "add"


def _lines(response: str) -> list[str]:
  return [line.strip() for line in response.strip().splitlines()]


def final_answer(response: str) -> str | None:
  """"v_{K-1},v_K" read from the last two lines (what `check` compares), or None (for voting)."""
  parsed = [_LINE_RE.match(line) for line in _lines(response)[-2:]]
  if len(parsed) < 2 or not all(parsed):
    return None
  return ",".join(m[3] for m in parsed)


def _true_answer(example: Mapping[str, Any] | str, start: int, ops: Sequence[Op]) -> list[int]:
  """The last two true values: the example's answer field when it has one (the verifier passes
  only task, question and answer, so a "table" chain is judged by its answer), else computed."""
  answer = example.get("answer") if isinstance(example, Mapping) else None
  if answer:
    return [int(v) for v in str(answer).split(",")]
  return values(start, ops, _rule(example))[-2:]


def check(response: str, example: Mapping[str, Any] | str) -> float:
  """1.0 iff the response is exactly K lines "<op><d>=<v>" and the last two values are right."""
  try:
    start, ops = parse_question(_question(example))
  except (ValueError, KeyError, TypeError):
    return 0.0
  lines = _lines(response)
  if len(lines) != len(ops):
    return 0.0
  parsed = [_LINE_RE.match(line) for line in lines]
  if not all(parsed):
    return 0.0
  return float([int(m[3]) for m in parsed[-2:]] == _true_answer(example, start, ops))


def step_labels(response: str, example: Mapping[str, Any] | str) -> list[bool]:
  """Per response line: well formed, echoes the question's operation at that place, and its value
  is that operation applied to the value written on the line before (the start value for the
  first line). A line after an unreadable one, or beyond K, is wrong."""
  start, ops = parse_question(_question(example))
  rule = _rule(example)
  labels, previous = [], start
  for i, line in enumerate(_lines(response)):
    m = _LINE_RE.match(line)
    if i >= len(ops) or m is None or previous is None:
      labels.append(False)
      previous = None
      continue
    op = (m[1], int(m[2]))
    labels.append(op == ops[i] and int(m[3]) == apply(previous, op, rule))
    previous = int(m[3])
  return labels


def first_error(response: str, example: Mapping[str, Any] | str) -> int | None:
  """Index of the first wrong line, K' when the response stops after K' < K right lines, or None
  when all K lines are right."""
  labels = step_labels(response, example)
  k = len(parse_question(_question(example))[1])
  for i, ok in enumerate(labels):
    if not ok:
      return i
  return None if len(labels) == k else len(labels)


def coincidence_rate(examples: Sequence[Mapping[str, Any]], responses: Sequence[str]) -> float:
  """Fraction of responses paid by `check` although some line is wrong (coincidental success)."""
  paid = [check(r, ex) > 0 and first_error(r, ex) is not None
          for r, ex in zip(responses, examples)]
  return sum(paid) / max(1, len(paid))


def step_accuracy(responses: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> float:
  """Mean over responses of the fraction of the K steps written right (`step_labels`; a missing
  line counts as wrong, lines beyond K are ignored): the capacity check's per-step accuracy."""
  fractions = []
  for response, example in zip(responses, examples):
    k = len(parse_question(_question(example))[1])
    fractions.append(sum(step_labels(response, example)[:k]) / k)
  return sum(fractions) / max(1, len(fractions))


def line_error_rates(responses: Sequence[str], examples: Sequence[Mapping[str, Any]],
                     bugs: Mapping[tuple, int]) -> dict[str, float]:
  """How a policy errs, per line class, over the K lines of every response:

      plain     = wrong lines / lines whose operation is not a bug type  (demonstrator: slip_rate)
      bug       = wrong lines / lines whose operation is a bug type      (demonstrator: bug_rate)
      bug_rule  = lines written by the bug's rule, (v_prev op d + s) mod 10, / bug-type lines
                  (with s = 0, "no fixed rule", every wrong digit is the rule's: bug_rule = bug)

  A line is of a bug type when `bug_shift(bugs, v_prev, op)` names a bug, v_prev the value
  written on the line before (the true one when that line is unreadable), as the demonstrator
  decides.

  "Wrong" is `step_labels` (judged from the value written on the line before; a missing line is
  wrong). A policy that imitates the buggy demonstrator shows its rates; one whose errors are
  mostly plain slips has not learned the demonstrator, and its failures are noise rather than the
  systematic errors a process reward can localise.
  """
  counts = {"plain": 0, "plain_wrong": 0, "bug": 0, "bug_wrong": 0, "bug_rule": 0}
  for response, example in zip(responses, examples):
    start, ops = parse_question(_question(example))
    labels = step_labels(response, example)
    labels += [False] * (len(ops) - len(labels))
    lines = _lines(response)
    previous: int | None = start
    rule = _rule(example)
    true_previous = [start] + values(start, ops, rule)
    for i, op in enumerate(ops):
      shift = bug_shift(bugs, true_previous[i] if previous is None else previous, op)
      kind = "plain" if shift is None else "bug"
      counts[kind] += 1
      counts[f"{kind}_wrong"] += not labels[i]
      m = _LINE_RE.match(lines[i]) if i < len(lines) else None
      if kind == "bug" and m and previous is not None and (m[1], int(m[2])) == op:
        right = apply(previous, op, rule)
        counts["bug_rule"] += int(m[3]) == (right + shift) % 10 if shift else int(m[3]) != right
      previous = int(m[3]) if m else None
  rate = lambda num, den: counts[num] / counts[den] if counts[den] else float("nan")
  return {"plain": rate("plain_wrong", "plain"), "bug": rate("bug_wrong", "bug"),
          "bug_rule": rate("bug_rule", "bug")}
