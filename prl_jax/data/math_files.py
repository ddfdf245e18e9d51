"""Real math data from local files, read through `datasets` and normalised to the task schema.

Nothing is downloaded: every loader takes a path to files already on disk (a file, or a directory
searched recursively for .jsonl/.json/.parquet files, optionally narrowed to one split) and returns
a list of dicts with the keys every task shares::

  {"id", "prompt", "question", "solution", "answer", "difficulty", "task"}

"answer" is the reference the verifier compares against; "task" selects its scorer ("gsm8k",
"math", "numina", "eurus2" all use the math-answer scorer); "difficulty" is an int or None;
"prompt" is a string for text templates or a list of chat messages for chat templates.

Supported layouts:

- GSM8K: rows {question, answer} where answer is the worked solution ending "#### N".
- MATH / MATH-500: rows {problem, solution, [answer], [level], [type|subject], [unique_id]}; the
  original MATH release (one .json object per problem under <split>/<subject>/) works as a
  directory. Without an answer field the answer is the last \\boxed{} of the solution.
- NuminaMath-CoT: rows {problem, solution, [messages], [source]}; answer from the last \\boxed{}.
- Eurus-2-RL-Data (PRIME): rows {prompt: [{role, content}], reward_model: {ground_truth},
  data_source, ability, [extra_info: {index}]}; the stored chat prompt is kept by default.

`write_jsonl` / `load_task` store and reload generated synthetic tasks in the same schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prl_jax.data import templates
from prl_jax.rewards.verify import last_boxed

SCHEMA = ("id", "prompt", "question", "solution", "answer", "difficulty", "task")
_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
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
  "task": "a .jsonl file written by write_jsonl, one example per line with keys " + ", ".join(SCHEMA),
}


# ----------------------------------------------------------------------------- files


def _matches_split(file: Path, root: Path, split: str) -> bool:
  """Whether a file belongs to `split`: a folder of that name, or names like test.jsonl, test-0000.parquet."""
  parts = file.relative_to(root).parts
  return split in parts[:-1] or re.match(rf"{re.escape(split)}([.\-_]|$)", file.name) is not None


def resolve_files(path: str | Path, kind: str, split: str | None = None) -> tuple[str, list[str]]:
  """(datasets builder name, data files) for `path`; FileNotFoundError says what was expected."""
  root = Path(path).expanduser()
  expected = f"Expected {LAYOUTS[kind]}."
  if not root.exists():
    raise FileNotFoundError(f"no {kind} data at {root}. {expected}")
  if root.is_file():
    files = [root]
  else:
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in _SUFFIXES)
    if split is not None:
      files = [f for f in files if _matches_split(f, root, split)]
  if not files:
    where = f" for split {split!r}" if split else ""
    raise FileNotFoundError(f"no .jsonl/.json/.parquet files{where} under {root}. {expected}")
  builders = {_SUFFIXES.get(f.suffix) for f in files}
  if None in builders or len(builders) > 1:
    names = sorted(f.name for f in files)[:5]
    raise ValueError(f"{root}: expected only .jsonl/.json or only .parquet files, got {names}. {expected}")
  return builders.pop(), [str(f) for f in files]


def read_rows(
  path: str | Path, kind: str, split: str | None = None, cache_dir: str | None = None
) -> Iterable[dict]:
  """The raw rows of local files through `datasets.load_dataset` (never touches the network)."""
  import datasets  # imported here: `datasets` is slow to import and only needed for real data

  builder, files = resolve_files(path, kind, split)
  return datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)


def _require(row: Mapping[str, Any], keys: Iterable[str], kind: str, i: int) -> None:
  """Fail with the row number and the expected layout when a column is missing."""
  missing = [k for k in keys if row.get(k) is None]
  if missing:
    raise ValueError(f"{kind} row {i} lacks {missing}; expected {LAYOUTS[kind]}")


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
  path: str | Path, split: str | None = None, *, template: str = "er_prm_gsm8k", cache_dir: str | None = None
) -> list[dict[str, Any]]:
  """GSM8K rows {question, answer="... #### N"}.

  solution: the worked answer without calculator annotations, ending "The answer is N";
  answer: N without thousands separators; difficulty: the number of reasoning lines.
  """
  out = []
  for i, row in enumerate(read_rows(path, "gsm8k", split, cache_dir)):
    _require(row, ("question", "answer"), "gsm8k", i)
    rationale, sep, final = row["answer"].rpartition("####")
    if not sep:
      raise ValueError(f"gsm8k row {i}: answer has no '#### N' line; expected {LAYOUTS['gsm8k']}")
    answer = final.strip().replace(",", "")
    lines = [ln.strip() for ln in _CALCULATOR_RE.sub("", rationale).strip().splitlines() if ln.strip()]
    solution = "\n".join(lines + [f"The answer is {answer}"])
    rid = f"gsm8k-{split or 'data'}-{i}"
    prompt = _prompt(template, row["question"])
    out.append(_record(rid, prompt, row["question"], solution, answer, len(lines), "gsm8k"))
  return out


# ----------------------------------------------------------------------------- MATH


def _level(value: Any) -> int | None:
  """MATH levels come as "Level 3" (original) or 3 (MATH-500); "Level ?" means unknown."""
  if isinstance(value, int):
    return value
  m = re.search(r"\d+", str(value or ""))
  return int(m.group(0)) if m else None


def load_math(
  path: str | Path, split: str | None = None, *, template: str = "qwen_math", cache_dir: str | None = None
) -> list[dict[str, Any]]:
  """MATH or MATH-500 rows; rows without an answer field or a \\boxed{} in the solution are skipped."""
  out = []
  for i, row in enumerate(read_rows(path, "math", split, cache_dir)):
    _require(row, ("problem", "solution"), "math", i)
    answer = row.get("answer") or last_boxed(row["solution"])
    if not answer:
      continue
    subject = str(row.get("type") or row.get("subject") or "").lower()
    subject = subject.replace("&", "and").replace(" ", "_")
    rid = row.get("unique_id") or "-".join(x for x in ("math", split, subject, str(i)) if x)
    prompt = _prompt(template, row["problem"])
    level = _level(row.get("level"))
    out.append(_record(rid, prompt, row["problem"], row["solution"], answer.strip(), level, "math"))
  return out


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
  path: str | Path, split: str | None = None, *, template: str = "qwen_math", cache_dir: str | None = None
) -> list[dict[str, Any]]:
  """NuminaMath-CoT rows; rows with no \\boxed{} answer (proofs, mostly) are skipped."""
  out = []
  for i, row in enumerate(read_rows(path, "numina", split, cache_dir)):
    problem, solution = _numina_pair(row)
    if not problem or not solution:
      raise ValueError(
        f"numina row {i} has neither problem/solution nor user/assistant messages; "
        f"expected {LAYOUTS['numina']}"
      )
    answer = last_boxed(solution)
    if not answer:
      continue
    rid = "-".join(x for x in ("numina", row.get("source"), str(i)) if x)
    out.append(_record(rid, _prompt(template, problem), problem, solution, answer.strip(), None, "numina"))
  return out


# ----------------------------------------------------------------------------- Eurus-2-RL-Data


def load_eurus2(
  path: str | Path,
  split: str | None = None,
  *,
  template: str | None = None,
  ability: str | None = "math",
  cache_dir: str | None = None,
) -> list[dict[str, Any]]:
  """Eurus-2-RL-Data rows (PRIME's RL prompts); only `ability` rows (None: all).

  Code rows are skipped by default because their ground truth is test cases, which the math
  verifier cannot run. The question is the last user message; the stored chat prompt is kept
  unless a template is named.
  """
  out = []
  for i, row in enumerate(read_rows(path, "eurus2", split, cache_dir)):
    _require(row, ("prompt", "reward_model"), "eurus2", i)
    if ability is not None and row.get("ability") != ability:
      continue
    messages = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    truth = (row["reward_model"] or {}).get("ground_truth")
    if question is None or truth is None:
      raise ValueError(
        f"eurus2 row {i} lacks a user message or reward_model.ground_truth; expected {LAYOUTS['eurus2']}"
      )
    index = (row.get("extra_info") or {}).get("index")
    parts = ("eurus2", row.get("data_source"), i if index is None else index)
    rid = "-".join(str(x) for x in parts if x is not None)
    prompt = _prompt(template, question, messages)
    out.append(_record(rid, prompt, question, "", str(truth).strip(), None, "eurus2"))
  return out


LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
  "gsm8k": load_gsm8k,
  "math": load_math,
  "numina": load_numina,
  "eurus2": load_eurus2,
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


def load_task(path: str | Path, cache_dir: str | None = None) -> list[dict[str, Any]]:
  """Examples written by `write_jsonl`, read back through `datasets`; checks the schema."""
  rows = [dict(row) for row in read_rows(path, "task", None, cache_dir)]
  for i, row in enumerate(rows):
    missing = [k for k in SCHEMA if k not in row]
    if missing:
      raise ValueError(f"{path} line {i + 1} lacks {missing}; expected {LAYOUTS['task']}")
  return rows
