"""Speed changes of the sampler that must not change its results: the n samples of a prompt
share one prefill."""

import jax
import numpy as np
import pytest

from prl_jax import sharding
from prl_jax.decode import decode_jit, prefill_jit
from prl_jax.models.config import preset
from prl_jax.models.transformer import init_params
from prl_jax.sampling import SamplingConfig, prepare_prompts, sample

CFG = preset("tiny")
PROMPTS = [[5, 17, 3, 44, 8, 61, 2], [9, 9, 30], [70, 1, 12, 88, 4], [33]]
NEW = 12


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.key(0))


def _decode_every_row(params, scfg, key):
  """The sampler as it was: every one of the B * n rows prefilled on its own."""
  tokens, mask = prepare_prompts(PROMPTS, CFG, scfg)
  statics = dict(model_cfg=CFG, scfg=scfg, rules=sharding.hashable_rules(sharding.DEFAULT_RULES))
  state, blocks = prefill_jit(params, tokens, mask, **statics)
  out, _ = decode_jit(params, state, blocks, key, **statics)
  return out


@pytest.mark.parametrize("n", [1, 3])
def test_shared_prefill_equals_a_prefill_per_row(params, n):
  scfg = SamplingConfig(max_new_tokens=NEW, temperature=1.0, n=n, eos_id=2, pad_id=0)
  key = jax.random.key(4)
  shared = sample(params, CFG, PROMPTS, key, scfg)
  every = _decode_every_row(params, scfg, key)
  np.testing.assert_array_equal(np.asarray(shared.tokens), np.asarray(every["tokens"]))
  np.testing.assert_array_equal(np.asarray(shared.mask), np.asarray(every["mask"]))
  # The same per-row arithmetic; only the prefill's matmuls have fewer rows (XLA may block
  # them differently: float32 rounding, not a different computation).
  np.testing.assert_allclose(np.asarray(shared.logprobs), np.asarray(every["logprobs"]),
                             atol=1e-5)
