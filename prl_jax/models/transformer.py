"""Decoder-only transformer of the Llama / Qwen2 / Qwen3 family, as a Flax linen module used purely.

    params = Transformer(cfg).init(key, tokens)            # plain pytree (after `unbox_params`)
    logits, cache = Transformer(cfg).apply(params, tokens, positions, token_mask, cache)

Blocks: x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x)); logits = RMSNorm(x) @ W_out. Qwen3
(`qk_norm`) also RMS-normalises each query and key head over head_dim before RoPE.
Rotary embeddings use HF's rotate-half convention, so HF checkpoints load without permutation.
The KV cache is an explicit pytree passed in and returned (no mutable collections), which is what
lets the sampler donate it and run decode inside one `lax.while_loop`.

Every parameter carries logical axis names ("vocab", "embed", "heads", "kv_heads", "head_dim",
"mlp", "layers"); `prl_jax.sharding` maps them to mesh axes with rules kept as data.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from prl_jax.models.config import ModelConfig
from prl_jax.models.dense import Dense

Array = jax.Array

# Masked attention logits use a large finite negative so fully padded rows stay NaN-free.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for a fixed number of slots.

  Attributes:
    k, v: [layers, batch, slots, kv_heads, head_dim].
    valid: [batch, slots] bool, True where a slot holds a real (non-padding) token.
    index: int32 scalar, the next slot to write. All rows write at the same slot, which is why
      prompts are left-padded: their last tokens line up and decoding advances in lockstep.
  """

  k: Array
  v: Array
  valid: Array
  index: Array

  @property
  def num_slots(self) -> int:
    return self.k.shape[2]


def init_cache(config: ModelConfig, batch: int, num_slots: int, dtype=None) -> KVCache:
  """An empty cache of `num_slots` positions (compute dtype unless `dtype` is given)."""
  dtype = jnp.dtype(dtype or config.dtype)
  shape = (config.num_layers, batch, num_slots, config.num_kv_heads, config.resolved_head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch, num_slots), bool), index=jnp.zeros((), jnp.int32))


def rope_inverse_frequencies(config: ModelConfig) -> Array:
  """inv_freq_i = theta^(-2i/d), i < d/2, with Llama 3's long-context rescaling when configured.

  Llama 3 scaling (HF `_compute_llama3_parameters`): wavelengths longer than
  original_max/low_freq_factor are divided by `factor`, shorter than original_max/high_freq_factor
  are kept, and the band in between is interpolated smoothly.
  """
  dim = config.resolved_head_dim
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  if config.rope_scaling is None:
    return inv_freq
  scaling = dict(config.rope_scaling)
  if scaling.get("rope_type", scaling.get("type")) == "default":
    return inv_freq
  factor = scaling["factor"]
  low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
  original = scaling["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  smooth = (original / wavelen - low) / (high - low)
  interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
  scaled = jnp.where(wavelen > original / low, inv_freq / factor, inv_freq)
  in_band = (wavelen >= original / high) & (wavelen <= original / low)
  return jnp.where(in_band, interpolated, scaled)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotate-half RoPE: x*cos + rotate_half(x)*sin, angles = position * inv_freq (HF convention).

  x: [B, T, heads, head_dim]; positions: [B, T].
  """
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, d/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


class RMSNorm(nn.Module):
  """y = w * x / sqrt(mean(x^2) + eps) over the last axis, computed in float32 (as HF does) and
  cast back; `axis_name` is the logical name of that axis (the scale's sharding)."""

  eps: float
  dtype: Any
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             (self.axis_name,)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale * normed.astype(self.dtype)).astype(self.dtype)


def _dense(features, axis, names, use_bias, dtype, name, bias_names=None):
  return Dense(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, bias_names or names[-1:]),
      name=name)


def _attend(qg: Array, keys: Array, values: Array, allowed: Array) -> Array:
  """softmax(q k^T / sqrt(d) masked by `allowed`) v for grouped queries [B, T, K, G, D]."""
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, keys,
                      preferred_element_type=jnp.float32) / math.sqrt(qg.shape[-1])
  scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(qg.dtype)
  return jnp.einsum("bkgts,bskd->btkgd", probs, values)


def _attend_in_chunks(attend, qg: Array, allowed: Array, chunk: int) -> Array:
  """`attend` over `chunk` queries at a time: the [B, K, G, chunk, S] scores of one chunk are
  alive instead of all T rows', and each chunk is recomputed in the backward pass. Queries are
  padded to a whole number of chunks (padded rows attend nowhere and are dropped)."""
  b, t = qg.shape[:2]
  pad = (-t) % chunk
  qg = jnp.pad(qg, ((0, 0), (0, pad)) + ((0, 0),) * 3)
  allowed = jnp.pad(allowed, ((0, 0), (0, pad), (0, 0)))
  split = lambda x: x.reshape(b, -1, chunk, *x.shape[2:]).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(lambda xs: attend(*xs)), (split(qg), split(allowed)))
  return out.swapaxes(0, 1).reshape(b, t + pad, *qg.shape[2:])[:, :t]


def attend_fused(q: Array, keys: Array, values: Array, kv_valid: Array) -> Array:
  """Causal softmax(q k^T / sqrt(d)) v over the real keys, through `jax.nn.dot_product_attention`.

  The causal part goes in as `is_causal` (a fused kernel then skips the tiles above the
  diagonal) and padding as a mask of the real keys (broadcast to [B, 1, T, S] for cuDNN);
  together they are `_attend`'s `allowed` for a forward without a cache. Public so that
  benchmarks time the attention the model runs (`model.attention_impl="fused"`). cuDNN's fused
  kernel (NVIDIA GPUs, 16-bit inputs) is used where it accepts the shapes, XLA's composition
  elsewhere. q: [B, T, H, D]; keys, values: [B, S, K, D] (grouped-query heads are shared inside
  the call). Padding query rows, which attend nowhere, may differ from `_attend`'s; nothing
  reads them.
  """
  call = lambda implementation, mask: jax.nn.dot_product_attention(
      q, keys, values, mask=mask, is_causal=True, implementation=implementation)
  mask = kv_valid[:, None, None, :]
  if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
    # cuDNN refuses a mask broadcast over the query axis ("Bias must have same seq length as
    # QKV"), and sequence lengths cannot say left padding: the mask goes in at [B, 1, T, S].
    full = jnp.broadcast_to(mask, (q.shape[0], 1, q.shape[1], keys.shape[1]))
    try:
      return call("cudnn", full)
    except (ValueError, NotImplementedError, RuntimeError):  # shapes cuDNN does not take
      pass
  return call("xla", mask)


class Attention(nn.Module):
  """Grouped-query causal self-attention with RoPE and an optional KV cache."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, kv_valid, layer_cache, index):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    hd, nh, nkv = cfg.resolved_head_dim, cfg.num_heads, cfg.num_kv_heads
    q = _dense((nh, hd), -1, ("embed", "heads", "head_dim"), cfg.qkv_bias, dtype, "q",
               ("heads", "head_dim"))(x)
    k = _dense((nkv, hd), -1, ("embed", "kv_heads", "head_dim"), cfg.qkv_bias, dtype, "k",
               ("kv_heads", "head_dim"))(x)
    v = _dense((nkv, hd), -1, ("embed", "kv_heads", "head_dim"), cfg.qkv_bias, dtype, "v",
               ("kv_heads", "head_dim"))(x)
    if cfg.qk_norm:  # Qwen3: per-head RMSNorm, shared over heads, before the rotation
      q = RMSNorm(cfg.rms_norm_eps, dtype, "head_dim", name="q_norm")(q)
      k = RMSNorm(cfg.rms_norm_eps, dtype, "head_dim", name="k_norm")(k)
    inv_freq = rope_inverse_frequencies(cfg)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)

    t = x.shape[1]
    if layer_cache is None:
      keys, values = k, v
      key_slots = jnp.arange(t)
      query_slots = jnp.arange(t)
    else:
      cache_k, cache_v = layer_cache
      keys = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, index, 0, 0))
      values = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, index, 0, 0))
      layer_cache = (keys, values)
      key_slots = jnp.arange(keys.shape[1])
      query_slots = index + jnp.arange(t)

    # Causal in slot order, and only over real tokens; kv_valid already covers the new tokens.
    allowed = (key_slots[None, :] <= query_slots[:, None])[None] & kv_valid[:, None, :]  # [B,T,S]
    qg = q.reshape(q.shape[0], t, nkv, nh // nkv, hd)
    attend = lambda qg, allowed: _attend(qg, keys.astype(dtype), values.astype(dtype), allowed)
    if cfg.attention_impl == "fused" and layer_cache is None:
      out = attend_fused(q, keys.astype(dtype), values.astype(dtype), kv_valid)
    elif layer_cache is None and 0 < cfg.attention_chunk < t:
      out = _attend_in_chunks(attend, qg, allowed, cfg.attention_chunk)
    else:
      out = attend(qg, allowed)
    out = out.reshape(out.shape[0], t, nh, hd)
    out = _dense(cfg.hidden_size, (-2, -1), ("heads", "head_dim", "embed"), False, dtype, "o")(out)
    return out, layer_cache


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    gate = _dense(cfg.intermediate_size, -1, ("embed", "mlp"), False, dtype, "gate")(x)
    up = _dense(cfg.intermediate_size, -1, ("embed", "mlp"), False, dtype, "up")(x)
    return _dense(cfg.hidden_size, -1, ("mlp", "embed"), False, dtype, "down")(nn.silu(gate) * up)


class DecoderLayer(nn.Module):
  """One pre-norm block; the scan carry is the residual stream, the scanned input its cache."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, layer_cache, positions, kv_valid, index):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    h, layer_cache = Attention(cfg, name="attn")(
        RMSNorm(cfg.rms_norm_eps, dtype, name="attn_norm")(x), positions, kv_valid, layer_cache,
        index)
    x = x + h
    x = x + MLP(cfg, name="mlp")(RMSNorm(cfg.rms_norm_eps, dtype, name="mlp_norm")(x))
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    return x, layer_cache


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
  """The decoder. `__call__` returns (logits float32 [B,T,V], cache or None).

  Args of `__call__`:
    tokens: [B, T] int32.
    positions: [B, T] rotary positions; default: count of real tokens before each one, those in
      the cache included (`cached + cumsum(token_mask) - 1`), which is right for left-padded
      prompts and for decoding after them.
    token_mask: [B, T] bool, False on padding (padding is never attended to). Default all True.
    cache: a `KVCache` to read and extend at `cache.index`, or None for a plain causal forward.
    return_hidden: return the final normed hidden states [B, T, d] instead of logits (for
      chunked log-probs and value/reward heads; project with `Transformer.logits`).
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embed = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")), name="embed")
    layer = DecoderLayer
    if cfg.remat != "none":
      layer = nn.remat(layer, policy=_REMAT[cfg.remat], prevent_cse=False)
    self.layers = nn.scan(
        layer, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
        unroll=cfg.resolved_scan_unroll,
        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    self.final_norm = RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.dtype), name="final_norm")
    if not cfg.tie_embeddings:
      self.lm_head = _dense(cfg.vocab_size, -1, ("embed", "vocab"), False, jnp.dtype(cfg.dtype),
                            "lm_head")

  def __call__(self, tokens, positions=None, token_mask=None, cache: KVCache | None = None,
               return_hidden: bool = False):
    chex.assert_rank(tokens, 2)
    if token_mask is None:
      token_mask = jnp.ones(tokens.shape, bool)
    token_mask = token_mask.astype(bool)
    if positions is None:
      # Real tokens already in the cache count too, so decoding continues the prompt's positions.
      cached = 0 if cache is None else jnp.sum(cache.valid, axis=1, keepdims=True)
      positions = jnp.maximum(cached + jnp.cumsum(token_mask, axis=1) - 1, 0)
    chex.assert_equal_shape([tokens, positions, token_mask])

    x = self.embed(tokens)
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    if cache is None:
      kv_valid, index, layer_caches = token_mask, jnp.zeros((), jnp.int32), None
    else:
      if tokens.shape[1] > cache.num_slots:
        raise ValueError(f"{tokens.shape[1]} tokens do not fit a KV cache of {cache.num_slots} "
                         "slots; allocate a larger cache.")
      kv_valid = jax.lax.dynamic_update_slice(cache.valid, token_mask, (0, cache.index))
      index, layer_caches = cache.index, (cache.k, cache.v)
    x, layer_caches = self.layers(x, layer_caches, positions, kv_valid, index)
    if cache is not None:
      cache = KVCache(k=layer_caches[0], v=layer_caches[1], valid=kv_valid,
                      index=cache.index + tokens.shape[1])
    hidden = self.final_norm(x)
    if return_hidden:
      return hidden, cache
    return self.logits(hidden), cache

  def logits(self, hidden):
    """Output projection in float32 accumulation: h @ E^T (tied) or h @ W_out."""
    if self.config.tie_embeddings:
      table = self.embed.embedding.astype(hidden.dtype)
      return jnp.einsum("btd,vd->btv", hidden, table, preferred_element_type=jnp.float32)
    return self.lm_head(hidden).astype(jnp.float32)


def unbox_params(params):
  """Strip flax's logical-partitioning boxes: a plain pytree of arrays."""
  return nn.meta.unbox(params)


def init_params(config: ModelConfig, key: Array) -> Any:
  """Random parameters (normal 0.02, norms at 1) as a plain pytree {"params": ...}."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return unbox_params(Transformer(config).init(key, tokens))


def logical_partition_specs(config: ModelConfig) -> Any:
  """Logical axis names of every parameter, as a pytree of PartitionSpecs (no memory used)."""
  boxed = jax.eval_shape(lambda: Transformer(config).init(jax.random.key(0),
                                                          jnp.zeros((1, 1), jnp.int32)))
  return nn.get_partition_spec(boxed)
