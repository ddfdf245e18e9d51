"""The training loop end to end on a tiny model: exact resume, and config errors up front."""

import os

import jax
import numpy as np
import pytest

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.state import init_state
from prl_jax.train.loop import train
from prl_jax.run.metrics_file import read_metrics
from prl_jax.run.context import build_context, validate
from prl_jax.algorithms.registry import get_recipe

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def tiny_config(method, **overrides):
  config = load_config_file(os.path.join(CONFIGS, f"{method}.py"))
  config.rollout.prompts_per_step = 4
  config.rollout.n = 4
  config.rollout.max_new_tokens = 12
  config.train.mini_batch_size = 8  # two mini-batches x two epochs: the multi-step update path
  config.task.num_train = 32
  config.task.num_eval = 4
  config.train.steps = 4
  config.checkpoint.every = 2
  config.log.progress = False
  config.log.tensorboard = False
  config.mesh.num_devices = 1
  apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
  return config


def _restore_final(config, workdir):
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return ckpt.restore(target)[0]


def _without_timing(rows):
  return [{k: v for k, v in row.items() if not k.startswith(("time/", "rollout/tokens"))}
          for row in rows]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
  """A PRM directory as `prl-jax erprm` writes it (HF weights, tokenizer, prm.json), untrained."""
  from prl_jax.models import hf
  from prl_jax.models.config import preset
  from prl_jax.models.tokenizer import CharTokenizer
  from prl_jax.models.transformer import init_params
  from prl_jax.prm.model import PrmSpec

  directory = str(tmp_path_factory.mktemp("prm"))
  tokenizer = CharTokenizer()
  cfg = preset("tiny", vocab_size=tokenizer.vocab_size)
  hf.save_hf(directory, cfg, init_params(cfg, jax.random.key(7)))
  tokenizer.save(directory)
  PrmSpec(name="ER-PRM (eta=2)", kind="prm", label="2.0").save(directory)
  return directory


def _method_overrides(method, prm_dir):
  if method == "repirl-implicit":  # rePIRL's earlier reconstruction (an implicit PRM)
    return {"algo.repirl.mode": "implicit", "algo.repirl.lam": 0.1}
  return {"algo.erprm.prm_dir": prm_dir} if method == "erprm" else {}


# PRIME (a trained PRM and a reference) carries the most state through a restore; rePIRL (a
# reward-head PRM, its batch with demonstrations), PRL (no PRM), ER-PRM (a frozen one) and
# rePIRL's implicit mode (PRIME's state shape) run as slow (make test-slow).
@pytest.mark.parametrize("method", ["prime", pytest.param("repirl", marks=pytest.mark.slow),
                                    pytest.param("repirl-implicit", marks=pytest.mark.slow),
                                    pytest.param("prl", marks=pytest.mark.slow),
                                    pytest.param("erprm", marks=pytest.mark.slow)])
def test_resume_is_bit_exact(method, prm_dir, tmp_path):
  """"4 steps" equals "2 steps, stop, restore, 2 steps": params, PRM, optimizer, metrics."""
  config = tiny_config(method.split("-")[0], **_method_overrides(method, prm_dir))
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train(config, straight)
  train(config, resumed, max_steps=2)
  assert [r["step"] for r in read_metrics(os.path.join(resumed, "metrics.jsonl"))] == [1, 2]
  train(config, resumed)

  a, b = _restore_final(config, straight), _restore_final(config, resumed)
  assert int(a.step) == int(b.step) == 4
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _without_timing(read_metrics(os.path.join(straight, "metrics.jsonl"))) == \
      _without_timing(read_metrics(os.path.join(resumed, "metrics.jsonl")))


def test_erprm_fine_tunes_on_the_prm_pick_of_each_group(prm_dir, tmp_path):
  config = tiny_config("erprm", **{"algo.erprm.prm_dir": prm_dir, "train.steps": 2})
  train(config, str(tmp_path))
  rows = read_metrics(os.path.join(str(tmp_path), "metrics.jsonl"))
  for row in rows:  # one of every group of 4, whatever its outcome
    assert row["raft/kept_fraction"] == pytest.approx(0.25)
    assert 0.0 <= row["erprm/kept_accuracy"] <= 1.0 and 0.0 < row["erprm/score_mean"] < 1.0
    assert "prm/loss" not in row  # the PRM is frozen
  assert rows[-1]["policy/grad_norm"] > 0.0


def test_erprm_needs_a_matching_prm(prm_dir, tmp_path):
  with pytest.raises(ConfigError, match="algo.erprm.prm_dir"):
    validate(tiny_config("erprm"))
  with pytest.raises(ConfigError, match="algo.erprm.prm_dir"):
    validate(tiny_config("erprm", **{"algo.erprm.prm_dir": str(tmp_path / "absent")}))
  from prl_jax.prm.frozen import load_frozen_prm
  ctx = build_context(tiny_config("erprm", **{"algo.erprm.prm_dir": str(tmp_path)}),
                      str(tmp_path / "run"))
  with pytest.raises(ConfigError, match="prm.json"):
    load_frozen_prm(ctx)


def test_unknown_key_is_named_with_suggestion():
  config = tiny_config("prime")
  with pytest.raises(ConfigError, match="Did you mean rollout.n"):
    apply_overrides(config, ["rollout.nn=3"])


def test_delimiter_override_understands_escapes():
  config = tiny_config("prl", **{"algo.steps.delimiter": "\\n"})  # as typed in a shell: \n
  assert config.algo.steps.delimiter == "\n"
  apply_overrides(config, ["algo.steps.delimiter=;"])
  assert config.algo.steps.delimiter == ";"


def test_group_size_one_is_refused_for_leave_one_out_methods():
  with pytest.raises(ConfigError, match="rollout.n >= 2"):
    validate(tiny_config("rloo", **{"rollout.n": 1}))


def test_missing_data_file_fails_before_compiling(tmp_path):
  config = tiny_config("prime", **{"task.train_file": str(tmp_path / "absent.jsonl")})
  with pytest.raises(ConfigError, match="task.train_file"):
    validate(config)


def test_batch_not_divisible_by_mesh():
  config = tiny_config("prime", **{"mesh.data": 8, "rollout.prompts_per_step": 3,
                                "train.mini_batch_size": 0})
  with pytest.raises(ConfigError, match="mesh"):
    validate(config)


def test_periodic_eval_is_logged_and_reproducible(tmp_path):
  """eval.every=2 adds eval/* metrics at steps 2 and 4; the same run gives the same numbers."""
  config = tiny_config("rloo", **{"eval.every": 2, "eval.n": 2, "eval.num_problems": 4})
  first, second = str(tmp_path / "a"), str(tmp_path / "b")
  train(config, first)
  train(config, second, max_steps=2)
  train(config, second)
  rows = read_metrics(os.path.join(first, "metrics.jsonl"))
  evals = [{k: v for k, v in r.items() if k.startswith("eval/")} for r in rows]
  assert [sorted(e) for e in evals] == [[], sorted(["eval/mean@2", "eval/pass@2",
                                                   "eval/greedy"])] * 2
  for e in evals[1::2]:
    assert 0.0 <= e["eval/mean@2"] <= e["eval/pass@2"] <= 1.0
  resumed = read_metrics(os.path.join(second, "metrics.jsonl"))
  assert [{k: v for k, v in r.items() if k.startswith("eval/")} for r in resumed] == evals


def test_rollouts_in_sampler_calls_of_at_most_max_rows(tmp_path):
  from prl_jax.sampling import sample
  from prl_jax.train.rollouts import sample_rows
  from prl_jax.run.context import initial_policy_params

  config = tiny_config("rloo", **{"rollout.max_rows": 8})  # 4 prompts x 4: two calls of 2 prompts
  ctx = build_context(config, str(tmp_path))
  params = initial_policy_params(ctx)
  prompts = [ctx.tokenizer.encode(ex["prompt"]) for ex in ctx.train_examples[:4]]
  key = jax.random.key(5)
  tokens, mask, truncated = sample_rows(ctx, params, prompts, key)
  assert tokens.shape[0] == mask.shape[0] == truncated.shape[0] == 16 and mask.dtype == bool
  for i in range(2):  # call i: prompts 2i, 2i+1 with key fold_in(key, i), rows 8i..8i+7
    want = sample(params, ctx.model_cfg, prompts[2 * i:2 * i + 2], jax.random.fold_in(key, i),
                  ctx.sampling)
    np.testing.assert_array_equal(tokens[8 * i:8 * i + 8], np.asarray(want.tokens))
  ctx.config.rollout.max_rows = 0  # one call with the key itself
  np.testing.assert_array_equal(sample_rows(ctx, params, prompts, key)[0],
                                np.asarray(sample(params, ctx.model_cfg, prompts, key,
                                                  ctx.sampling).tokens))
  with pytest.raises(ConfigError, match="rollout.max_rows"):
    validate(tiny_config("rloo", **{"rollout.max_rows": 6}))


def test_train_closes_the_verifier_it_built(tmp_path, monkeypatch):
  """The answer-checking pool of a math run does not outlive train()."""
  from prl_jax.run import context
  from prl_jax.rewards.verify import Verifier

  closed = []

  class Spy(Verifier):
    def close(self):
      closed.append(True)
      super().close()

  monkeypatch.setattr(context, "make_verifier", lambda config: Spy(workers=0))
  train(tiny_config("rloo", **{"train.steps": 1}), str(tmp_path))
  assert closed == [True]
