"""`prl-jax export`: a checkpoint step of a run (policy or PRIME's PRM) as an HF directory that
loads back to the checkpoint's arrays; exports keep the source checkpoint's dtype, model_type,
generation config and special-token ids."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest

from prl_jax.cli import main
from prl_jax.models import hf
from prl_jax.models.config import preset
from prl_jax.models.transformer import init_params
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.context import build_context
from prl_jax.run.export import export_checkpoint, run_config
from prl_jax.run.state import init_state
from prl_jax.algorithms.registry import get_recipe
from prl_jax.train.loop import train
from tests.test_train_loop import tiny_config


@pytest.fixture(scope="module")
def prime_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("prime"))
  train(tiny_config("prime", **{"train.steps": 2, "checkpoint.every": 1}), workdir)
  return workdir


def _restored(workdir, step):
  config = run_config(workdir)
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    return ckpt.restore(target, step)[0]


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_policy_and_prm_of_a_step(prime_run, tmp_path):
  state = _restored(prime_run, 1)
  assert main(["export", "--workdir", prime_run, "--step", "1", "--out",
               str(tmp_path / "policy")]) == 0
  _, params = hf.load_hf(str(tmp_path / "policy"))
  _assert_same(params, state.policy.params)
  assert os.path.exists(tmp_path / "policy" / "char_tokenizer.json")
  assert export_checkpoint(prime_run, str(tmp_path / "prm"), what="prm") == 2
  _, prm = hf.load_hf(str(tmp_path / "prm"))
  _assert_same(prm, _restored(prime_run, 2).prm.params)
  assert main(["export", "--workdir", prime_run, "--step", "7", "--out", str(tmp_path / "x")]) == 2


def test_a_run_recorded_before_a_key_existed_still_exports(prime_run, tmp_path):
  """config.json without keys added later (here task.register, algo.oracle): they read today's
  defaults, the recorded values stay."""
  import json
  import shutil
  old = str(tmp_path / "old_run")
  shutil.copytree(prime_run, old)
  with open(os.path.join(old, "config.json")) as fh:
    recorded = json.load(fh)
  del recorded["task"]["register"], recorded["algo"]["oracle"]
  with open(os.path.join(old, "config.json"), "w") as fh:
    json.dump(recorded, fh)
  config = run_config(old)
  assert config.task.register.bug_keys == "op" and config.algo.oracle.coef == 1.0
  assert config.train.steps == 2 and config.method == "prime"
  assert export_checkpoint(old, str(tmp_path / "policy"), step=1) == 1
  _assert_same(hf.load_hf(str(tmp_path / "policy"))[1], _restored(prime_run, 1).policy.params)


def test_export_errors_are_one_line(tmp_path, capsys):
  assert main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
  assert "no config.json" in capsys.readouterr().err


def test_save_like_keeps_the_sources_dtype_type_and_generation_settings(tmp_path):
  cfg = preset("tiny")
  params = init_params(cfg, jax.random.key(0))
  source = tmp_path / "source"
  hf.save_hf(str(source), cfg, params, model_type="mistral", dtype=ml_dtypes.bfloat16)
  with open(source / "config.json") as fh:
    written = json.load(fh)
  written.update(bos_token_id=1, eos_token_id=7, pad_token_id=0)
  with open(source / "config.json", "w") as fh:
    json.dump(written, fh)
  with open(source / "generation_config.json", "w") as fh:
    json.dump({"temperature": 0.6, "eos_token_id": 7}, fh)
  hf.save_like(str(tmp_path / "out"), cfg, params, str(source))
  with open(tmp_path / "out" / "config.json") as fh:
    out = json.load(fh)
  assert out["model_type"] == "mistral" and out["dtype"] == "bfloat16"
  assert (out["bos_token_id"], out["eos_token_id"], out["pad_token_id"]) == (1, 7, 0)
  with open(tmp_path / "out" / "generation_config.json") as fh:
    assert json.load(fh)["temperature"] == 0.6
  _, loaded = hf.load_hf(str(tmp_path / "out"))
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y).astype(ml_dtypes.bfloat16)
                                  .astype(np.float32))
  hf.save_like(str(tmp_path / "plain"), cfg, params)  # no source: float32, the config's type
  with open(tmp_path / "plain" / "config.json") as fh:
    assert json.load(fh)["dtype"] == "float32"
