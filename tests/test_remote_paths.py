"""Remote workdirs, models and data through prl_jax.run.paths, offline.

The remote stand-ins go through the same code as gs://: a local directory given as a file:// URL
(fsspec's local file system; Orbax gets the path), fsspec's memory file system for files that
must never touch the local disk, and a Hugging Face cache laid out in a temporary directory.
"""

import json
import os
import shutil

import pytest

from prl_jax.config import ConfigError
from prl_jax.run import paths
from prl_jax.run.metrics_file import MetricsWriter, read_metrics


@pytest.fixture
def memory_root():
  import fsspec
  fs = fsspec.filesystem("memory")
  root = "memory://prl_jax_test"
  yield root
  if fs.exists("/prl_jax_test"):
    fs.rm("/prl_jax_test", recursive=True)


def test_metrics_and_tensorboard_go_to_the_url_and_resume_truncates(memory_root, tmp_path,
                                                                   monkeypatch):
  """metrics.jsonl and TensorBoard events land in the memory file system (nothing under the
  working directory), and a resume at step 2 drops the rows the dead run wrote after it."""
  monkeypatch.chdir(tmp_path)
  workdir = paths.join(memory_root, "run")
  writer = MetricsWriter(workdir, progress=False, tensorboard=True)
  for step in (1, 2, 3):
    writer.write(step, {"train/reward": step / 10})
  writer.close()
  assert [r["step"] for r in read_metrics(paths.join(workdir, "metrics.jsonl"))] == [1, 2, 3]
  events = paths.listdir(paths.join(workdir, "tb"))
  assert events and all(n.startswith("events.out.tfevents") for n in events)
  assert paths.getsize(paths.join(workdir, "tb", events[0])) > 0
  assert os.listdir(tmp_path) == []  # no local directory named "memory:"

  resumed = MetricsWriter(workdir, progress=False, tensorboard=False, resume_step=2)
  resumed.write(3, {"train/reward": 0.9})
  resumed.close()
  rows = read_metrics(paths.join(workdir, "metrics.jsonl"))
  assert [(r["step"], r["train/reward"]) for r in rows] == [(1, 0.1), (2, 0.2), (3, 0.9)]


def test_orbax_path_normpath_and_bad_urls():
  assert paths.normpath("gs://bucket//run/") == "gs://bucket/run"
  assert paths.normpath("runs/demo/") == "runs/demo"
  assert paths.orbax_path("file:///tmp/run/checkpoints") == "/tmp/run/checkpoints"
  assert paths.orbax_path("gs://bucket/run") == "gs://bucket/run"
  with pytest.raises(ConfigError, match="checkpoints.*local path"):
    paths.orbax_path("memory://run")
  with pytest.raises(ConfigError, match="nosuchscheme"):
    paths.makedirs("nosuchscheme://bucket/run")


def test_local_copy_of_a_remote_model_directory(tmp_path, monkeypatch):
  monkeypatch.setenv("PRL_JAX_CACHE", str(tmp_path / "cache"))
  source = tmp_path / "remote" / "model"
  (source / "sub").mkdir(parents=True)
  (source / "config.json").write_text('{"a": 1}')
  (source / "sub" / "x.txt").write_text("x")
  local = paths.local_copy(f"file://{source}", "model.hf_dir")
  assert local != str(source) and json.load(open(os.path.join(local, "config.json"))) == {"a": 1}
  assert open(os.path.join(local, "sub", "x.txt")).read() == "x"
  with pytest.raises(ConfigError, match="model.hf_dir='file://.*does not exist"):
    paths.local_copy(f"file://{tmp_path}/missing", "model.hf_dir")


def _fake_hub_cache(root, repo_id: str, files: dict[str, str]) -> str:
  """A Hugging Face hub cache holding one snapshot of `repo_id`, as `hf download` leaves it."""
  revision = "0123456789abcdef0123456789abcdef01234567"
  repo = root / ("models--" + repo_id.replace("/", "--"))
  snapshot = repo / "snapshots" / revision
  snapshot.mkdir(parents=True)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(revision)
  for name, text in files.items():
    (snapshot / name).write_text(text)
  return str(snapshot)


def test_hub_id_resolves_from_the_offline_cache(tmp_path, monkeypatch):
  import huggingface_hub.constants as hub_constants
  cache = tmp_path / "hub"
  snapshot = _fake_hub_cache(cache, "someone/tiny-model", {"config.json": "{}"})
  monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
  monkeypatch.chdir(tmp_path)  # "someone/tiny-model" is no local path here
  assert paths.resolve_input("someone/tiny-model", "model.hf_dir") == snapshot
  with pytest.raises(ConfigError, match="model.hf_dir='someone/absent'.*not in the local cache"):
    paths.resolve_input("someone/absent", "model.hf_dir")
  (tmp_path / "local" / "dir").mkdir(parents=True)
  assert paths.resolve_input("local/dir", "init_from") == "local/dir"  # a local path wins


@pytest.mark.slow  # two RL runs in a URL workdir (~20 s); the path layer is tested above
def test_rl_run_and_resume_in_a_url_workdir(tmp_path, monkeypatch):
  """A 2-step RL run whose --workdir is a URL writes config.json, metrics.jsonl, TensorBoard
  events, checkpoints and eval outputs at the URL's place (none under the working directory,
  where a path-unaware open() would create "file:/..."), and a resume continues from step 2."""
  from prl_jax.eval.evaluate import run_eval
  from prl_jax.run.export import export_checkpoint
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  monkeypatch.chdir(tmp_path)
  where = tmp_path / "bucket" / "run"
  workdir = f"file://{where}"
  config = tiny_config("rloo", **{"train.steps": 2, "log.tensorboard": True, "eval.n": 2,
                                  "eval.num_problems": 2})
  train(config, workdir)
  assert sorted(os.listdir(tmp_path)) == ["bucket"]
  assert {"config.json", "metrics.jsonl", "tb", "checkpoints"} <= set(os.listdir(where))
  assert [r["step"] for r in read_metrics(str(where / "metrics.jsonl"))] == [1, 2]

  config.train.steps = 3  # a RESUMABLE key: the recorded config.json is read back from the URL
  train(config, workdir)
  assert [r["step"] for r in read_metrics(str(where / "metrics.jsonl"))] == [1, 2, 3]
  assert "3" in os.listdir(where / "checkpoints")
  run_eval(config, workdir)
  assert json.load(open(where / "eval" / "results.json"))["settings"]["n"] == 2
  assert (where / "eval" / "pass_at_k.png").stat().st_size > 0
  assert export_checkpoint(workdir, f"{workdir}/export", step=2) == 2  # config.json read back
  assert {"config.json", "model.safetensors"} <= set(os.listdir(where / "export"))
  assert sorted(os.listdir(tmp_path)) == ["bucket"]


def test_config_with_a_hub_model_and_a_url_data_file_loads_offline(tmp_path, monkeypatch):
  """model.hf_dir as a Hub id (from a pre-populated offline cache) and task.train_file as a URL
  resolve to local copies that the run builds its context and weights from."""
  import huggingface_hub.constants as hub_constants
  import jax
  from prl_jax.data import math_files
  from prl_jax.models import hf
  from prl_jax.models.config import preset
  from prl_jax.models.tokenizer import CharTokenizer
  from prl_jax.models.transformer import init_params
  from prl_jax.run.context import build_context, initial_policy_params
  from prl_jax.run.model_dir import resolve_inputs
  from tests.test_train_loop import tiny_config

  model = tmp_path / "model"
  cfg = preset("tiny", vocab_size=CharTokenizer().vocab_size)
  hf.save_hf(str(model), cfg, init_params(cfg, jax.random.key(3)))
  CharTokenizer().save(str(model))
  cache = tmp_path / "hub"
  snapshot = _fake_hub_cache(cache, "someone/tiny-char", {})
  shutil.copytree(model, snapshot, dirs_exist_ok=True)
  monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setenv("PRL_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.chdir(tmp_path)
  data = tmp_path / "bucket" / "train.jsonl"
  data.parent.mkdir()
  from prl_jax.data.registry import get_task
  math_files.write_jsonl(get_task("arithmetic").generate(8, (1, 2), 0, low=1, high=9), str(data))

  config = tiny_config("rloo", **{"model.hf_dir": "someone/tiny-char", "task.name": "arithmetic",
                                  "task.train_file": f"file://{data}"})
  resolve_inputs(config)
  assert config.model.hf_dir == snapshot
  assert config.task.train_file.startswith(str(tmp_path / "cache"))
  ctx = build_context(config, str(tmp_path / "run"))
  assert len(ctx.train_examples) == 8
  params = initial_policy_params(ctx)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      init_params(cfg, jax.random.key(0)))

  config.model.hf_dir = "someone/not-cached"
  with pytest.raises(ConfigError, match="model.hf_dir='someone/not-cached'"):
    resolve_inputs(config)


def test_locate_a_model_given_as_a_url(tmp_path, monkeypatch):
  """`--model URL` (generate, eval) names the local copy of the HF directory, not the URL."""
  from prl_jax.run.model_dir import locate
  monkeypatch.setenv("PRL_JAX_CACHE", str(tmp_path / "cache"))
  model = tmp_path / "bucket" / "final_hf"
  model.mkdir(parents=True)
  (model / "config.json").write_text("{}")
  (model / "model.safetensors").write_bytes(b"")
  kind, directory, step = locate(f"file://{model}", "--model")
  assert (kind, step) == ("hf", None)
  assert directory.startswith(str(tmp_path / "cache")) and os.path.isfile(
      os.path.join(directory, "config.json"))


def test_erprm_refuses_a_url_workdir_before_any_work():
  """prl-jax erprm writes its labels and PRMs locally: a URL workdir is refused up front (it
  would otherwise become a local directory named after its scheme)."""
  from prl_jax.config import load_config_file
  from prl_jax.eval.prm_experiment import run_erprm

  config = load_config_file("configs/mini/sft.py")
  with pytest.raises(ConfigError, match="local --workdir"):
    run_erprm(config, "gs://bucket/run")
  assert not os.path.exists("gs:")
