"""Real math data from local files, read row by row and normalised to the task schema.

Nothing is downloaded: every loader takes a path to files already on disk (a file, or a directory
searched recursively for .jsonl/.json/.parquet files, optionally narrowed to one split) and returns
a list of dicts with the keys every task shares::

  {"id", "prompt", "question", "solution", "answer", "difficulty", "task"}

"answer" is the reference the verifier compares against; "task" selects its scorer ("gsm8k",
"math", "numina" all use the math-answer scorer; verl rows pick it from their data_source,
`prl_jax.data.sources`); "difficulty" is an int or None; "prompt" is a string for text templates
or a list of chat messages for chat templates. verl and TRL rows also keep "data_source", their
other columns ("extra_info", "columns") and whether the prompt was chat messages ("chat"), which
a `task.reward_fn` receives.

Supported layouts:

- GSM8K: rows {question, answer} where answer is the worked solution ending "#### N".
- MATH / MATH-500: rows {problem, solution, [answer], [level], [type|subject], [unique_id]}; the
  original MATH release (one .json object per problem under <split>/<subject>/) works as a
  directory. Without an answer field the answer is the solution's boxed answer: its last \\boxed{},
  joined with the boxes just before it when only a connector separates them (a solution ending
  "$x=\\boxed{-2}$ and $x=\\boxed{1}$" has the answer "-2, 1", not "1").
- NuminaMath-CoT: rows {problem, solution, [messages], [source]}; the boxed answer likewise.
- verl (RLHFDataset rows; `eurus2` is the same layout, as PRIME's Eurus-2-RL-Data ships it): rows
  {prompt: [{role, content}], reward_model: {ground_truth}, data_source, ability,
  [extra_info: {index}]}; the stored chat prompt is kept by default; `ability` matches in any
  case; `data_source` picks the scorer as verl's reward dispatch does.
- TRL / open-r1 (`trl`): rows with a prompt column (default "prompt": a string fed as is, or a
  list of {role, content} messages) and an answer column (default: "solution", else "answer"); a
  solution with \\boxed{} is graded by its boxed answer.

`write_jsonl` / `load_task` store and reload generated synthetic tasks in the same schema.

Bad rows (a required field missing or empty, bytes that are not UTF-8, a line that is not JSON)
stop the load with the file, the line or row and the field, unless the loader is given
`screen=RowScreen(skip=True)`, which skips and counts them (`prl_jax.data.rows`). Rows with no
answer to verify (a MATH or Numina solution without \\boxed{}) are left out and counted either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prl_jax.data import rows, templates
from prl_jax.data.sources import source_task
from prl_jax.data.rows import BadRow, RowScreen, Unanswerable
from prl_jax.data.boxed import boxed_answer

SCHEMA = ("id", "prompt", "question", "solution", "answer", "difficulty", "task")
_SUFFIXES = (".jsonl", ".json", ".parquet")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>

LAYOUTS = {
  "gsm8k": "a .jsonl or .parquet file (or a directory of them, e.g. main/test.jsonl) whose rows have "
  "'question' and 'answer', the answer ending with '#### N'",
  "math": "a .jsonl/.json/.parquet file, or a directory of them (the original MATH release: one .json "
  "per problem under <split>/<subject>/), whose rows have 'problem' and 'solution' and optionally "
  "'answer', 'level', 'type' or 'subject'",
  "numina": "a .jsonl or .parquet file (or a directory of them) whose rows have 'problem' and "
  "'solution' (or 'messages'), the answer in the solution's last \\boxed{}",
  "eurus2": "a .parquet or .jsonl file (or a directory of them, e.g. train.parquet) whose rows have "
  "'prompt' (a list of {role, content} messages), 'reward_model' with 'ground_truth', "
  "'data_source' and 'ability'",
  "trl": "a .jsonl/.json/.parquet file (or a directory of them) whose rows have a prompt column "
  "(task.prompt_column, default 'prompt': text or a list of {role, content} messages) and an "
  "answer column (task.answer_column, default 'solution' or 'answer')",
  "task": "a .jsonl file written by write_jsonl, one example per line with keys " + ", ".join(SCHEMA),
}
LAYOUTS["verl"] = LAYOUTS["eurus2"]  # verl's RLHFDataset rows under their own name
LAYOUTS["prm"] = ("step-labelled PRM data (algo.erprm.prm_data): TRL stepwise-supervision or "
                  "Math-Shepherd rows")


# ----------------------------------------------------------------------------- files


def _matches_split(file: Path, root: Path, split: str) -> bool:
  """Whether a file belongs to `split`: a folder of that name, or names like test.jsonl, test-0000.parquet."""
  parts = file.relative_to(root).parts
  return split in parts[:-1] or re.match(rf"{re.escape(split)}([.\-_]|$)", file.name) is not None


def resolve_files(path: str | Path, kind: str, split: str | None = None) -> list[str]:
  """The data files at `path`, sorted; FileNotFoundError says what was expected."""
  root = Path(path).expanduser()
  expected = f"Expected {LAYOUTS[kind]}."
  if not root.exists():
    raise FileNotFoundError(f"no {kind} data at {root}. {expected}")
  if root.is_file():
    if root.suffix not in _SUFFIXES:
      raise ValueError(f"{root}: not a .jsonl, .json or .parquet file. {expected}")
    files = [root]
  else:
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in _SUFFIXES)
    if split is not None:
      files = [f for f in files if _matches_split(f, root, split)]
  if not files:
    where = f" for split {split!r}" if split else ""
    raise FileNotFoundError(f"no .jsonl/.json/.parquet files{where} under {root}. {expected}")
  return [str(f) for f in files]


def read_rows(path: str | Path, kind: str, split: str | None = None) -> Iterator[rows.Row]:
  """The raw rows of local files, each with its place (file and line or row)."""
  return rows.read(resolve_files(path, kind, split))


def _keep(path: str | Path, kind: str, split: str | None, make: Callable[..., dict | None],
          screen: RowScreen | None) -> list[dict[str, Any]]:
  """The examples `make(index, row)` builds from the rows at `path`; bad rows go to `screen`."""
  return (screen or RowScreen()).keep(read_rows(path, kind, split), make, LAYOUTS[kind])


def _require(row: Mapping[str, Any], keys: Iterable[str]) -> None:
  """BadRow for the first field that is missing or empty (blank text, no items)."""
  for key in keys:
    value = row.get(key)
    if value is None:
      raise BadRow(key, "missing")
    if isinstance(value, str):
      value = value.strip()
    if isinstance(value, (str, list, dict)) and not value:
      raise BadRow(key, "empty")


def _text(row: Mapping[str, Any], key: str) -> str:
  """The text of a required field; BadRow when it is missing, empty or not text."""
  _require(row, (key,))
  if not isinstance(row[key], str):
    raise BadRow(key, "malformed", f"a {type(row[key]).__name__}, not text")
  return row[key]


def _prompt(template: str | None, question: str, stored: Any = None) -> str | list[dict[str, str]]:
  """The rendered template, or the prompt stored in the data when template is None."""
  if template is None:
    if stored is None:
      raise ValueError("template=None keeps a stored prompt, but this data has none; name a template")
    return stored
  return templates.render(template, question)


def _record(
  id: str, prompt: Any, question: str, solution: str, answer: str, difficulty: int | None, task: str
) -> dict:
  """One example in the shared schema."""
  return dict(zip(SCHEMA, (id, prompt, question, solution, answer, difficulty, task)))


# ----------------------------------------------------------------------------- GSM8K


def load_gsm8k(
  path: str | Path, split: str | None = None, *, template: str = "er_prm_gsm8k",
  screen: RowScreen | None = None,
) -> list[dict[str, Any]]:
  """GSM8K rows {question, answer="... #### N"}.

  solution: the worked answer without calculator annotations, ending "The answer is N";
  answer: N without thousands separators; difficulty: the number of reasoning lines.
  """

  def example(i: int, row: Mapping[str, Any]) -> dict:
    question = _text(row, "question")
    rationale, sep, final = _text(row, "answer").rpartition("####")
    answer = final.strip().replace(",", "")
    if not sep or not answer:
      raise BadRow("answer", "malformed", "no final '#### N' line")
    lines = [ln.strip() for ln in _CALCULATOR_RE.sub("", rationale).strip().splitlines() if ln.strip()]
    solution = "\n".join(lines + [f"The answer is {answer}"])
    rid = f"gsm8k-{split or 'data'}-{i}"
    prompt = _prompt(template, question)
    return _record(rid, prompt, question, solution, answer, len(lines), "gsm8k")

  return _keep(path, "gsm8k", split, example, screen)


# ----------------------------------------------------------------------------- MATH


def _level(value: Any) -> int | None:
  """MATH levels come as "Level 3" (original) or 3 (MATH-500); "Level ?" means unknown."""
  if isinstance(value, int):
    return value
  m = re.search(r"\d+", str(value or ""))
  return int(m.group(0)) if m else None


def load_math(
  path: str | Path, split: str | None = None, *, template: str = "qwen_math",
  screen: RowScreen | None = None,
) -> list[dict[str, Any]]:
  """MATH or MATH-500 rows; rows without an answer field or a \\boxed{} in the solution are left
  out (and counted)."""

  def example(i: int, row: Mapping[str, Any]) -> dict:
    problem, solution = _text(row, "problem"), _text(row, "solution")
    answer = str(row.get("answer") or boxed_answer(solution) or "").strip()
    if not answer:
      raise Unanswerable("answer", "not_boxed", "no answer field and no \\boxed{} in the solution")
    subject = str(row.get("type") or row.get("subject") or "").lower()
    subject = subject.replace("&", "and").replace(" ", "_")
    rid = row.get("unique_id") or "-".join(x for x in ("math", split, subject, str(i)) if x)
    level = _level(row.get("level"))
    return _record(rid, _prompt(template, problem), problem, solution, answer, level, "math")

  return _keep(path, "math", split, example, screen)


# ----------------------------------------------------------------------------- NuminaMath-CoT


def _numina_pair(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
  """(problem, solution) from the columns, or from the user/assistant messages."""
  problem, solution = row.get("problem"), row.get("solution")
  for message in row.get("messages") or []:
    if message.get("role") == "user" and not problem:
      problem = message.get("content")
    elif message.get("role") == "assistant" and not solution:
      solution = message.get("content")
  return problem, solution


def load_numina(
  path: str | Path, split: str | None = None, *, template: str = "qwen_math",
  screen: RowScreen | None = None,
) -> list[dict[str, Any]]:
  """NuminaMath-CoT rows; rows with no \\boxed{} answer (proofs, mostly) are left out, and counted."""

  def example(i: int, row: Mapping[str, Any]) -> dict:
    problem, solution = _numina_pair(row)
    for field, text, role in (("problem", problem, "user"), ("solution", solution, "assistant")):
      if not isinstance(text, str) or not text.strip():
        raise BadRow(field, "missing", f"no {field} text and no {role} message in 'messages'")
    answer = boxed_answer(solution)
    if not answer:
      raise Unanswerable("answer", "not_boxed", "no \\boxed{} in the solution")
    rid = "-".join(x for x in ("numina", row.get("source"), str(i)) if x)
    return _record(rid, _prompt(template, problem), problem, solution, answer.strip(), None, "numina")

  return _keep(path, "numina", split, example, screen)


# ----------------------------------------------------------------------------- verl / Eurus-2-RL-Data


def load_eurus2(
  path: str | Path,
  split: str | None = None,
  *,
  template: str | None = None,
  ability: str | None = "math",
  screen: RowScreen | None = None,
  kind: str = "eurus2",
) -> list[dict[str, Any]]:
  """verl RLHFDataset rows (PRIME's Eurus-2-RL-Data is one); only `ability` rows (None: all).

  `ability` matches in any case ("Math" is "math"). Code rows are skipped by default because
  their ground truth is test cases, which the math verifier cannot run. The question is the last
  user message; the stored chat prompt is kept unless a template is named. The scorer is picked
  from `data_source` (`prl_jax.data.sources.source_task`). Rows of other abilities are a choice,
  not bad rows: not counted.
  """
  wanted = None if ability is None else ability.lower()

  def example(i: int, row: Mapping[str, Any]) -> dict | None:
    if wanted is not None and str(row.get("ability") or "").lower() != wanted:
      return None
    _require(row, ("prompt", "reward_model"))
    messages = _messages(row["prompt"])
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    if question is None:
      raise BadRow("prompt", "malformed", "no user message")
    if not question.strip():
      raise BadRow("prompt", "empty", "the last user message has no text")
    truth = row["reward_model"].get("ground_truth") if isinstance(row["reward_model"], dict) else None
    if truth is None or not str(truth).strip():
      raise BadRow("reward_model.ground_truth", "missing" if truth is None else "empty")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    index = extra.get("index")
    parts = (kind, row.get("data_source"), i if index is None else index)
    rid = "-".join(str(x) for x in parts if x is not None)
    prompt = _prompt(template, question, messages)
    task = source_task(row.get("data_source"), row.get("ability"))
    record = _record(rid, prompt, question, "", str(truth).strip(), None, task)
    return {**record, "data_source": row.get("data_source"), "extra_info": extra,
            "chat": isinstance(prompt, list)}

  return _keep(path, kind, split, example, screen)


def load_verl(path: str | Path, split: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
  """verl's RLHFDataset rows: `load_eurus2` under verl's name."""
  return load_eurus2(path, split, kind="verl", **kwargs)


# ----------------------------------------------------------------------------- TRL / open-r1


def load_trl(
  path: str | Path,
  split: str | None = None,
  *,
  prompt_column: str = "prompt",
  answer_column: str = "",
  template: str | None = None,
  screen: RowScreen | None = None,
) -> list[dict[str, Any]]:
  """TRL-style prompt rows: a prompt (text, or chat messages) and a reference answer.

  The prompt column holds the text fed to the policy as is (TRL's standard format) or a list of
  {role, content} messages (its conversational format); with a `template`, a text column is the
  question put into that template instead (open-r1's `problem` column). The answer column
  (default: "solution" if the row has one, else "answer") may be a bare answer or a worked
  solution whose last \\boxed{} is the answer. The row's other columns are kept in "columns", as
  TRL hands them to its reward functions.
  """

  def example(i: int, row: Mapping[str, Any]) -> dict:
    _require(row, (prompt_column,))
    stored = row[prompt_column]
    if isinstance(stored, str):
      question = stored
      prompt = stored if template is None else templates.render(template, stored)
    else:
      messages = _messages(stored, prompt_column)
      question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
      if not question.strip():
        raise BadRow(prompt_column, "malformed", "no user message with text")
      prompt = messages
    column = answer_column or next((c for c in ("solution", "answer") if c in row), "solution")
    if isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool):
      text = str(row[column])  # a numeric answer column (GSM8K-style sets converted to TRL)
    else:
      text = _text(row, column).strip()
    answer = (boxed_answer(text) or text).strip()
    rid = str(row.get("id") or f"trl-{split or 'data'}-{i}")
    task = source_task(row.get("data_source"), row.get("ability") or "math")
    record = _record(rid, prompt, question, text, answer, None, task)
    columns = {k: v for k, v in row.items() if k != prompt_column}
    return {**record, "data_source": row.get("data_source"), "columns": columns,
            "chat": isinstance(prompt, list)}

  return _keep(path, "trl", split, example, screen)


def _messages(prompt: Any, column: str = "prompt") -> list[dict[str, str]]:
  """The {role, content} chat messages of a stored prompt; BadRow when it is not such a list."""
  if not isinstance(prompt, list) or not all(
    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
    for m in prompt
  ):
    raise BadRow(column, "malformed", "not a list of {role, content} messages")
  return [{"role": m["role"], "content": m["content"]} for m in prompt]


LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
  "gsm8k": load_gsm8k,
  "math": load_math,
  "numina": load_numina,
  "eurus2": load_eurus2,
  "verl": load_verl,
  "trl": load_trl,
}


def load(name: str, path: str | Path, split: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
  """Dispatch by data set name: one of LOADERS."""
  if name not in LOADERS:
    raise ValueError(f"unknown math data set {name!r}; choose one of {sorted(LOADERS)}")
  return LOADERS[name](path, split, **kwargs)


# ----------------------------------------------------------------------------- synthetic tasks on disk


def write_jsonl(examples: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
  """Write examples one JSON object per line (UTF-8), creating parent folders; returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", encoding="utf-8") as f:
    for example in examples:
      f.write(json.dumps(dict(example), ensure_ascii=False) + "\n")
  return path


def load_task(path: str | Path, *, screen: RowScreen | None = None) -> list[dict[str, Any]]:
  """Examples written by `write_jsonl`, read back; checks the schema, the prompt and the answer."""

  def example(i: int, row: Mapping[str, Any]) -> dict:
    missing = [k for k in SCHEMA if k not in row]
    if missing:
      raise BadRow(missing[0], "missing", f"the row lacks {missing}")
    _require(row, ("prompt", "answer"))
    return dict(row)

  return _keep(path, "task", None, example, screen)
