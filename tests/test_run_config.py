"""WORKDIR/config.json: written by every run; a resume with a changed config is refused before
the model is built, unless the change is to a run-length/eval/logging key or forced."""

import json
import os

import pytest

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.run import config_record as run_config
from prl_jax.train import loop, sft
from prl_jax.run.config_record import ABSENT, config_changes, record_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


class Built(Exception):
  """Raised in place of build_context: the run got past the config check."""


def _config(name="rloo", *overrides):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, f"{name}.py")), list(overrides))


def _with_checkpoint(workdir, config):
  """A workdir as a run leaves it: its config.json and a finished step 2."""
  record_config(config, str(workdir))
  os.makedirs(workdir / "checkpoints" / "2")


def _recorded(workdir):
  with open(workdir / "config.json") as fh:
    return json.load(fh)


@pytest.fixture
def no_build(monkeypatch):
  """Building the model raises Built, so a test sees where a run stopped without compiling."""

  def build(*args, **kwargs):
    raise Built()

  monkeypatch.setattr(loop, "build_context", build)
  monkeypatch.setattr(sft, "build_context", build)


def test_changes_are_dotted_keys_with_old_and_new_values():
  old = {"optim": {"lr": 1e-4, "b1": 0.9}, "seed": 0, "gone": 1}
  new = {"optim": {"lr": 1e-3, "b1": 0.9}, "seed": 0, "added": [1, 2]}
  assert config_changes(old, new) == {"added": (ABSENT, [1, 2]), "gone": (1, ABSENT),
                                      "optim.lr": (1e-4, 1e-3)}
  assert config_changes(new, new) == {}


def test_a_key_added_since_the_run_counts_only_when_it_leaves_its_default():
  old = {"seed": 0}
  defaults = {"seed": 0, "task": {"new_knob": 0}}
  assert config_changes(old, {"seed": 0, "task": {"new_knob": 0}}, defaults) == {}
  assert config_changes(old, {"seed": 0, "task": {"new_knob": 5}}, defaults) == {
      "task.new_knob": (ABSENT, 5)}
  assert config_changes({"seed": 0, "task": {"new_knob": 5}}, old, defaults) == {
      "task.new_knob": (5, ABSENT)}  # a removed key always counts


@pytest.mark.parametrize("entry", [loop.train, sft.sft])
def test_a_run_recorded_before_a_key_existed_resumes(entry, tmp_path, no_build):
  config = _config()
  _with_checkpoint(tmp_path, config)
  recorded = _recorded(tmp_path)
  del recorded["task"]["register"]  # as written by code that had no task.register keys
  with open(tmp_path / "config.json", "w") as fh:
    json.dump(recorded, fh)
  with pytest.raises(Built):  # past the check, at the model
    entry(config, str(tmp_path))
  changed = _config("rloo", "task.register.bug_rate=0.3")
  with open(tmp_path / "config.json", "w") as fh:
    json.dump(recorded, fh)
  with pytest.raises(ConfigError, match="task.register.bug_rate"):
    entry(changed, str(tmp_path))


@pytest.mark.parametrize("entry", [loop.train, sft.sft])
def test_changed_resume_is_refused_before_the_model_is_built(entry, tmp_path, no_build):
  _with_checkpoint(tmp_path, _config())
  changed = _config("rloo", "optim.lr=0.001", "seed=3", "train.steps=500", "eval.n=2")
  with pytest.raises(ConfigError) as err:
    entry(changed, str(tmp_path))
  text = str(err.value)
  assert "optim.lr: 0.0001 -> 0.001" in text and "seed: 0 -> 3" in text
  assert "--config.checkpoint.allow_changes=optim.lr,seed" in text
  assert "train.steps" not in text and "eval.n" not in text  # run length and eval may change
  assert _recorded(tmp_path)["optim"]["lr"] == 1e-4  # the record is the checkpoint's config


def test_run_length_eval_and_logging_changes_resume(tmp_path, no_build):
  _with_checkpoint(tmp_path, _config())
  changed = _config("rloo", "train.steps=500", "sft.steps=7", "eval.every=5", "log.every=3",
                    "checkpoint.every=4", "checkpoint.keep=9", "checkpoint.save_hf=true",
                    "checkpoint.best_metric=eval/greedy", "train.skip_nonfinite=true")
  with pytest.raises(Built):
    loop.train(changed, str(tmp_path))
  assert _recorded(tmp_path)["train"]["steps"] == 500


def test_forced_resume_is_recorded_and_warned(tmp_path, no_build, caplog):
  _with_checkpoint(tmp_path, _config())
  forced = _config("rloo", "optim.lr=0.001", "mesh.data=2", "mesh.fsdp=1",
                   "checkpoint.allow_changes=optim.lr,mesh.*")
  with pytest.raises(Built):
    sft.sft(forced, str(tmp_path))
  assert _recorded(tmp_path)["optim"]["lr"] == 1e-3
  assert "optim.lr: 0.0001 -> 0.001" in caplog.text
  with open(tmp_path / "config_changes.jsonl") as fh:
    record = json.loads(fh.readline())
  assert record["forced"] == ["mesh.data", "optim.lr"]  # allow_changes itself is no experiment
  assert record["changes"]["optim.lr"] == {"old": 1e-4, "new": 1e-3}


def test_a_partly_forced_change_names_what_is_still_refused(tmp_path, no_build):
  _with_checkpoint(tmp_path, _config())
  partly = _config("rloo", "optim.lr=0.001", "seed=3", "checkpoint.allow_changes=optim.lr")
  with pytest.raises(ConfigError, match="allow_changes=optim.lr,seed") as err:
    loop.train(partly, str(tmp_path))
  assert "optim.lr:" not in str(err.value)


@pytest.mark.parametrize("fresh", ["no checkpoint", "resume off"])
def test_without_a_resume_the_config_is_just_written(fresh, tmp_path, no_build):
  record_config(_config(), str(tmp_path))
  if fresh == "resume off":
    os.makedirs(tmp_path / "checkpoints" / "2")
  os.makedirs(tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1")  # a killed save: no step
  overrides = ["optim.lr=0.001"] + (["checkpoint.resume=false", "checkpoint.overwrite=true"]
                                    if fresh == "resume off" else [])
  with pytest.raises(Built):
    loop.train(_config("rloo", *overrides), str(tmp_path))
  assert _recorded(tmp_path)["optim"]["lr"] == 1e-3
  assert not os.path.exists(tmp_path / "config_changes.jsonl")


def test_only_process_zero_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(run_config.distributed, "is_main_process", lambda: False)
  record_config(_config(), str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")
