"""train.old_logp_source="sampler": the rollout's own log-probs stand in for the old policy's
teacher-forced pass only where they are the same numbers."""

import os

import jax
import numpy as np
import pytest

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.run.context import build_context
from prl_jax.run.batch import make_sequences
from prl_jax.run.state import init_state
from prl_jax.train.loop import build_functions
from prl_jax.train.rollouts import (PromptStream, collect_rollouts, response_array,
                                    sampler_logp_refusal)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def _config(**overrides):
  config = load_config_file(os.path.join(CONFIGS, "grpo.py"))
  apply_overrides(config, [f"{k}={v}" for k, v in {
      "rollout.prompts_per_step": 4, "rollout.n": 4, "rollout.max_new_tokens": 12,
      "rollout.temperature": 1.0, "task.num_train": 16, "task.num_eval": 4,
      "train.mini_batch_size": 0, "train.micro_batch_size": 0,
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
