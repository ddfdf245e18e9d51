"""Sampler lanes: a call's prompts sampled as several calls at once on host threads draw exactly
what the whole call draws (same uniforms per row, same prompt bucket), whatever the split."""

import threading

import jax
import numpy as np
import pytest

from prl_jax import decode, sampling, sharding
from prl_jax.config import ConfigError
from prl_jax.host_lanes import resolve_lanes
from prl_jax.models.config import preset
from prl_jax.models.transformer import init_params
from prl_jax.sampling import SamplingConfig, sample_in_calls

CFG = preset("tiny")
# The longest prompt (bucket 32) sits in the first share, so the later shares alone would
# bucket to 8: a share must keep the whole call's width to draw the same tokens.
PROMPTS = [[5 + i for i in range(20)], [9, 9, 30], [70, 1, 12, 88, 4], [33], [8, 2, 61],
           [17, 3], [44, 45, 46, 47]]


@pytest.fixture(scope="module")
def params():
  """Random params scaled up (std ~0.1) so draws depend on the logits, not only the uniforms."""
  return jax.tree.map(lambda x: x * 5.0 if x.ndim >= 2 else x,
                      init_params(CFG, jax.random.key(0)))


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("lanes", [2, 3, 7])
def test_lanes_sample_what_the_whole_call_samples(params, lanes, compact):
  cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, n=3, eos_id=7, compact_rows=compact,
                       attention_segments=2)
  whole, = sample_in_calls(params, CFG, [PROMPTS], jax.random.key(3), cfg, lanes=1)
  split, = sample_in_calls(params, CFG, [PROMPTS], jax.random.key(3), cfg, lanes=lanes)
  assert split.tokens.shape == (len(PROMPTS) * 3, 16)
  assert whole.mask.any(axis=1).all() and not whole.mask.all()  # some rows end at EOS
  for name in ("tokens", "mask", "lengths", "truncated"):
    np.testing.assert_array_equal(getattr(split, name), getattr(whole, name), err_msg=name)
  np.testing.assert_allclose(split.logprobs, whole.logprobs, atol=1e-5)


def test_lanes_run_on_their_own_threads_with_windows_over_the_call(params, monkeypatch):
  calls = []
  real = sampling.sample

  def recording(params, model_cfg, prompts, key, scfg, **kwargs):
    calls.append((threading.get_ident(), len(prompts), kwargs.get("draw_window")))
    return real(params, model_cfg, prompts, key, scfg, **kwargs)

  monkeypatch.setattr(sampling, "sample", recording)
  cfg = SamplingConfig(max_new_tokens=4, n=2)
  parts = sample_in_calls(params, CFG, [PROMPTS, PROMPTS[:2]], jax.random.key(0), cfg, lanes=2)
  assert [p.tokens.shape[0] for p in parts] == [14, 4]
  # 7 prompts: two shares of 4 (the last padded by a copy of prompt 6), 8 rows each out of the
  # call's 14; then 2 prompts, one each.
  assert sorted(c[1:] for c in calls) == sorted([(4, (0, 14)), (4, (8, 14)), (1, (0, 4)),
                                                 (1, (2, 4))])
  assert threading.get_ident() not in {c[0] for c in calls}


def test_draw_window_takes_the_whole_draws_columns_and_pads_with_one_half():
  key = jax.random.key(5)
  whole = np.asarray(decode.draw_uniforms(key, 6, 10))
  np.testing.assert_array_equal(np.asarray(decode.draw_uniforms(key, 6, 4, 3, 10)), whole[:, 3:7])
  tail = np.asarray(decode.draw_uniforms(key, 6, 4, 8, 10))
  np.testing.assert_array_equal(tail[:, :2], whole[:, 8:])
  np.testing.assert_array_equal(tail[:, 2:], 0.5)


def test_auto_lanes():
  assert jax.default_backend() == "cpu"
  one = sharding.make_mesh(data=1, devices=jax.devices()[:1])
  assert resolve_lanes(0) == 2 and resolve_lanes(0, one) == 2
  assert resolve_lanes(0, sharding.make_mesh(data=2, fsdp=2, tensor=2)) == 1  # a mesh spreads it
  assert resolve_lanes(3) == 3
  with pytest.raises(ValueError, match="lanes"):
    resolve_lanes(-1)


def test_negative_lanes_are_a_config_error(tmp_path):
  from prl_jax.run.context import build_context
  from tests.test_train_loop import tiny_config
  with pytest.raises(ConfigError, match="rollout.lanes"):
    build_context(tiny_config("grpo", **{"rollout.lanes": -1}), str(tmp_path))
