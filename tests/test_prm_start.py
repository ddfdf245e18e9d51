"""Where a PRM starts (algo.erprm.prm_init): the policy, or a checkpoint of any architecture that
reads the policy's tokens, which the PRM then trains, exports and scores under."""

import dataclasses
import os
import types

import jax
import ml_collections
import numpy as np
import pytest

from prl_jax.config import ConfigError
from prl_jax.models import hf
from prl_jax.models.config import preset
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.models.transformer import init_params
from prl_jax.prm import model as prm

TOK = CharTokenizer()
CFG = preset("tiny", vocab_size=TOK.vocab_size)
# A PRM larger than the policy in every dimension that is not the vocabulary.
LARGER = dataclasses.replace(CFG, num_layers=CFG.num_layers + 1,
                             intermediate_size=CFG.intermediate_size * 2)


def _ctx(prm_init, model_cfg=CFG):
  config = ml_collections.ConfigDict({"algo": {"erprm": {"prm_init": prm_init}}})
  return types.SimpleNamespace(config=config, model_cfg=model_cfg,
                               place_state=lambda x, cfg=None: x)


def _leaves(params):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_default_is_the_policy_itself():
  policy = init_params(CFG, jax.random.key(0))
  start = prm.prm_start(_ctx(""), policy)
  assert start.params is policy and start.model_cfg == CFG and start.like is None


def test_a_checkpoint_of_the_policys_architecture_is_loaded(tmp_path):
  policy = init_params(CFG, jax.random.key(0))
  other = init_params(CFG, jax.random.key(1))
  hf.save_hf(str(tmp_path), CFG, other)
  # Runtime choices (compute dtype, remat) are the run's, not the checkpoint's.
  runtime = dataclasses.replace(CFG, dtype="bfloat16", remat="full")
  start = prm.prm_start(_ctx(str(tmp_path), runtime), policy)
  for got, want in zip(_leaves(start.params), _leaves(other)):
    np.testing.assert_array_equal(got, want)
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(start.params), _leaves(policy)))
  assert start.model_cfg == runtime and start.like == str(tmp_path)


def test_a_larger_checkpoint_starts_a_prm_of_its_own_architecture(tmp_path):
  hf.save_hf(str(tmp_path), LARGER, init_params(LARGER, jax.random.key(1)))
  start = prm.prm_start(_ctx(str(tmp_path)), init_params(CFG, jax.random.key(0)))
  assert start.model_cfg == LARGER


def test_bad_checkpoints_are_config_errors(tmp_path):
  policy = init_params(CFG, jax.random.key(0))
  with pytest.raises(ConfigError, match="prm_init.*no config.json"):
    prm.prm_start(_ctx(str(tmp_path / "missing")), policy)
  other_vocab = dataclasses.replace(CFG, vocab_size=CFG.vocab_size + 8)
  hf.save_hf(str(tmp_path), other_vocab, init_params(other_vocab, jax.random.key(1)))
  with pytest.raises(ConfigError, match="vocabulary of .* tokens but the policy"):
    prm.prm_start(_ctx(str(tmp_path)), policy)


def test_a_larger_prm_trains_exports_and_scores_under_its_own_config(tmp_path):
  """A real run context: the PRM from a larger checkpoint trains (its loss falls on a batch it
  sees again), its export holds the larger config and its weights, and the frozen scorer the
  RAFT arms use reads it back and scores the policy's responses."""
  from prl_jax.config import apply_overrides, load_config_file
  from prl_jax.prm.frozen import load_frozen_prm, score_rollouts
  from prl_jax.run.context import build_context

  policy_dir, prm_dir = str(tmp_path / "policy"), str(tmp_path / "larger")
  hf.save_hf(policy_dir, CFG, init_params(CFG, jax.random.key(0)))
  TOK.save(policy_dir)
  hf.save_hf(prm_dir, LARGER, init_params(LARGER, jax.random.key(1)))
  config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "mini",
                                         "sft.py"))
  apply_overrides(config, [f"init_from={policy_dir}", f"algo.erprm.prm_init={prm_dir}",
                           "mesh.num_devices=1", "log.progress=false", "task.num_train=16",
                           "task.num_eval=4"])
  ctx = build_context(config, str(tmp_path / "run"), reads_prm=False)
  start = prm.prm_start(ctx, init_params(CFG, jax.random.key(0)))
  examples = ctx.train_examples[:4]
  records = [{"id": i, "prompt": e["prompt"], "steps": ["1+1=2\n", "2+2=5"],
              "labels": {"1.0": [1.0, 0.0]}, "outcome": 0.0, "finished": True}
             for i, e in enumerate(examples)]
  spec = prm.PrmSpec("larger PRM", "prm", "1.0", plus_token="+", minus_token="-")
  out = str(tmp_path / "prm")
  summary = prm.train_prm(ctx, start, records, spec, out, steps=12, batch_size=4, lr=1e-2,
                          grad_clip=1.0, seed=0)
  assert summary["final_loss"] < summary["first_loss"]
  loaded_spec, loaded_cfg, params = prm.load_prm(out)
  assert loaded_spec == spec
  assert (loaded_cfg.num_layers, loaded_cfg.intermediate_size) == (LARGER.num_layers,
                                                                   LARGER.intermediate_size)
  assert len(_leaves(params)) == len(_leaves(init_params(LARGER, jax.random.key(0))))
  config.algo.erprm.prm_dir = out
  frozen = load_frozen_prm(ctx)
  texts = ["1+1=2\n2+2=4", "1+1=3\n3+2=5"]
  scores = score_rollouts(frozen, ctx, [examples[0]] * 2, texts, np.array([True, True]), 2)
  assert scores.solution.shape == (2,) and np.all((scores.solution > 0) & (scores.solution < 1))
