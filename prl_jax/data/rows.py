"""Rows of local data files, each with the place it came from, and what happens to the bad ones.

Code that turns a raw row into an example raises `BadRow` (which field, what is wrong with it,
what to do) when it cannot: a required field missing or empty, bytes that are not UTF-8, a line
that is not JSON, a prompt longer than the run allows. `RowScreen.keep` then does one of two
things, so that no bad row is ever lost silently:

- strict (the default): once the rows are read, `DataFileError` names the file, the line or row,
  the field and the fix of the first bad row, and counts the others by reason;
- skip (`task.skip_bad_rows=true`): each bad row is dropped and counted by reason, with its
  place; `warning()` is the line a run logs at start, `metrics()` what it logs with its first step.

`Unanswerable` rows (a layout's rows with nothing to verify against, e.g. a Numina proof) are left
out by design in both modes, and counted like skipped rows.

Places: a JSON-lines file counts lines from 1 (as editors do); a parquet file counts rows from 0
(as pandas and pyarrow index them); a .json file holding one object is just the file.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

_SKIP_HINT = "or set task.skip_bad_rows=true to skip bad rows and count them"
_SAID = {"not_utf8": "not UTF-8", "not_json": "not JSON"}  # problems whose words are not the key's
_SHOWN = 3  # places listed per reason in the warning


class BadRow(ValueError):
  """A row that cannot become an example: `field` (None: the whole row) is `problem`.

  problem: a short snake_case word ("missing", "empty", "not_utf8", "not_json", "too_long",
  "malformed") that, with the field, keys the skip counts; detail: this row's particulars;
  fix: what to do, when it is more specific than the layout the loader expects.
  """

  def __init__(self, field: str | None, problem: str, detail: str = "", fix: str = ""):
    self.field, self.problem, self.detail, self.fix = field, problem, detail, fix
    subject = "the row" if field is None else f"field {field!r}"
    said = _SAID.get(problem, problem.replace("_", " "))
    super().__init__(f"{subject} is {said}" + (f" ({detail})" if detail else ""))

  @property
  def reason(self) -> str:
    """The count key, e.g. "answer_missing" or "prompt_too_long"."""
    return self.problem if self.field is None else f"{self.field}_{self.problem}"


class Unanswerable(BadRow):
  """A row its layout leaves out by design (no reference answer to verify); never an error."""


class DataFileError(ValueError):
  """Bad rows in a data file, in strict mode; the message says where, which field and what to do."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One raw row: `where` it came from, its `data`, or the `error` that kept it from being read."""

  where: str
  data: Mapping[str, Any] | None = None
  error: BadRow | None = None


# ----------------------------------------------------------------------------- reading


def read(files: Iterable[str | Path]) -> Iterator[Row]:
  """Every row of the files in order: .parquet by row, .jsonl by line, .json as one object, an
  array of objects, or JSON lines."""
  for file in map(str, files):
    yield from _parquet_rows(file) if file.endswith(".parquet") else _json_rows(file)


def _json_rows(file: str) -> Iterator[Row]:
  if file.endswith(".json"):  # small files: one object (the MATH release), an array, or lines
    data, error = _parse(Path(file).read_bytes().removeprefix(codecs.BOM_UTF8))
    if isinstance(data, list) and error is None:
      for i, item in enumerate(data):
        yield _row(f"{file} item {i} (counting from 0)", item, None)
      return
    if isinstance(data, (dict, list)):
      yield _row(file, data, error)
      return
  with open(file, "rb") as fh:  # streamed: JSON-lines files can be larger than memory twice over
    for n, line in enumerate(fh, start=1):
      if line.strip():
        yield _row(f"{file} line {n}", *_parse(line.removeprefix(codecs.BOM_UTF8)))


def _parse(raw: bytes) -> tuple[Any, BadRow | None]:
  """(value, None) for JSON text; (value or None, BadRow) when it is not UTF-8 or not JSON.

  Text that is not UTF-8 is parsed again with the bad bytes kept as lone surrogates, so the
  error can name the field that holds them.
  """
  try:
    return json.loads(raw.decode("utf-8")), None
  except UnicodeDecodeError as err:
    detail = f"byte {raw[err.start]:#04x} at byte {err.start}"
    try:
      data = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
      data = None
    return data, BadRow(_undecodable_field(data), "not_utf8", detail, "re-encode the file as UTF-8")
  except ValueError as err:
    return None, BadRow(None, "not_json", str(err))


def _row(where: str, data: Any, error: BadRow | None) -> Row:
  if error is None and not isinstance(data, dict):
    error = BadRow(None, "malformed", f"a JSON {type(data).__name__}, not an object")
  return Row(where, error=error) if error else Row(where, data)


def _undecodable_field(data: Any, path: str = "") -> str | None:
  """The dotted path of the first string holding an undecodable byte (a lone surrogate)."""
  if isinstance(data, str):
    return path if path and any("\udc80" <= ch <= "\udcff" for ch in data) else None
  if isinstance(data, dict):
    items = [(f"{path}.{key}" if path else str(key), value) for key, value in data.items()]
  elif isinstance(data, list):
    items = [(f"{path}[{i}]", value) for i, value in enumerate(data)]
  else:
    items = []
  for sub, value in items:
    found = _undecodable_field(value, sub)
    if found:
      return found
  return None


def _parquet_rows(file: str) -> Iterator[Row]:
  import pyarrow.parquet as pq  # imported here: only parquet data needs it

  start = 0
  for batch in pq.ParquetFile(file).iter_batches(batch_size=4096):
    try:
      rows = batch.to_pylist()
    except UnicodeDecodeError:  # parquet does not check UTF-8 on write; find the cells
      rows = [_arrow_row(batch, j) for j in range(batch.num_rows)]
    for j, data in enumerate(rows):
      where = f"{file} row {start + j} (counting from 0)"
      yield Row(where, error=data) if isinstance(data, BadRow) else Row(where, data)
    start += batch.num_rows


def _arrow_row(batch: Any, j: int) -> dict | BadRow:
  """Row j of a record batch, column by column, or the first column that is not UTF-8."""
  row = {}
  for name, column in zip(batch.schema.names, batch.columns):
    try:
      row[name] = column[j].as_py()
    except UnicodeDecodeError as err:
      return BadRow(name, "not_utf8", str(err), "rewrite the file with UTF-8 strings")
  return row


# ----------------------------------------------------------------------------- screening


@dataclasses.dataclass
class RowScreen:
  """Keeps the good rows; stops at bad ones (strict) or skips and counts them (`skip`).

  `prepare` runs on every example a loader builds and may raise `BadRow` too (a run renders the
  prompt there and checks its length), so its failures are placed and counted like the rest.
  One screen can serve several files (train and eval): counts and places add up.
  """

  skip: bool = False
  prepare: Callable[[dict], dict] | None = None
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  places: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def keep(self, rows: Iterable[Row], make: Callable[[int, Mapping[str, Any]], dict | None],
           expected: str = "") -> list[dict]:
    """The examples `make(index, data)` builds from `rows` (None: left out by a loader's choice).

    expected: the layout, told to the user when a BadRow carries no more specific fix.
    """
    kept, errors, first = [], collections.Counter(), None
    for i, row in enumerate(rows):
      try:
        if row.error is not None:
          raise row.error
        example = make(i, row.data)
        if example is not None:
          kept.append(self.prepare(example) if self.prepare else example)
      except BadRow as err:
        if self.skip or isinstance(err, Unanswerable):
          self._count(err.reason, row.where)
        else:
          errors[err.reason] += 1
          first = first or (row.where, err)
    if first:
      raise DataFileError(_error_message(*first, errors, expected))
    return kept

  def _count(self, reason: str, where: str) -> None:
    self.counts[reason] += 1
    shown = self.places.setdefault(reason, [])
    if len(shown) < _SHOWN:
      shown.append(where)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def warning(self) -> str | None:
    """The start-of-run line naming how many rows were skipped, why, and the first few places."""
    if not self.total:
      return None
    parts = [f"{n} {reason} (first: {'; '.join(self.places[reason])})"
             for reason, n in self.counts.most_common()]
    return f"skipped {self.total} data rows: " + ", ".join(parts)

  def metrics(self) -> dict[str, int]:
    """data/skipped_rows and one data/skipped_rows/<reason> per reason, for a run's first step."""
    return {"data/skipped_rows": self.total,
            **{f"data/skipped_rows/{reason}": n for reason, n in sorted(self.counts.items())}}


def _error_message(where: str, err: BadRow, errors: collections.Counter, expected: str) -> str:
  fix = err.fix or (f"expected {expected}" if expected else "fix the row")
  text = f"{where}: {err}; {fix}."
  if sum(errors.values()) > 1:
    text += (f" {sum(errors.values())} bad rows in all: "
             + ", ".join(f"{n} {reason}" for reason, n in errors.most_common()) + ".")
  return f"{text} Fix or remove the bad rows, {_SKIP_HINT}."
