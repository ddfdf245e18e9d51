"""Speed changes of the sampler that must not change its results: the n samples of a prompt
share one prefill, and rows that emitted EOS move out of the decode batch (compact_rows)."""

import jax
import numpy as np
import pytest

from prl_jax import decode, sharding
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


def test_a_group_reads_one_copy_of_its_prompt(params):
  """The prefill keeps one row of prompt keys/values per prompt, not per sample, and the
  decode's attention over such a shared block (mixed with per-row blocks, as the response
  blocks are) is each row's attention over its own prompt's slots and its own."""
  n = 3
  scfg = SamplingConfig(max_new_tokens=NEW, temperature=1.0, n=n, eos_id=2, pad_id=0)
  tokens, mask = prepare_prompts(PROMPTS, CFG, scfg)
  statics = dict(model_cfg=CFG, scfg=scfg, rules=sharding.hashable_rules(sharding.DEFAULT_RULES))
  state, blocks = prefill_jit(params, tokens[::n], mask[::n], repeat=n, **statics)
  rows = len(PROMPTS) * n
  assert state.prompt_cache[0][0].shape[0] == len(PROMPTS) == state.prompt_mask.shape[0]
  assert state.logits.shape[0] == rows == state.prompt_lengths.shape[0] == blocks[0][0][0].shape[0]

  keys = jax.random.split(jax.random.key(7), 5)
  q = jax.random.normal(keys[0], (rows, 2, 2, 16))  # [B, kv, G, hd]
  shared_k, shared_v = (jax.random.normal(k, (len(PROMPTS), 2, 6, 16)) for k in keys[1:3])
  valid = jax.random.bernoulli(keys[3], 0.7, (len(PROMPTS), 6)).at[:, -1].set(True)
  own_k, own_v = (jax.random.normal(k, (rows, 2, 4, 16)) for k in jax.random.split(keys[4]))
  own = (own_k, own_v, (np.arange(4) <= 2)[None])
  grouped = decode._attend(q, [(shared_k, shared_v, valid), own], np.float32)
  # Reference: each row's softmax attention over its prompt's slots, then its own, in numpy.
  rows_of = lambda x: np.repeat(np.asarray(x, np.float64), n, axis=0)
  k = np.concatenate([rows_of(shared_k), np.asarray(own_k, np.float64)], axis=2)
  v = np.concatenate([rows_of(shared_v), np.asarray(own_v, np.float64)], axis=2)
  allowed = np.concatenate([rows_of(valid) > 0, np.broadcast_to(own[2], (rows, 4))], axis=1)
  scores = np.einsum("bkgd,bksd->bkgs", np.asarray(q, np.float64), k) / np.sqrt(16)
  scores = np.where(allowed[:, None, None], scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(grouped), np.einsum("bkgs,bksd->bkgd", weights, v),
                             atol=1e-5)


def test_compact_size():
  done = np.array([True] * 27 + [False] * 5)
  assert decode.compact_size(done, 4) == 8 and decode.compact_size(done, 16) == 16
  assert decode.compact_size(np.array([True] * 15 + [False] * 17), 4) is None  # 32 of 32
  assert decode.compact_size(np.ones(32, bool), 4) is None


def test_compacted_decode_equals_the_full_batch(params, monkeypatch):
  # One id in 24 ends a response: lengths spread over the whole range, so the batch is
  # compacted at least once (checked) and some rows still run to the end.
  scfg = SamplingConfig(max_new_tokens=48, temperature=1.0, n=8, pad_id=0,
                        eos_id=tuple(range(1, CFG.vocab_size, 24)), attention_segments=4)
  sizes = []
  size_of = decode.compact_size
  monkeypatch.setattr(decode, "compact_size", lambda *a: sizes.append(size_of(*a)) or sizes[-1])
  key = jax.random.key(7)
  compact = sample(params, CFG, PROMPTS, key, scfg.replace(compact_rows=True))
  full = sample(params, CFG, PROMPTS, key, scfg)
  assert any(s is not None for s in sizes), sizes
  lengths = np.asarray(full.lengths)
  assert lengths.min() < 12 and lengths.max() > 24, lengths
  for name in ("tokens", "mask", "truncated", "lengths"):
    np.testing.assert_array_equal(np.asarray(getattr(compact, name)),
                                  np.asarray(getattr(full, name)), err_msg=name)
  assert int(compact.steps) == int(full.steps)
  np.testing.assert_allclose(np.asarray(compact.logprobs), np.asarray(full.logprobs), atol=1e-5)


def test_rollout_compact_rows_reaches_the_sampler(tmp_path):
  from prl_jax.run.context import build_context
  from tests.test_train_loop import tiny_config

  assert not build_context(tiny_config("grpo"), str(tmp_path / "a")).sampling.compact_rows
  ctx = build_context(tiny_config("grpo", **{"rollout.compact_rows": True}), str(tmp_path / "b"))
  assert ctx.sampling.compact_rows
