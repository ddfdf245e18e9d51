"""Where PPO's old-policy log-probs come from (train.old_logp_source): "sampler", the rollout's
own log-probs, only where they are the teacher-forced pass's numbers; "auto", the update's own
forward, only where the update runs at the sampling parameters, with the same step as a pass."""

import os

import jax
import numpy as np
import pytest

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.run.context import build_context
from prl_jax.run.batch import make_sequences
from prl_jax.run.state import init_state
from prl_jax.train.loop import build_functions, rl_step
from prl_jax.train.rollouts import (PromptStream, collect_rollouts, resolve_old_logp,
                                    response_array, sampler_logp_refusal)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def _config(**overrides):
  config = load_config_file(os.path.join(CONFIGS, "grpo.py"))
  apply_overrides(config, [f"{k}={v}" for k, v in {
      "rollout.prompts_per_step": 4, "rollout.n": 4, "rollout.max_new_tokens": 12,
      "rollout.temperature": 1.0, "task.num_train": 16, "task.num_eval": 4,
      "train.mini_batch_size": 0, "train.micro_batch_size": 0, "train.ppo_epochs": 1,
      "log.progress": False, "log.tensorboard": False, "mesh.num_devices": 1,
      "train.old_logp_source": "sampler", **overrides}.items()])
  return config


def test_sampler_logprobs_equal_the_old_policy_forward(tmp_path):
  ctx = build_context(_config(), str(tmp_path))
  recipe = get_recipe("grpo")
  fns = build_functions(ctx, recipe)
  state = ctx.place_state(init_state(ctx, recipe))
  rollouts = collect_rollouts(ctx, state.policy.params, PromptStream(ctx.train_examples, 0),
                              jax.random.key(3))
  seq = make_sequences(rollouts.prompt_ids, rollouts.response_ids, ctx.prompt_len,
                       ctx.config.rollout.max_new_tokens, ctx.tokenizer.pad_id)
  forward = np.asarray(fns.logprobs(state.policy.params, ctx.place_batch(seq)))
  sampled = response_array(rollouts.logprobs, seq.response_mask.shape[1])
  mask = seq.response_mask.astype(bool)
  assert mask.sum() > 16 and (sampled[~mask] == 0).all()
  # A one-token misalignment or a tempered distribution would be off by far more than this.
  np.testing.assert_allclose(sampled[mask], forward[mask], atol=1e-4)
  shifted = np.abs(sampled[:, 1:] - forward[:, :-1])[mask[:, 1:]]
  assert shifted.max() > 1e-2  # the comparison can tell a misalignment apart


@pytest.mark.parametrize("override,reason", [
    ({"rollout.temperature": 0.7}, "temperature"),
    ({"rollout.top_p": 0.9}, "top_p"),
])
def test_sampler_logprobs_refused_when_they_differ(tmp_path, override, reason):
  ctx = build_context(_config(**override), str(tmp_path))
  assert reason in sampler_logp_refusal(ctx.sampling, ctx.model_cfg)
  with pytest.raises(ValueError, match="old_logp_source"):
    build_functions(ctx, get_recipe("grpo"))


def test_sampler_logprobs_refused_in_bfloat16(tmp_path):
  ctx = build_context(_config(), str(tmp_path))
  assert sampler_logp_refusal(ctx.sampling, ctx.model_cfg) is None
  assert "float32" in sampler_logp_refusal(ctx.sampling, ctx.model_cfg.replace(dtype="bfloat16"))


def _one_step(source, tmp_path):
  """The state and metrics after one RL step of configs/mini/grpo.py (KL loss, the tiny model)
  from a fixed policy, prompts and key, with train.old_logp_source=`source`. The outcome is a
  reward of the response's length (a random policy solves no chain), so the advantages are not
  all zero."""
  reward = tmp_path / "length_reward.py"
  reward.write_text("def length_reward(completions, **kwargs):\n"
                    "  return [len(c) % 4 / 3 for c in completions]\n")
  config = _config(**{"train.old_logp_source": source, "algo.loss.kl_coef": 0.04,
                      "model.preset": "tiny",
                      "task.reward_fn": f"{reward}:length_reward"})
  ctx = build_context(config, str(tmp_path / source))
  recipe = get_recipe(ctx.config.method)
  fns = build_functions(ctx, recipe)
  state = ctx.place_state(init_state(ctx, recipe))
  new_state, metrics = rl_step(ctx, recipe, fns, state, PromptStream(ctx.train_examples, 0))
  return fns.old_logp, new_state, metrics


def test_auto_takes_the_old_log_probs_from_the_update_and_changes_nothing(tmp_path):
  source, auto, auto_metrics = _one_step("auto", tmp_path)
  assert source == "update"
  _, forward, forward_metrics = _one_step("forward", tmp_path)
  assert 0 < forward_metrics["train/reward"] < 1 and forward_metrics["policy/grad_norm"] > 0
  for key in ("policy/pg_loss", "policy/kl", "policy/grad_norm", "policy/entropy"):
    assert auto_metrics[key] == pytest.approx(forward_metrics[key], rel=1e-4, abs=1e-7), key
  assert auto_metrics["policy/clipfrac"] == forward_metrics["policy/clipfrac"] == 0
  # A loss that lost the stop-gradient (ratio exp(logp - logp), no policy gradient) or read the
  # zeros left in the batch would move the parameters elsewhere.
  for a, b in zip(jax.tree_util.tree_leaves(auto.policy.params),
                  jax.tree_util.tree_leaves(forward.policy.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("source,updates,loss,reads,expected", [
    ("auto", 1, "ppo", False, "update"),
    ("auto", 2, "ppo", False, "forward"),  # the second update's ratio needs pi_old
    ("auto", 2, "nll", False, "update"),  # RAFT's likelihood never reads pi_old
    ("auto", 1, "ppo", True, "forward"),  # PRL's KL-to-go, rePIRL's weights: before the update
    ("forward", 1, "ppo", False, "forward"),
    ("sampler", 1, "ppo", False, "sampler"),
])
def test_auto_resolves_to_the_update_only_at_one_update_per_step(source, updates, loss, reads,
                                                                 expected):
  assert resolve_old_logp(source, updates_per_step=updates, policy_loss=loss,
                          reads_old_logp=reads) == expected


@pytest.mark.parametrize("method,overrides,expected", [
    ("grpo", {}, "update"),
    ("grpo", {"train.ppo_epochs": 2}, "forward"),
    ("grpo", {"train.mini_batch_size": 8}, "forward"),
    ("prl", {}, "forward"),
    ("repirl", {}, "forward"),
])
def test_runs_resolve_auto_by_their_updates_and_readers(method, overrides, expected, tmp_path):
  config = _config(**{"train.old_logp_source": "auto", **overrides})
  config.method = method
  ctx = build_context(config, str(tmp_path))
  assert build_functions(ctx, get_recipe(method)).old_logp == expected
