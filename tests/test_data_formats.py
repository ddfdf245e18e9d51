"""verl and TRL prompt rows (tests/fixtures), read into the task schema with the scorer verl picks."""

import json
import os

import pytest

from prl_jax.data import math_files
from prl_jax.data.rows import DataFileError
from prl_jax.data.sources import source_task
from prl_jax.rewards.verify import Verifier

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VERL = os.path.join(FIXTURES, "verl_rows.jsonl")
TRL = os.path.join(FIXTURES, "trl_prompts.jsonl")
OPENR1 = os.path.join(FIXTURES, "openr1_rows.jsonl")


def test_verl_alias_reads_the_eurus2_layout_with_any_case_of_ability():
  rows = math_files.load("verl", VERL)
  # The code row is left out; "MATH" and "Math" are math (verl writes ability in either case).
  assert [r["data_source"] for r in rows] == ["openai/gsm8k", "DigitalLearningGmbH/MATH-lighteval",
                                              "numina_olympiads"]
  assert [r["task"] for r in rows] == ["gsm8k", "math", "numina"]
  assert [r["answer"] for r in rows] == ["72", "12", "3"]
  assert rows[0]["id"] == "verl-openai/gsm8k-0" and rows[0]["extra_info"]["split"] == "train"
  assert rows[2]["prompt"][0]["role"] == "system"  # the stored chat prompt is kept
  assert rows[2]["question"].startswith("Find the smallest positive integer")
  assert len(math_files.load("verl", VERL, ability="CODE")) == 1
  assert math_files.load("eurus2", VERL) == [{**r, "id": r["id"].replace("verl", "eurus2", 1)}
                                             for r in rows]


def test_source_task_follows_verls_dispatch():
  assert source_task("openai/gsm8k", "math") == "gsm8k"
  assert source_task("HuggingFaceH4/MATH-500", None) == "math"
  assert source_task("numina_cn_k12", "math") == "numina"
  assert source_task("aime2024", None) == "math"
  assert source_task("my_own_set", "Math") == "math"  # unknown source, math ability
  # Code has no scorer of ours: the source stays the task, and the verifier asks for a reward_fn.
  assert source_task("codecontests", "math") == "codecontests"
  with Verifier(workers=0) as verify:
    row = math_files.load("verl", VERL, ability=None)[3]
    with pytest.raises(ValueError, match="task.reward_fn"):
      verify(["print(3)"], [row])


def test_verl_rows_verify_with_the_picked_scorer():
  rows = math_files.load("verl", VERL)
  responses = ["48/2 = 24, 48 + 24 = 72.\n#### 72", "$\\sqrt{144} = \\boxed{12}$",
               "The order is \\boxed{6}."]
  with Verifier(workers=0) as verify:
    assert verify(responses, rows) == [1.0, 1.0, 0.0]


def test_trl_rows_text_and_chat_prompts():
  rows = math_files.load("trl", TRL)
  text, chat = rows
  assert text["prompt"].startswith("Solve: what is 15%") and text["answer"] == "12"
  assert chat["prompt"][1] == {"role": "user", "content": "How many positive divisors does 12 have?"}
  assert chat["question"] == "How many positive divisors does 12 have?" and chat["answer"] == "6"
  assert chat["columns"]["level"] == 2 and "prompt" not in chat["columns"]
  assert text["task"] == chat["task"] == "math"
  with Verifier(workers=0) as verify:
    assert verify(["It is \\boxed{12}.", "The divisors give \\boxed{5}."], rows) == [1.0, 0.0]


def test_openr1_rows_by_column_mapping_into_a_chat_template():
  (row,) = math_files.load("trl", OPENR1, prompt_column="problem", answer_column="answer",
                           template="qwen_math")
  assert row["prompt"] == [
      {"role": "system", "content": "Please reason step by step, and put your final answer "
                                    "within \\boxed{}."},
      {"role": "user", "content": "If $3x + 7 = 22$, what is $x$?"}]
  assert row["answer"] == "5" and row["columns"]["source"] == "olympiads"
  # Without answer_column the solution is graded by its boxed answer.
  (default,) = math_files.load("trl", OPENR1, prompt_column="problem")
  assert default["answer"] == "5" and default["solution"].startswith("Subtract 7")


def test_trl_missing_columns_name_the_column_and_the_key(tmp_path):
  with pytest.raises(DataFileError, match=r"line 1: field 'prompt' is missing.*task.prompt_column"):
    math_files.load("trl", OPENR1)
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps({"prompt": "What is 2+2?", "final": "4"}) + "\n")
  with pytest.raises(DataFileError, match=r"field 'solution' is missing.*task.answer_column"):
    math_files.load("trl", path)
  assert math_files.load("trl", path, answer_column="final")[0]["answer"] == "4"
