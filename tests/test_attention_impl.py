"""The model's alternative paths against the default one: attention through
jax.nn.dot_product_attention equals the chunked einsum form, and bfloat16 compute (float32 master
weights) stays close to float32 logits; unrolled layers equal scanned ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.models.config import preset
from prl_jax.models.transformer import Transformer, init_params


def _batch(cfg, b=3, t=40):
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
  mask = np.ones((b, t), bool)
  mask[0, :7] = False  # a left-padded prompt
  mask[1, -9:] = False  # a right-padded response
  return tokens, jnp.asarray(mask)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fused_attention_equals_chunked(kv_heads):
  cfg = preset("tiny", num_heads=4, num_kv_heads=kv_heads, attention_chunk=16)
  params = init_params(cfg, jax.random.key(0))
  tokens, mask = _batch(cfg)
  fused_cfg = cfg.replace(attention_impl="fused")

  def loss(p, c):
    logits, _ = Transformer(c).apply(p, tokens, token_mask=mask)
    return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0)), logits

  # jitted: run op by op, the backward of a layer stack takes minutes on 2 cores
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l_ref, logits_ref), g_ref = grad(params, cfg)
  (l_fused, logits_fused), g_fused = grad(params, fused_cfg)
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(logits_fused)[m], np.asarray(logits_ref)[m], atol=1e-5)
  np.testing.assert_allclose(l_fused, l_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["chunked", "fused"])
def test_bfloat16_compute_close_to_float32(impl):
  cfg = preset("tiny", attention_impl=impl)
  params = init_params(cfg, jax.random.key(0))  # float32 master weights for both
  tokens, mask = _batch(cfg)
  forward = jax.jit(lambda p, c: Transformer(c).apply(p, tokens, token_mask=mask)[0],
                    static_argnums=1)
  ref, low = forward(params, cfg), forward(params, cfg.replace(dtype="bfloat16"))
  assert low.dtype == jnp.float32  # logits are accumulated and returned in float32
  m = np.asarray(mask)
  ref, low = np.asarray(ref)[m], np.asarray(low)[m]
  # bfloat16 keeps 8 mantissa bits: logits within a fraction of their spread, the same argmax
  # on nearly every token.
  assert np.max(np.abs(low - ref)) < 0.5 * np.std(ref)
  assert np.mean(np.argmax(low, -1) == np.argmax(ref, -1)) > 0.9


def test_unrolled_layers_equal_scanned():
  cfg = preset("tiny")
  assert cfg.resolved_scan_unroll == cfg.num_layers  # short stacks unroll by default
  assert preset("qwen2.5-0.5b").resolved_scan_unroll == 1  # deep ones stay scanned
  assert preset("tiny", remat="full").resolved_scan_unroll == 1  # and so do rematerialised ones
  params = init_params(cfg, jax.random.key(0))
  tokens, mask = _batch(cfg)

  def loss(p, c):
    logits, _ = Transformer(c).apply(p, tokens, token_mask=mask)
    return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0))

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  unrolled, scanned = grad(params, cfg), grad(params, cfg.replace(scan_unroll=1))
  for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(scanned)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
