"""Bad rows in data files are never lost silently: by default the load stops naming the file, the
line or row and the field (and what to do); with `task.skip_bad_rows=true` exactly those rows are
dropped, and counted by reason in a warning and in the run's data metrics."""

import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.data import arithmetic, math_files
from prl_jax.data.rows import DataFileError, RowScreen
from prl_jax.run.context import build_context, validate

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "rloo.py")
GOOD = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3 = 5\n#### 5"}
# One line per kind of bad row: (line bytes, count key, text the error must carry).
BAD_LINES = {
  "missing answer": (b'{"question": "What is 1+1?"}', "answer_missing",
                     "field 'answer' is missing"),
  "empty question": (b'{"question": "  ", "answer": "#### 1"}', "question_empty",
                     "field 'question' is empty"),
  "not UTF-8": (b'{"question": "caf\xe9 au lait?", "answer": "#### 2"}', "question_not_utf8",
                "field 'question' is not UTF-8"),
  "not JSON": (b'{"question": "cut off', "not_json", "the row is not JSON"),
  "no final line": (b'{"question": "q", "answer": "no marker"}', "answer_malformed",
                    "no final '#### N' line"),
}


def _gsm8k_file(path, bad_lines):
  """GOOD on line 1, the bad lines, GOOD again last; returns the path."""
  good = json.dumps(GOOD).encode()
  path.write_bytes(b"\n".join([good, *bad_lines, good]) + b"\n")
  return path


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_each_bad_row_stops_the_load_naming_file_line_and_field(tmp_path, kind):
  line, _, text = BAD_LINES[kind]
  path = _gsm8k_file(tmp_path / "train.jsonl", [line])
  with pytest.raises(DataFileError) as info:
    math_files.load_gsm8k(path)
  message = str(info.value)
  assert message.startswith(f"{path} line 2: ")
  assert text in message
  assert "task.skip_bad_rows=true" in message


def test_skip_drops_exactly_the_bad_rows_and_counts_them(tmp_path):
  path = _gsm8k_file(tmp_path / "train.jsonl", [line for line, _, _ in BAD_LINES.values()])
  with pytest.raises(DataFileError, match=f"{len(BAD_LINES)} bad rows in all"):
    math_files.load_gsm8k(path)  # strict: the first one named, all of them counted
  screen = RowScreen(skip=True)
  rows = math_files.load_gsm8k(path, screen=screen)
  last = len(BAD_LINES) + 1  # row index of the last GOOD line (ids count every row read)
  assert [r["id"] for r in rows] == ["gsm8k-data-0", f"gsm8k-data-{last}"]
  assert dict(screen.counts) == {key: 1 for _, key, _ in BAD_LINES.values()}
  line = 2 + list(BAD_LINES).index("missing answer")
  assert screen.places["answer_missing"] == [f"{path} line {line}"]
  assert screen.warning().startswith(f"skipped {len(BAD_LINES)} data rows: ")
  assert screen.metrics()["data/skipped_rows"] == len(BAD_LINES)
  assert screen.metrics()["data/skipped_rows/question_not_utf8"] == 1


def _parquet(path, table):
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)
  return path


def _eurus2_row(i, question="What is 3+4?", truth="7"):
  return {"data_source": "numina", "ability": "math", "extra_info": {"index": i},
          "prompt": [{"role": "user", "content": question}],
          "reward_model": {"ground_truth": truth, "style": "rule"}}


def test_parquet_rows_are_named_from_zero_with_the_nested_field(tmp_path):
  rows = [_eurus2_row(0), _eurus2_row(1, truth=None), _eurus2_row(2, question=""), _eurus2_row(3)]
  path = _parquet(tmp_path / "train.parquet", pa.Table.from_pylist(rows))
  with pytest.raises(DataFileError) as info:
    math_files.load_eurus2(path)
  assert str(info.value).startswith(f"{path} row 1 (counting from 0): field "
                                    "'reward_model.ground_truth' is missing")
  screen = RowScreen(skip=True)
  assert [r["answer"] for r in math_files.load_eurus2(path, screen=screen)] == ["7", "7"]
  assert dict(screen.counts) == {"reward_model.ground_truth_missing": 1, "prompt_empty": 1}


def test_parquet_strings_that_are_not_utf8_name_their_column(tmp_path):
  # Parquet writers do not check UTF-8: build the bad string column from raw buffers.
  offsets = pa.py_buffer(b"".join(n.to_bytes(4, "little") for n in (0, 1, 2)))
  source = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"a\xff")])
  table = pa.Table.from_pylist([_eurus2_row(0), _eurus2_row(1)])
  table = table.set_column(table.schema.get_field_index("data_source"), "data_source", source)
  path = _parquet(tmp_path / "train.parquet", table)
  with pytest.raises(DataFileError,
                     match=r"row 1 \(counting from 0\): field 'data_source' is not UTF-8"):
    math_files.load_eurus2(path)
  screen = RowScreen(skip=True)
  assert len(math_files.load_eurus2(path, screen=screen)) == 1
  assert dict(screen.counts) == {"data_source_not_utf8": 1}


def test_one_object_json_files_and_byte_order_marks(tmp_path):
  root = tmp_path / "MATH" / "test" / "algebra"
  root.mkdir(parents=True)
  (root / "1.json").write_bytes(b'{\n  "problem": "x+1=3?",\n  "solution": "x = \\\\boxed{2}"\n}')
  (root / "2.json").write_bytes(b'{\n  "problem": "x+2=3?",\n  "solution": "x = \xb9 \\\\boxed{1}"\n}')
  with pytest.raises(DataFileError, match=r"2.json: field 'solution' is not UTF-8 \(byte 0xb9"):
    math_files.load_math(tmp_path / "MATH", "test")
  (root / "2.json").unlink()
  bom = tmp_path / "bom.jsonl"  # spreadsheet exports start with a UTF-8 byte order mark
  bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
  assert len(math_files.load_gsm8k(bom)) == 1
  assert len(math_files.load_math(tmp_path / "MATH")) == 1


def test_rows_left_out_by_design_are_counted_even_when_strict(tmp_path):
  path = tmp_path / "numina.jsonl"
  rows = [{"problem": "2+3?", "solution": "$\\boxed{5}$"},
          {"problem": "Prove it.", "solution": "Done."}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  screen = RowScreen()
  assert len(math_files.load_numina(path, screen=screen)) == 1
  assert dict(screen.counts) == {"answer_not_boxed": 1} and f"{path} line 2" in screen.warning()


def _config(**overrides):
  config = load_config_file(CONFIG_FILE)
  values = {"rollout.max_new_tokens": 8, "task.num_train": 8, "task.num_eval": 4,
            "mesh.num_devices": 1, "log.progress": False, **overrides}
  apply_overrides(config, [f"{k}={v}" for k, v in values.items()])
  return config


def _task_file(path, long_at):
  """Arithmetic examples in the loop's own schema, one with a question too long for 24 tokens."""
  examples = arithmetic.generate(6, 1, seed=0)
  examples[long_at] = {**examples[long_at], "prompt": "Q: " + "1+" * 20 + "1\nA: "}
  return math_files.write_jsonl(examples, path)


def test_config_key_defaults_to_strict_and_validates():
  assert load_config_file(CONFIG_FILE).task.skip_bad_rows is False
  validate(_config(**{"task.skip_bad_rows": "true"}))
  assert _config(**{"task.skip_bad_rows": "true"}).task.skip_bad_rows is True


def test_a_prompt_over_max_prompt_len_stops_the_run_naming_its_line(tmp_path):
  path = _task_file(tmp_path / "train.jsonl", long_at=2)
  config = _config(**{"task.name": "task", "task.train_file": str(path), "task.max_prompt_len": 24})
  with pytest.raises(ConfigError) as info:
    build_context(config, str(tmp_path / "run"))
  message = str(info.value)
  assert message.startswith(f"{path} line 3: field 'prompt' is too long")
  assert "task.max_prompt_len=24" in message
  assert "raise task.max_prompt_len (this prompt needs" in message


def test_skip_bad_rows_drops_long_prompts_and_reports_them(tmp_path, caplog):
  path = _task_file(tmp_path / "train.jsonl", long_at=2)
  config = _config(**{"task.name": "task", "task.train_file": str(path), "task.max_prompt_len": 24,
                      "task.skip_bad_rows": "true"})
  with caplog.at_level(logging.WARNING):
    ctx = build_context(config, str(tmp_path / "run"))
  assert len(ctx.train_examples) == 5
  assert all("1+1+1" not in ex["prompt"] for ex in ctx.train_examples)
  assert ctx.data_metrics == {"data/skipped_rows": 1, "data/skipped_rows/prompt_too_long": 1}
  assert f"skipped 1 data rows: 1 prompt_too_long (first: {path} line 3)" in caplog.text


def test_generated_prompts_go_through_the_same_check(tmp_path):
  config = _config(**{"task.max_prompt_len": 4})
  with pytest.raises(ConfigError, match=r"arithmetic \(generated\) train example 0: field 'prompt' "
                                        r"is too long.*raise task.max_prompt_len"):
    build_context(config, str(tmp_path))
  skipped = _config(**{"task.max_prompt_len": 4, "task.skip_bad_rows": "true"})
  with pytest.raises(ConfigError, match="No training examples are left: skipped 12 data rows"):
    build_context(skipped, str(tmp_path))


@pytest.mark.slow  # compiles one RL step (about a minute on 2 CPU cores)
def test_the_first_metrics_of_a_run_carry_the_skip_counts(tmp_path):
  from prl_jax.train.loop import train
  from prl_jax.run.metrics_file import read_metrics

  path = _task_file(tmp_path / "train.jsonl", long_at=2)
  config = _config(**{"task.name": "task", "task.train_file": str(path), "task.max_prompt_len": 24,
                      "task.skip_bad_rows": "true", "rollout.prompts_per_step": 2, "rollout.n": 2,
                      "train.mini_batch_size": 4, "train.steps": 2, "eval.every": 0,
                      "log.tensorboard": False})
  train(config, str(tmp_path / "run"))
  first, second = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  assert first["data/skipped_rows"] == 1 and first["data/skipped_rows/prompt_too_long"] == 1
  assert "data/skipped_rows" not in second
