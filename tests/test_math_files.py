"""Local math data files in each supported layout, normalised to the task schema."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prl_jax.data import arithmetic, countdown, math_files
from prl_jax.data.math_files import SCHEMA
from prl_jax.rewards.math_answer import score_math
from prl_jax.rewards.verify import Verifier


def _jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


def _parquet(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path


GSM8K_ROWS = [
  {
    "question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
    "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72 clips.\n#### 72",
  },
  {"question": "A farm has 1200 hens and 34 more. How many?", "answer": "1200+34 = <<1200+34=1234>>1234\n#### 1,234"},
]


def test_gsm8k_jsonl(tmp_path):
  rows = math_files.load_gsm8k(_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS))
  first, second = rows
  assert tuple(first) == SCHEMA
  assert first["answer"] == "72" and second["answer"] == "1234"
  assert "<<" not in first["solution"] and first["solution"].endswith("The answer is 72")
  assert first["difficulty"] == 2 and first["task"] == "gsm8k"
  assert first["question"] in first["prompt"]
  # The reference solution verifies against its own answer.
  assert all(score_math(r["solution"], r) == 1.0 for r in rows)


def test_gsm8k_parquet_directory_with_splits(tmp_path):
  _parquet(tmp_path / "gsm8k" / "main" / "train-00000-of-00001.parquet", GSM8K_ROWS[:1])
  _parquet(tmp_path / "gsm8k" / "main" / "test-00000-of-00001.parquet", GSM8K_ROWS)
  test = math_files.load_gsm8k(tmp_path / "gsm8k", "test")
  train = math_files.load("gsm8k", tmp_path / "gsm8k", "train")
  assert len(test) == 2 and len(train) == 1 and test[0]["id"] == "gsm8k-test-0"
  with pytest.raises(FileNotFoundError, match="split 'validation'"):
    math_files.load_gsm8k(tmp_path / "gsm8k", "validation")


def test_gsm8k_without_final_line_is_an_error(tmp_path):
  path = _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no marker"}])
  with pytest.raises(ValueError, match="####"):
    math_files.load_gsm8k(path)


def test_math_original_layout_one_json_per_problem(tmp_path):
  root = tmp_path / "MATH"
  problems = {
    "train/algebra/1.json": {"problem": "Solve x+1=3.", "level": "Level 2", "type": "Algebra", "solution": "So $x=\\boxed{2}$."},
    "test/algebra/7.json": {"problem": "Half of 1?", "level": "Level 1", "type": "Algebra", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
    "test/counting_and_probability/3.json": {"problem": "Pick?", "level": "Level ?", "type": "Counting & Probability", "solution": "$\\boxed{\\{1, 2\\}}$"},
    "test/geometry/9.json": {"problem": "Prove it.", "level": "Level 5", "type": "Geometry", "solution": "No box here."},
  }
  for rel, row in problems.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(row, indent=2))  # pretty-printed, as in the release
  rows = math_files.load_math(root, "test")
  assert len(rows) == 2  # the unanswerable one is skipped
  by_answer = {r["answer"]: r for r in rows}
  assert set(by_answer) == {"\\frac{1}{2}", "\\{1, 2\\}"}
  assert by_answer["\\frac{1}{2}"]["difficulty"] == 1 and by_answer["\\{1, 2\\}"]["difficulty"] is None
  assert by_answer["\\{1, 2\\}"]["id"].startswith("math-test-counting_and_probability")
  assert rows[0]["prompt"][-1]["content"] == rows[0]["question"]  # qwen_math chat template
  assert all(r["task"] == "math" for r in rows)


def test_gold_from_a_solution_with_several_boxes(tmp_path):
  """A solution that boxes each root states all of them: the gold keeps both, so a response
  with one root is wrong and one with both, in any order, is right."""
  rows = [
    {"problem": "Solve x^2+x-2=0.", "solution": "So $x=\\boxed{-2}$ and $x=\\boxed{1}$."},
    {"problem": "Try twice.", "solution": "First $\\boxed{5}$. That is wrong; redoing it gives $\\boxed{6}$."},
    {"problem": "Vector?", "solution": "$\\boxed{\\begin{pmatrix} -7 \\\\ 16 \\end{pmatrix}}$"},
  ]
  both, corrected, vector = math_files.load_math(_jsonl(tmp_path / "math.jsonl", rows))
  assert both["answer"] == "-2, 1"
  assert score_math("\\boxed{1, -2}", both) == 1.0 and score_math("\\boxed{1}", both) == 0.0
  assert corrected["answer"] == "6"  # boxes separated by a sentence are not one answer
  assert score_math("\\boxed{\\begin{pmatrix}-7\\\\16\\end{pmatrix}}", vector) == 1.0


def test_math500_jsonl(tmp_path):
  row = {
    "problem": "Convert $(0,3)$ to polar coordinates.",
    "solution": "... so the answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
    "subject": "Precalculus",
    "level": 2,
    "unique_id": "test/precalculus/807.json",
  }
  (r,) = math_files.load_math(_jsonl(tmp_path / "math500" / "test.jsonl", [row]), template="plain")
  assert r["id"] == "test/precalculus/807.json" and r["difficulty"] == 2
  assert r["prompt"] == f"Q: {row['problem']}\nA: "
  assert score_math("The answer is $\\boxed{(3, \\pi/2)}$", r) == 1.0


def test_numina_columns_and_messages(tmp_path):
  rows = [
    {"source": "amc_aime", "problem": "What is 2+3?", "solution": "Add: $\\boxed{5}$.", "messages": []},
    {
      "source": "olympiads",
      "messages": [
        {"role": "user", "content": "What is 10/4?"},
        {"role": "assistant", "content": "It is $\\boxed{\\dfrac{5}{2}}$"},
      ],
    },
    {"source": "olympiads", "problem": "Prove that 1 < 2.", "solution": "Obvious."},
  ]
  out = math_files.load_numina(_jsonl(tmp_path / "numina.jsonl", rows))
  assert [r["answer"] for r in out] == ["5", "\\dfrac{5}{2}"]
  assert out[1]["question"] == "What is 10/4?" and out[1]["id"] == "numina-olympiads-1"
  assert score_math("so 2.5", out[1]) == 1.0


def test_eurus2_parquet(tmp_path):
  system = {"role": "system", "content": "Think with actions."}

  def row(i, ability, truth, question):
    return {
      "data_source": "numina_olympiads" if ability == "math" else "taco",
      "prompt": [system, {"role": "user", "content": question}],
      "ability": ability,
      "reward_model": {"ground_truth": truth, "style": "rule"},
      "extra_info": {"index": i, "split": "train"},
    }

  rows = [row(0, "math", "\\frac{3}{4}", "What is 3/4?"), row(1, "code", "{\"inputs\": []}", "Write code."), row(2, "math", "7", "3+4?")]
  path = _parquet(tmp_path / "eurus" / "train.parquet", rows)
  out = math_files.load_eurus2(path)
  assert [r["answer"] for r in out] == ["\\frac{3}{4}", "7"]
  assert out[0]["prompt"] == [system, {"role": "user", "content": "What is 3/4?"}]  # stored chat kept
  assert out[0]["id"] == "eurus2-numina_olympiads-0" and out[0]["task"] == "numina"
  assert len(math_files.load_eurus2(path, ability=None)) == 3
  templated = math_files.load_eurus2(tmp_path / "eurus", "train", template="qwen_math")
  assert templated[1]["prompt"][-1]["content"] == "3+4?"
  assert Verifier()(["\\boxed{0.75}", "\\boxed{8}"], out) == [1.0, 0.0]


def test_missing_files_name_path_and_layout(tmp_path):
  missing = tmp_path / "nowhere" / "test.jsonl"
  for name in math_files.LOADERS:
    with pytest.raises(FileNotFoundError) as info:
      math_files.load(name, missing)
    assert str(missing) in str(info.value) and "Expected" in str(info.value)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no .jsonl/.json/.parquet files"):
    math_files.load_math(tmp_path / "empty")
  with pytest.raises(ValueError, match="unknown math data set"):
    math_files.load("mmlu", missing)


def test_missing_column_is_a_clear_error(tmp_path):
  path = _jsonl(tmp_path / "q.jsonl", [{"question": "only a question"}])
  with pytest.raises(ValueError, match=r"q.jsonl line 1: field 'answer' is missing; expected .*'question'"):
    math_files.load_gsm8k(path)


def test_synthetic_tasks_round_trip_through_jsonl(tmp_path):
  examples = arithmetic.generate(5, 3, seed=0) + countdown.generate(5, 3, seed=0)
  path = math_files.write_jsonl(examples, tmp_path / "tasks" / "mix.jsonl")
  loaded = math_files.load_task(path)
  assert loaded == examples
  assert Verifier()([e["solution"] for e in loaded], loaded) == [1.0] * 10
  _jsonl(tmp_path / "partial.jsonl", [{"id": "x", "question": "1+1"}])
  with pytest.raises(ValueError, match="lacks"):
    math_files.load_task(tmp_path / "partial.jsonl")
