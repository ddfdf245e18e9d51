"""`prl-jax` as a user meets it: help on every command, one-line errors that name the key, flag
or file to fix, --print-config and --dry-run, prompts passed to the model unchanged."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from prl_jax import cli
from prl_jax.models.tokenizer import CharTokenizer

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "grpo.py")
CONFIG_COMMANDS = ("sft", "train", "eval", "erprm", "best-of-n", "memory")


def _run(capsys, *argv):
  """(exit code, stdout, stderr) of `prl-jax argv`, argparse's exits included."""
  try:
    code = cli.main(list(argv))
  except SystemExit as exit_:
    code = exit_.code
  out, err = capsys.readouterr()
  return code, out, err


# ----------------------------------------------------------------- help and commands


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
  code, out, _ = _run(capsys, command, "--help")
  assert code == 0
  assert out.startswith(f"usage: prl-jax {command}")
  if command in CONFIG_COMMANDS:  # where the config keys are documented
    assert "--config.KEY=VALUE" in out and "configs/base.py" in out and "--print-config" in out


def test_unknown_command_says_so_and_suggests(capsys):
  code, out, err = _run(capsys, "trian")
  assert code == 2 and out == ""
  assert err.strip().splitlines() == [err.strip()]
  assert "unknown command 'trian'" in err and "did you mean train?" in err


def test_print_config_prints_the_resolved_config_without_a_workdir(capsys):
  code, out, _ = _run(capsys, "train", "--config", CONFIG, "--config.optim.lr=0.00025",
                      "--print-config")
  assert code == 0
  assert "lr: 0.00025" in out and "method: grpo" in out


def test_dry_run_validates_and_prints_memory_without_writing(capsys, tmp_path):
  workdir = tmp_path / "run"
  code, out, _ = _run(capsys, "train", "--config", CONFIG, "--workdir", str(workdir), "--dry-run")
  assert code == 0
  assert "peak (state + largest phase)" in out and "dry run" in out
  assert not workdir.exists()
  code, _, err = _run(capsys, "train", "--config", CONFIG, "--config.train.mini_batch_size=7",
                      "--dry-run")
  assert code == 2 and "train.mini_batch_size" in err


# ----------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("override,named", [
    ("method=primo", "method='primo' is not one of"),
    ("algo.prime.mode=Code", "algo.prime.mode='Code'"),
    ("algo.steps.mode=newline", "algo.steps.mode='newline'"),
    ("algo.loss.kl_kind=k4", "algo.loss.kl_kind='k4'"),
    ("optim.schedule=cosin", "did you mean cosine?"),
    ("optim.lr=-1e-4", "optim.lr=-0.0001 is negative"),
    ("train.steps=0", "train.steps=0"),
    ("rollout.n=1", "method=grpo with rollout.n=1"),
    ("lr=0.1", "Did you mean optim.lr"),
    ("kl_coef=0.1", "Did you mean algo.loss.kl_coef?"),
    ("task.name=gsm8", "did you mean gsm8k?"),
    ("task.train_file=/absent/train.jsonl", "task.train_file=/absent/train.jsonl: no such file"),
    ("task.min_ops=99", "needs 1 <= min_ops <= max_ops"),
])
def test_bad_values_stop_in_one_line_naming_the_key(override, named, capsys, tmp_path,
                                                    monkeypatch):
  data = tmp_path / "x.jsonl"
  data.write_text("")
  extra = [f"--config.task.train_file={data}"] if override.startswith("task.name") else []
  # Nothing may be built: the check comes before any model or data.
  monkeypatch.setattr("prl_jax.train.loop.build_context",
                      lambda *a, **k: pytest.fail("built the run"))
  code, _, err = _run(capsys, "train", "--config", CONFIG, f"--config.{override}", *extra,
                      "--workdir", str(tmp_path))
  assert code == 2
  assert err.startswith("prl-jax train: error: ") and len(err.strip().splitlines()) == 1
  assert named in err


def test_paper_config_without_its_data_names_train_file(capsys, tmp_path):
  paper = os.path.join(os.path.dirname(CONFIG), "..", "paper", "prime_eurus2_7b.py")
  code, _, err = _run(capsys, "train", "--config", paper, "--workdir", str(tmp_path))
  assert code == 2 and "task.train_file" in err and "Traceback" not in err
  code, out, _ = _run(capsys, "memory", "--config", paper)  # planning needs no data
  assert code == 0 and "v5p" in out


def test_a_one_operation_register_chain_is_refused_before_sft(capsys, tmp_path, monkeypatch):
  lab = os.path.join(os.path.dirname(CONFIG), "..", "lab", "sft_clean.py")
  monkeypatch.setattr("prl_jax.train.sft.build_context", lambda *a, **k: pytest.fail("built"))
  code, _, err = _run(capsys, "sft", "--config", lab, "--config.task.min_ops=1",
                      "--workdir", str(tmp_path))
  assert code == 2 and "last two values" in err and "Traceback" not in err


def test_missing_config_and_file_workdir_are_one_line(capsys, tmp_path):
  code, _, err = _run(capsys, "train", "--workdir", str(tmp_path))
  assert code == 2 and "--config FILE is required" in err
  afile = tmp_path / "f"
  afile.write_text("")
  code, _, err = _run(capsys, "train", "--config", CONFIG, "--workdir", str(afile))
  assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1


def test_reproduce_seeds_flag_runs_the_named_seeds_and_rejects_bad_lists(capsys, tmp_path,
                                                                        monkeypatch):
  from prl_jax.reproduce import pipeline
  called = {}

  def fake(preset, workdir, **kw):
    called.update(seeds=preset.seeds, erprm=preset.erprm, methods=preset.methods, **kw)
    raise SystemExit(0)
  monkeypatch.setattr(pipeline, "reproduce", fake)
  work = str(tmp_path / "w")
  assert _run(capsys, "reproduce", "--preset", "lab", "--workdir", work, "--seeds", "0,2",
              "--past-failed-gates")[0] == 0
  assert called["seeds"] == (0, 2) and called["past_failed_gates"]
  assert called["command"].endswith("--seeds 0,2 --past-failed-gates")
  assert called["erprm"] is not None
  _run(capsys, "reproduce", "--preset", "lab", "--workdir", work, "--no-erprm")
  assert called["erprm"] is None and called["seeds"] == (0, 1, 2)
  assert "rloo" in called["methods"] and not {"erprm", "erprm_hard"} & set(called["methods"])
  for bad in ("a", "1,1", "-1"):
    code, _, err = _run(capsys, "reproduce", "--preset", "lab", "--workdir", work, "--seeds", bad)
    assert code == 2 and "--seeds" in err and "Traceback" not in err


# ----------------------------------------------------------------- generate


class _Recorder(CharTokenizer):
  """A character tokenizer that records the text it is asked to encode."""

  seen: list

  def encode(self, text, add_bos=False, add_eos=False):
    self.seen.append(text)
    return [1, 2]


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
  """An HF-layout directory whose loading and sampling are stubbed: only the text path is real."""
  model = tmp_path / "model"
  model.mkdir()
  (model / "config.json").write_text("{}")
  (model / "model.safetensors").write_text("")
  tok = _Recorder()
  tok.seen = []
  monkeypatch.setattr("prl_jax.models.hf.load_hf", lambda path, **kw: (None, None))
  monkeypatch.setattr("prl_jax.models.tokenizer.load_tokenizer", lambda path: tok)

  def sample(params, cfg, ids, key, sampling):
    rows = len(ids) * sampling.n
    return SimpleNamespace(tokens=np.ones((rows, 2), np.int32), mask=np.zeros((rows, 2)))

  monkeypatch.setattr("prl_jax.sampling.sample", sample)
  return model, tok


def test_generate_passes_prompts_unchanged(fake_model, capsys, tmp_path):
  model, tok = fake_model
  text = "Put the final answer in \\boxed{}: \\frac{1}{2} + 3×4 \\n stays two characters"
  prompt_file = tmp_path / "prompt.txt"
  prompt_file.write_text("Q: 3+4\nA:\n", encoding="utf-8")
  code, out, err = _run(capsys, "generate", "--model", str(model), "--prompt", text,
                        "--prompt-file", str(prompt_file))
  assert code == 0, err
  assert tok.seen == [text, "Q: 3+4\nA:"]  # the file's one trailing newline dropped
  assert text in out


def test_generate_needs_a_prompt_and_reports_chat_without_template(fake_model, capsys):
  model, _ = fake_model
  code, _, err = _run(capsys, "generate", "--model", str(model))
  assert code == 2 and "--prompt" in err
  code, _, err = _run(capsys, "generate", "--model", str(model), "--prompt", "hi", "--chat")
  assert code == 2 and err.startswith("prl-jax generate: error: --chat") and "Traceback" not in err


# ----------------------------------------------------------------- paths people try


def test_a_users_own_config_imports_the_shipped_ones(tmp_path):
  import subprocess
  import sys
  mine = tmp_path / "my_prime.py"
  mine.write_text("from configs.mini import prime\n\n"
                  "def get_config():\n  c = prime.get_config()\n  c.optim.lr = 3e-5\n  return c\n")
  code = ("from prl_jax.config import load_config_file; "
          f"print(load_config_file({str(mine)!r}).optim.lr)")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""})
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "3e-05"


def test_init_from_takes_a_workdir_and_names_what_is_missing(capsys, tmp_path):
  final = tmp_path / "sft" / "final_hf"
  final.mkdir(parents=True)
  (final / "config.json").write_text("{}")
  (final / "model.safetensors").write_text("")
  code, out, _ = _run(capsys, "train", "--config", CONFIG, f"--config.init_from={tmp_path / 'sft'}",
                      "--print-config")
  assert code == 0 and f"init_from: {final}" in out
  (tmp_path / "rl" / "checkpoints" / "5").mkdir(parents=True)
  code, _, err = _run(capsys, "train", "--config", CONFIG, f"--config.init_from={tmp_path / 'rl'}",
                      "--print-config")
  assert code == 2 and "without a final export" in err and "init_from=" in err


def test_eval_file_without_train_file_is_not_silently_ignored(capsys, tmp_path):
  code, _, err = _run(capsys, "eval", "--config", CONFIG, "--config.task.eval_file=x.jsonl",
                      "--workdir", str(tmp_path))
  assert code == 2 and "task.eval_file is read only beside task.train_file" in err


def test_model_paths_are_located(tmp_path):
  from prl_jax.run.model_dir import locate
  work = tmp_path / "run"
  (work / "checkpoints" / "7").mkdir(parents=True)
  (work / "config.json").write_text("{}")
  assert locate(str(work), "--model") == ("checkpoint", str(work), None)
  assert locate(str(work / "checkpoints" / "7"), "--model") == ("checkpoint", str(work), 7)
  (work / "final_hf").mkdir()
  (work / "final_hf" / "config.json").write_text("{}")
  (work / "final_hf" / "model.safetensors").write_text("")
  assert locate(str(work), "--model") == ("hf", str(work / "final_hf"), None)
  assert locate(str(work / "checkpoints"), "--model") == ("checkpoint", str(work), None)


def test_every_shipped_config_passes_the_up_front_checks():
  import glob
  from prl_jax.config import load_config_file
  from prl_jax.run.config_checks import check_config
  root = os.path.join(os.path.dirname(CONFIG), "..")
  files = [f for f in glob.glob(os.path.join(root, "*", "*.py"))
           if not f.endswith(("__init__.py", "common.py", "budget.py"))]
  assert len(files) > 15
  for path in files:
    config = load_config_file(path + (":hf_dir=/m" if "smollm2" in path else ""))
    check_config(config, data=not config.task.name in ("gsm8k", "math", "numina", "eurus2"))
