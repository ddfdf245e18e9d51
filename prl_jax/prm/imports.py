"""Public step-labelled PRM data as labelled records for `prl-jax erprm` (algo.erprm.prm_data).

Two row formats, told apart by their columns:

- TRL's stepwise supervision ("trl"): {"prompt": text, "completions": [step, ...],
  "labels": [bool, ...]}, one label per step (TRL's PRMTrainer data, e.g. trl-lib/math_shepherd).
  The steps are the completions, each closed by algo.steps.delimiter.
- Math-Shepherd ("math_shepherd", the layout ER-PRM's data follows): {"input": text, "label": text}
  where `input` is the question and then the solution "Step 1: ... <tag>\\nStep 2: ... <tag>..."
  with the step tag (algo.erprm.data_tag, "ки") after every step, and `label` is the same text
  with "+" (a good step) or "-" (a bad one) in each tag's place. The question is the text before
  "Step 1:".

Each row becomes one record of `prl_jax.prm.labels` (prompt, question, steps, finished, outcome,
counts and labels) with its hard labels under the key "data" (`DATA_LABEL`), so
`prl_jax.prm.model.train_prm` trains on it as on Monte Carlo labels. The solutions are treated as
finished (they end with their answer), so the last step is read where a finished response's is.
A bad row stops the import naming file, line and column (or is skipped with task.skip_bad_rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prl_jax.data import rows as rows_lib
from prl_jax.data.rows import BadRow, RowScreen

DATA_LABEL = "data"
FORMATS = ("trl", "math_shepherd")
EXPECTED = {
  "trl": "rows with 'prompt' (text), 'completions' (a list of step texts) and 'labels' (one "
         "true/false per step), TRL's stepwise-supervision format",
  "math_shepherd": "rows with 'input' (the question, then 'Step 1: ...' with the step tag "
                   "algo.erprm.data_tag after every step) and 'label' (the same text with '+' or "
                   "'-' in each tag's place), Math-Shepherd's format",
}
_FIRST_STEP = re.compile(r"Step\s*1\s*[:.]")


def detect_format(row: Mapping[str, Any]) -> str:
  """"trl" or "math_shepherd" from a row's columns; BadRow when it is neither."""
  if "completions" in row and "labels" in row:
    return "trl"
  if "input" in row and "label" in row:
    return "math_shepherd"
  raise BadRow(None, "malformed", f"columns {sorted(row)} are neither TRL's stepwise "
               "supervision (prompt, completions, labels) nor Math-Shepherd's (input, label)")


def _record(rid: str, prompt: str, steps: list[str], labels: list[float]) -> dict:
  """A labelled record of `prl_jax.prm.labels` from one solution's steps and hard labels."""
  outcome = float(labels[-1])
  return {"id": rid, "prompt": prompt, "question": prompt.strip(), "answer": "", "task": "",
          "solution": "".join(steps), "finished": True, "outcome": outcome, "steps": steps,
          "correct": [int(v) for v in labels], "total": [1] * len(steps),
          "labels": {DATA_LABEL: [float(v) for v in labels]}}


def trl_record(i: int, row: Mapping[str, Any], delimiter: str = "\n") -> dict:
  """One TRL stepwise-supervision row as a record; steps closed by `delimiter`."""
  prompt, completions, labels = row.get("prompt"), row.get("completions"), row.get("labels")
  if not isinstance(prompt, str) or not prompt.strip():
    raise BadRow("prompt", "missing" if prompt is None else "malformed", "not a non-empty text")
  if not isinstance(completions, list) or not completions or not all(
      isinstance(c, str) for c in completions):
    raise BadRow("completions", "malformed", "not a non-empty list of step texts")
  if not isinstance(labels, list) or len(labels) != len(completions) or not all(
      isinstance(v, (bool, int)) and v in (0, 1) for v in labels):
    raise BadRow("labels", "malformed", f"not {len(completions)} true/false values, one per "
                 "completion step")
  steps = [c if c.endswith(delimiter) else c + delimiter for c in completions]
  steps[-1] = steps[-1][:-len(delimiter)] if steps[-1].endswith(delimiter) else steps[-1]
  prompt = prompt if prompt.endswith((" ", "\n")) else prompt + delimiter
  return _record(str(row.get("id") or f"trl-{i}"), prompt, steps, [float(v) for v in labels])


def math_shepherd_record(i: int, row: Mapping[str, Any], tag: str = "ки",
                         delimiter: str = "\n") -> dict:
  """One Math-Shepherd row as a record: the question before "Step 1:", a step per tag, the
  label of each step read from `label` at its tag's place."""
  text, marked = row.get("input"), row.get("label")
  for key, value in (("input", text), ("label", marked)):
    if not isinstance(value, str) or not value.strip():
      raise BadRow(key, "missing" if value is None else "malformed", "not a non-empty text")
  pieces = text.split(tag)
  if len(pieces) < 2:
    raise BadRow("input", "malformed", f"no step tag {tag!r} (set algo.erprm.data_tag to the "
                 "data's tag)")
  labels, at = [], 0
  for k, piece in enumerate(pieces):  # label = piece_0 s_1 piece_1 s_2 ... with s_k in {+, -}
    if marked[at:at + len(piece)] != piece:
      raise BadRow("label", "malformed", f"differs from 'input' before tag {k + 1}; it must be "
                   "the input with '+' or '-' in place of each tag")
    at += len(piece)
    if k < len(pieces) - 1:
      if marked[at:at + 1] not in ("+", "-"):
        raise BadRow("label", "malformed", f"has {marked[at:at + 1]!r} at tag {k + 1}, not + or -")
      labels.append(1.0 if marked[at] == "+" else 0.0)
      at += 1
  start = _FIRST_STEP.search(pieces[0])
  if start is None:
    raise BadRow("input", "malformed", "no 'Step 1:' where the solution starts")
  prompt = pieces[0][:start.start()]
  bodies = [pieces[0][start.start():]] + [p.lstrip("\n") for p in pieces[1:-1]]
  steps = [b.rstrip() + delimiter for b in bodies]
  steps[-1] = steps[-1][:-len(delimiter)]
  return _record(str(row.get("id") or f"math_shepherd-{i}"), prompt, steps, labels)


def load_prm_rows(files: list[str], fmt: str = "auto", *, tag: str = "ки", delimiter: str = "\n",
                  screen: RowScreen | None = None) -> list[dict]:
  """Labelled records from PRM data files (.jsonl/.json/.parquet) in `fmt` ("auto": by columns)."""
  if fmt not in ("auto",) + FORMATS:
    raise ValueError(f"algo.erprm.prm_data_format={fmt!r}; choose auto, " + ", ".join(FORMATS))

  def make(i: int, row: Mapping[str, Any]) -> dict:
    kind = detect_format(row) if fmt == "auto" else fmt
    if kind == "trl":
      return trl_record(i, row, delimiter)
    return math_shepherd_record(i, row, tag, delimiter)

  expected = EXPECTED.get(fmt, " or ".join(EXPECTED.values()))
  return (screen or RowScreen()).keep(rows_lib.read(files), make, expected)
