"""Where a PRM starts (algo.erprm.prm_init): the policy, or a checkpoint of its architecture."""

import dataclasses
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


def _ctx(prm_init, model_cfg=CFG):
  config = ml_collections.ConfigDict({"algo": {"erprm": {"prm_init": prm_init}}})
  return types.SimpleNamespace(config=config, model_cfg=model_cfg, place_state=lambda x: x)


def _leaves(params):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_default_is_the_policy_itself():
  policy = init_params(CFG, jax.random.key(0))
  assert prm.start_params(_ctx(""), policy) is policy


def test_a_checkpoint_of_the_policys_architecture_is_loaded(tmp_path):
  policy = init_params(CFG, jax.random.key(0))
  other = init_params(CFG, jax.random.key(1))
  hf.save_hf(str(tmp_path), CFG, other)
  # Runtime choices (compute dtype, remat) may differ from the checkpoint's.
  runtime = dataclasses.replace(CFG, dtype="bfloat16", remat="full")
  start = prm.start_params(_ctx(str(tmp_path), runtime), policy)
  for got, want in zip(_leaves(start), _leaves(other)):
    np.testing.assert_array_equal(got, want)
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(start), _leaves(policy)))


def test_bad_checkpoints_are_config_errors(tmp_path):
  policy = init_params(CFG, jax.random.key(0))
  with pytest.raises(ConfigError, match="prm_init.*no config.json"):
    prm.start_params(_ctx(str(tmp_path / "missing")), policy)
  wider = dataclasses.replace(CFG, intermediate_size=CFG.intermediate_size * 2)
  hf.save_hf(str(tmp_path), wider, init_params(wider, jax.random.key(1)))
  with pytest.raises(ConfigError, match="intermediate_size"):
    prm.start_params(_ctx(str(tmp_path)), policy)
