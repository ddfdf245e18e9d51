"""The decoder: KV-cache decoding equals full recomputation; config validation; parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.models.config import PRESETS, ModelConfig, preset
from prl_jax.models.transformer import Transformer, init_cache, init_params

CONFIG = ModelConfig(vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     intermediate_size=128, rope_theta=10000.0, qkv_bias=True)
PROMPTS = [[5, 17, 3, 44, 8, 61, 2], [9, 9, 30], [70, 1, 12, 88, 4]]  # ragged: left-padded
NEW_TOKENS = 10


_init = jax.jit(init_params, static_argnums=0)


@pytest.fixture(scope="module")
def params():
  """Random params scaled up (std ~0.1) so greedy choices are decisive, not near-ties."""
  p = _init(CONFIG, jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 64))
  return jax.tree.map(lambda x: x * 5.0 if x.ndim >= 2 else
                      x + 0.1 * jax.random.normal(next(keys), x.shape), p)


def _left_pad(prompts, width):
  tokens = np.zeros((len(prompts), width), np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for row, prompt in enumerate(prompts):
    tokens[row, width - len(prompt):] = prompt
    mask[row, width - len(prompt):] = True
  return jnp.asarray(tokens), jnp.asarray(mask)


@jax.jit
def _forward(params, tokens, mask):
  return Transformer(CONFIG).apply(params, tokens, token_mask=mask)[0]


def _greedy_recompute(params, prompts, steps):
  """Reference: re-run the whole sequence for every new token, no cache.

  The sequence lives in a fixed [B, prompt + steps] buffer (one compilation): generated tokens are
  written in place, and the not-yet-written tail cannot affect earlier logits under causal masking.
  """
  width = max(map(len, prompts))
  tokens, mask = _left_pad(prompts, width)
  tokens = jnp.pad(tokens, ((0, 0), (0, steps)))
  mask = jnp.pad(mask, ((0, 0), (0, steps)))
  out, last_logits = [], []
  for step in range(steps):
    logits = _forward(params, tokens, mask)[:, width + step - 1]
    nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out.append(nxt)
    last_logits.append(logits)
    tokens = tokens.at[:, width + step].set(nxt)
    mask = mask.at[:, width + step].set(True)
  return jnp.stack(out, 1), jnp.stack(last_logits, 1)


def _greedy_cached(params, prompts, steps, prefill_chunks=1):
  """Prefill the left-padded prompts into a fixed-size cache (optionally in chunks), then decode
  one token at a time with default positions, which continue each row's real-token count."""
  tokens, mask = _left_pad(prompts, max(map(len, prompts)))
  cache = init_cache(CONFIG, len(prompts), tokens.shape[1] + steps)
  apply = jax.jit(lambda p, t, m, c: Transformer(CONFIG).apply(p, t, token_mask=m, cache=c))
  for t, m in zip(jnp.array_split(tokens, prefill_chunks, 1),
                  jnp.array_split(mask, prefill_chunks, 1)):
    logits, cache = apply(params, t, m, cache)
  out, last_logits = [], []
  for _ in range(steps):
    last = logits[:, -1]
    nxt = jnp.argmax(last, axis=-1).astype(jnp.int32)
    out.append(nxt)
    last_logits.append(last)
    logits, cache = apply(params, nxt[:, None], jnp.ones((len(prompts), 1), bool), cache)
  assert int(cache.index) == tokens.shape[1] + steps
  return jnp.stack(out, 1), jnp.stack(last_logits, 1)


@pytest.mark.parametrize("prefill_chunks", [1, 3])
def test_cached_greedy_equals_recomputation(params, prefill_chunks):
  ref_tokens, ref_logits = _greedy_recompute(params, PROMPTS, NEW_TOKENS)
  tokens, logits = _greedy_cached(params, PROMPTS, NEW_TOKENS, prefill_chunks)
  np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref_tokens))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-4, rtol=1e-4)
  # Not a degenerate test: the model does not just repeat one token.
  assert len(np.unique(np.asarray(tokens))) > 3


def test_cache_logits_equal_full_forward(params):
  tokens, mask = _left_pad(PROMPTS, 8)
  full = _forward(params, tokens, mask)
  cache = init_cache(CONFIG, len(PROMPTS), 16)
  apply = jax.jit(lambda p, t, m, c: Transformer(CONFIG).apply(p, t, token_mask=m, cache=c))
  first, cache = apply(params, tokens[:, :5], mask[:, :5], cache)
  second, cache = apply(params, tokens[:, 5:], mask[:, 5:], cache)
  cached = jnp.concatenate([first, second], axis=1)
  np.testing.assert_allclose(np.asarray(cached)[np.asarray(mask)],
                             np.asarray(full)[np.asarray(mask)], atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(cache.valid[:, :8]), np.asarray(mask))
  assert not cache.valid[:, 8:].any()
  with pytest.raises(ValueError, match="do not fit a KV cache"):
    jax.eval_shape(lambda p: Transformer(CONFIG).apply(p, jnp.zeros((3, 17), jnp.int32),
                                                       cache=init_cache(CONFIG, 3, 16)), params)


def test_left_padding_does_not_change_logits(params):
  prompt = PROMPTS[0]
  alone = _forward(params, jnp.asarray([prompt]), jnp.ones((1, len(prompt)), bool))[0]
  tokens, mask = _left_pad([prompt, prompt[:2]], len(prompt) + 4)
  padded = _forward(params, tokens, mask)[0, 4:]
  np.testing.assert_allclose(np.asarray(padded), np.asarray(alone), atol=1e-5, rtol=1e-5)


def test_config_errors():
  base = dict(vocab_size=32, hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
              intermediate_size=64)
  with pytest.raises(ValueError, match="num_heads=5 does not divide hidden_size=64"):
    ModelConfig(**{**base, "num_heads": 5, "num_kv_heads": 5})
  with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=4"):
    ModelConfig(**{**base, "num_kv_heads": 3})
  with pytest.raises(ValueError, match="must be positive"):
    ModelConfig(**{**base, "num_layers": 0})
  with pytest.raises(ValueError, match="even"):
    ModelConfig(**{**base, "head_dim": 15})
  with pytest.raises(ValueError, match="remat"):
    ModelConfig(**{**base, "remat": "sometimes"})
  with pytest.raises(ValueError, match="rope_scaling type 'yarn'"):
    ModelConfig(**{**base, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
  with pytest.raises(ValueError, match="Unknown model preset"):
    preset("gpt-5")
  # An explicit head_dim lifts the divisibility requirement (as in Llama 3.2 and Qwen3).
  assert ModelConfig(**{**base, "num_heads": 5, "num_kv_heads": 5, "head_dim": 16})


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_num_params(name):
  config = preset(name)
  shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  assert _count(shapes) == config.num_params()


def test_published_param_counts():
  # Published sizes: Qwen2.5-0.5B "0.49B" (494,032,768), Llama-3.2-1B "1.24B" (1,235,814,400).
  assert preset("qwen2.5-0.5b").num_params() == 494_032_768
  assert preset("llama-3.2-1b").num_params() == 1_235_814_400
  # Biases and tying change the count; and real arrays agree with the abstract shapes.
  for config in (preset("tiny", qkv_bias=True), preset("tiny", tie_embeddings=True)):
    assert _count(jax.eval_shape(lambda: init_params(config, jax.random.key(0)))) == \
        config.num_params()
  assert _count(_init(CONFIG, jax.random.key(0))) == CONFIG.num_params()


# Chunks of 4 and 8 both end on a partial chunk of the 11 positions; 1 (a loop of 11) is slow.
@pytest.mark.parametrize("chunk", [pytest.param(1, marks=pytest.mark.slow), 4, 8])
def test_chunked_attention_equals_full_attention(chunk):
  """attention_chunk changes memory, not results: logits and gradients match unchunked ones,
  with left padding and a length (11) that is not a multiple of the chunk."""
  full_cfg = preset("tiny", vocab_size=37, remat="full")
  chunked_cfg = preset("tiny", vocab_size=37, remat="full", attention_chunk=chunk)
  params = init_params(full_cfg, jax.random.key(3))
  tokens = jax.random.randint(jax.random.key(4), (3, 11), 0, 37)
  mask = jnp.ones((3, 11), bool).at[1, :4].set(False)

  def loss(cfg, p):
    logits, _ = Transformer(cfg).apply(p, tokens, token_mask=mask)
    return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0) ** 2), logits

  # jitted: op by op, the chunk loop's backward takes a minute on 2 cores
  grad = jax.jit(jax.value_and_grad(loss, argnums=1, has_aux=True), static_argnums=0)
  (want, want_logits), want_grads = grad(full_cfg, params)
  (got, got_logits), got_grads = grad(chunked_cfg, params)
  np.testing.assert_allclose(got_logits, want_logits, atol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree_util.tree_leaves(got_grads), jax.tree_util.tree_leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=3e-5)


def test_negative_attention_chunk_is_refused():
  with pytest.raises(ValueError, match="attention_chunk"):
    preset("tiny", attention_chunk=-1)
