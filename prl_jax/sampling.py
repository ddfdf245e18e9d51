"""Rollout sampler: a batched prefill, then one jitted `lax.while_loop` decode over a fixed KV cache.

    cfg = SamplingConfig(max_new_tokens=128, temperature=1.0, eos_id=2, pad_id=0, n=4)
    rollout = sample(params, model_cfg, [[1, 5, 9], [1, 7]], key, cfg)
    rollout.tokens, rollout.mask, rollout.logprobs          # [B*n, N] each

Layout. Prompts are left-padded to a power-of-two bucket P (few distinct shapes, few compiles), so
their last tokens share a column and every row writes the KV cache at the same slot. The n samples
of a prompt are contiguous rows ([p0, p0, ..., p1, p1, ...]), the layout group advantages expect.
Responses are right-padded to N = max_new_tokens with `pad_id`; `mask` is True up to and including
the first EOS.

Log-probs (`SamplingConfig.logprob_mode`). The default, "temperature", returns
log softmax(logits / T)[y_t]: the log-probability of the sampled token under the policy at the
sampling temperature, before top-k/top-p truncation. This is what PPO-style RL uses as the old
policy (verl and Tunix recompute old log-probs with logits / T), and what a training step that
also divides by T reproduces exactly. "raw" gives log softmax(logits)[y_t] (T = 1), "processed" the
log-probability under the truncated, renormalised distribution the token was actually drawn from.
Greedy decoding uses T = 1 for the "temperature" mode when temperature is 0.

Speed. Decoding is memory- and overhead-bound, so the loop body is specialised (`_decode_step`):
  - the cache is kept per layer as [B, kv_heads, slots, head_dim], the layout in which the score
    and value contractions are plain batched matmuls (the model's [B, slots, kv_heads, head_dim]
    forces a transpose of the whole cache on every step), and each layer's cache is its own loop
    carry, updated in place with no per-step copy;
  - the decode runs in `attention_segments` while-loops over growing static prefixes of the cache,
    so a step attends over the slots in use rather than the whole allocation;
  - q/k/v and gate/up projections are fused into one matmul each, weights are cast and split per
    layer once per call (outside the loop);
  - tokens are drawn by inverse-CDF with one uniform per row, and top-k / top-p thresholds are
    found by a 32-step bisection over the float bit patterns, instead of a sort.
The prefill uses the model itself; `tests/test_sampling.py` checks that the decode reproduces
the model's teacher-forced log-probs and its greedy tokens.

No host round trip happens per token: the whole decode is one XLA program that stops early once
every row has emitted EOS.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax import sharding as sharding_lib
from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import (Transformer, apply_rope, init_cache,
                                        rope_inverse_frequencies)

Array = jax.Array

LOGPROB_MODES = ("temperature", "raw", "processed")

# Same masked-logit value as the model's attention, so padded slots behave identically.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

# How many times each jitted program was traced (tests read this to check shape bucketing).
TRACE_COUNTS: collections.Counter = collections.Counter()


# ------------------------------------------------------------------------------------------------
# Configuration and result.


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample rollouts. Frozen and hashable: it is a static argument of the jitted decode.

  Attributes:
    max_new_tokens: N, response tokens per row (the decode stops earlier only when every row
      has emitted EOS).
    temperature: T > 0 divides the logits; 0 means greedy.
    top_p: nucleus sampling: keep the smallest set of most likely tokens whose mass reaches top_p
      (the most likely token is always kept); 1.0 disables it.
    top_k: keep the k most likely tokens (ties at the k-th value are all kept); 0 disables it.
    greedy: argmax decoding (also implied by temperature == 0).
    eos_id: one id or a sequence of ids that end a response; None or () never stops early.
    pad_id: fills response positions after EOS (and prompt padding).
    n: samples per prompt, laid out contiguously.
    max_prompt_len: longest prompt accepted (longer raises ValueError); also caps the bucket.
      Default: the model's max_position_embeddings - max_new_tokens.
    min_prompt_bucket: smallest prompt bucket (prompts are left-padded to a power of two >= this).
    logprob_mode: "temperature" | "raw" | "processed"; see the module docstring.
    attention_segments: number of decode loops over growing cache prefixes (1: always attend
      over the whole cache). More segments cost one more compiled loop body each.
  """

  max_new_tokens: int = 128
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  greedy: bool = False
  eos_id: int | Sequence[int] | None = None
  pad_id: int = 0
  n: int = 1
  max_prompt_len: int | None = None
  min_prompt_bucket: int = 8
  logprob_mode: str = "temperature"
  attention_segments: int = 4

  def __post_init__(self):
    if int(self.max_new_tokens) < 1:
      raise ValueError(f"SamplingConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}.")
    if not self.temperature >= 0:
      raise ValueError(f"SamplingConfig.temperature must be >= 0 (0 means greedy), got "
                       f"{self.temperature}.")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}.")
    if int(self.top_k) < 0:
      raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 disables it), got {self.top_k}.")
    if int(self.n) < 1:
      raise ValueError(f"SamplingConfig.n must be >= 1, got {self.n}.")
    if int(self.pad_id) < 0:
      raise ValueError(f"SamplingConfig.pad_id must be >= 0, got {self.pad_id}.")
    if self.max_prompt_len is not None and int(self.max_prompt_len) < 1:
      raise ValueError(f"SamplingConfig.max_prompt_len must be >= 1, got {self.max_prompt_len}.")
    if int(self.min_prompt_bucket) < 1:
      raise ValueError("SamplingConfig.min_prompt_bucket must be >= 1.")
    if int(self.attention_segments) < 1:
      raise ValueError("SamplingConfig.attention_segments must be >= 1.")
    if self.logprob_mode not in LOGPROB_MODES:
      raise ValueError(f"SamplingConfig.logprob_mode={self.logprob_mode!r}; choose one of "
                       f"{LOGPROB_MODES}.")
    eos = self.eos_id
    eos = () if eos is None else (int(eos),) if np.ndim(eos) == 0 else tuple(int(e) for e in eos)
    if any(e < 0 for e in eos):
      raise ValueError(f"SamplingConfig.eos_id must be non-negative, got {eos}.")
    # Normalised in place so equal configs hash equally (a static jit argument).
    object.__setattr__(self, "eos_id", eos)
    object.__setattr__(self, "greedy", bool(self.greedy or self.temperature == 0))

  @property
  def eos_ids(self) -> tuple[int, ...]:
    return self.eos_id  # normalised to a tuple in __post_init__

  def replace(self, **changes) -> "SamplingConfig":
    return dataclasses.replace(self, **changes)


@flax.struct.dataclass
class Rollout:
  """Sampled responses and what RL needs about them; rows are prompts x n, groups contiguous.

  Attributes:
    prompt_tokens: [B, P] int32, left-padded with pad_id.
    prompt_mask: [B, P] bool, True on real prompt tokens.
    tokens: [B, N] int32 response, right-padded with pad_id after EOS.
    mask: [B, N] bool, True up to and including the first EOS.
    logprobs: [B, N] float32 log-probs of `tokens` (see `SamplingConfig.logprob_mode`), 0 on
      padding.
    truncated: [B] bool, the response hit max_new_tokens without EOS.
    prompt_lengths: [B] int32 real prompt tokens.
    lengths: [B] int32 response tokens (mask.sum(-1)).
    steps: int32 scalar, token positions generated before the decode stopped (N unless every
      row emitted EOS earlier).
    group_size: n, samples per prompt (static).
  """

  prompt_tokens: Array
  prompt_mask: Array
  tokens: Array
  mask: Array
  logprobs: Array
  truncated: Array
  prompt_lengths: Array
  lengths: Array
  steps: Array
  group_size: int = flax.struct.field(pytree_node=False, default=1)

  def sequences(self) -> tuple[Array, Array]:
    """(tokens [B, P+N], mask [B, P+N]): prompt then response, the teacher-forcing input.

    Real tokens are contiguous (left padding, then right padding), so the model's default
    positions cumsum(mask) - 1 are the positions they were sampled at.
    """
    return (jnp.concatenate([self.prompt_tokens, self.tokens], axis=1),
            jnp.concatenate([self.prompt_mask, self.mask], axis=1))


# ------------------------------------------------------------------------------------------------
# Host side: prompts -> left-padded, bucketed, repeated arrays.


def bucket_length(length: int, minimum: int = 8, cap: int | None = None) -> int:
  """Smallest power of two >= max(length, minimum), but at most `cap` (when given)."""
  size = 1 << max(int(max(length, minimum)) - 1, 0).bit_length()
  return size if cap is None else max(min(size, cap), length)


def _prompt_rows(prompts: Any, prompt_lengths: Any, padding_side: str) -> list[np.ndarray]:
  """Each prompt as a 1-D int array of its real tokens."""
  if prompt_lengths is None:
    if isinstance(prompts, (np.ndarray, jax.Array)) and np.ndim(prompts) == 2:
      return [np.asarray(row, np.int64) for row in np.asarray(prompts)]
    return [np.asarray(p, np.int64).reshape(-1) for p in prompts]
  array = np.asarray(prompts)
  lengths = np.asarray(prompt_lengths).reshape(-1)
  if array.ndim != 2 or lengths.shape[0] != array.shape[0]:
    raise ValueError(f"A padded prompt array must be [B, L] with prompt_lengths [B]; got "
                     f"{array.shape} and {lengths.shape}.")
  if np.any(lengths > array.shape[1]) or np.any(lengths < 0):
    raise ValueError(f"prompt_lengths must lie in [0, {array.shape[1]}], got {lengths}.")
  if padding_side == "right":
    return [array[i, :lengths[i]].astype(np.int64) for i in range(len(lengths))]
  if padding_side == "left":
    return [array[i, array.shape[1] - lengths[i]:].astype(np.int64) for i in range(len(lengths))]
  raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")


def prepare_prompts(prompts: Any, model_cfg: ModelConfig, scfg: SamplingConfig,
                    prompt_lengths: Any = None,
                    padding_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
  """(tokens [B*n, P] int32, mask [B*n, P] bool): prompts left-padded to their bucket, repeated n
  times each (contiguously).

  `prompts` is a list of token lists, or a [B, L] array with `prompt_lengths` [B] whose real
  tokens sit on `padding_side`'s opposite end (right padding: the first lengths[i] tokens).
  Raises ValueError for an empty prompt, an out-of-vocabulary id, or a prompt longer than the
  limit (`max_prompt_len`, else max_position_embeddings - max_new_tokens).
  """
  rows = _prompt_rows(prompts, prompt_lengths, padding_side)
  if not rows:
    raise ValueError("sample() needs at least one prompt.")
  lengths = np.array([len(r) for r in rows])
  if lengths.min() < 1:
    raise ValueError(f"Prompt {int(lengths.argmin())} is empty; every prompt needs at least one "
                     "token (e.g. BOS) to condition on.")
  for i, row in enumerate(rows):
    if row.min() < 0 or row.max() >= model_cfg.vocab_size:
      raise ValueError(f"Prompt {i} has token ids outside [0, {model_cfg.vocab_size}).")
  room = model_cfg.max_position_embeddings - scfg.max_new_tokens
  if scfg.max_prompt_len is not None:
    limit, why = int(scfg.max_prompt_len), "SamplingConfig.max_prompt_len"
  else:
    limit = room
    why = (f"max_position_embeddings={model_cfg.max_position_embeddings} minus "
           f"max_new_tokens={scfg.max_new_tokens}")
  longest = int(lengths.max())
  if longest > limit:
    raise ValueError(f"Prompt {int(lengths.argmax())} has {longest} tokens, more than the limit "
                     f"of {limit} ({why}); shorten it or raise the limit.")
  if longest > room:
    raise ValueError(f"A prompt of {longest} tokens plus {scfg.max_new_tokens} new tokens exceeds "
                     f"the model's max_position_embeddings={model_cfg.max_position_embeddings}.")
  width = bucket_length(longest, scfg.min_prompt_bucket, cap=max(limit, 1))
  tokens = np.full((len(rows), width), scfg.pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):] = row
    mask[i, width - len(row):] = True
  return np.repeat(tokens, scfg.n, axis=0), np.repeat(mask, scfg.n, axis=0)


# ------------------------------------------------------------------------------------------------
# Token choice: temperature, top-k, top-p, greedy; log-probs.


def _order_keys(x: Array) -> Array:
  """uint32 keys with the order of the float32 values (flip all bits of negatives, else the sign)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _largest_threshold(keys: Array, weights: Array, target: Any) -> Array:
  """Per row, the largest key t with sum(weights[keys >= t]) >= target; [B] uint32.

  Bisection over the 2^32 key range (32 halvings, exact): this finds the k-th largest value
  (weights 1, target k) or the nucleus boundary (weights p, target top_p) without a sort, which
  is several times slower on CPU. Assumes the row's total weight reaches `target`; otherwise
  every entry is kept.
  """
  lo = jnp.min(keys, axis=-1)
  hi = jnp.max(keys, axis=-1) + jnp.uint32(1)  # finite floats never have the all-ones key

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    mass = jnp.sum(jnp.where(keys >= mid[:, None], weights, 0), axis=-1)
    ok = mass >= target
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
  return lo


def process_logits(logits: Array, scfg: SamplingConfig) -> Array:
  """logits / T with entries outside the top-k, then outside the top-p nucleus, set to -inf.

  The order (temperature, top-k, top-p on the renormalised top-k distribution) is the usual one
  (HF, vLLM). The most likely token always survives.
  """
  z = logits.astype(jnp.float32) / (scfg.temperature if scfg.temperature > 0 else 1.0)
  vocab = z.shape[-1]
  if 0 < scfg.top_k < vocab:
    keys = _order_keys(z)
    kth = _largest_threshold(keys, jnp.ones_like(z), scfg.top_k)
    z = jnp.where(keys >= kth[:, None], z, -jnp.inf)
  if scfg.top_p < 1.0:
    probs = jax.nn.softmax(z, axis=-1)
    keys = _order_keys(probs)
    boundary = _largest_threshold(keys, probs, scfg.top_p)
    z = jnp.where(keys >= boundary[:, None], z, -jnp.inf)
  return z


def _first_argmax(x: Array) -> Array:
  """argmax over the last axis, lowest index on ties (two fused reductions; faster than argmax)."""
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  best = jnp.max(x, axis=-1, keepdims=True)
  return jnp.min(jnp.where(x == best, iota, x.shape[-1]), axis=-1)


def _draw(z: Array, key: Array) -> Array:
  """One token per row from softmax(z), by inverse CDF with a single uniform per row.

  Entries at -inf get zero mass and can never be drawn: the chosen index is the first whose
  cumulative mass exceeds u * total, and the cumulative mass only rises at positive entries.
  """
  weights = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
  cdf = jnp.cumsum(weights, axis=-1)
  u = jax.random.uniform(key, (z.shape[0], 1), jnp.float32) * cdf[:, -1:]
  index = jnp.sum((cdf <= u).astype(jnp.int32), axis=-1)
  # u * total can round up to total; fall back to the last token with mass.
  iota = jax.lax.broadcasted_iota(jnp.int32, z.shape, 1)
  last = jnp.max(jnp.where(weights > 0, iota, 0), axis=-1)
  return jnp.minimum(index, last)


def choose_tokens(logits: Array, key: Array, scfg: SamplingConfig) -> tuple[Array, Array]:
  """(tokens [B] int32, log-probs [B] float32) for next-token logits [B, V]."""
  logits = logits.astype(jnp.float32)
  z = None
  if scfg.greedy:
    tokens = _first_argmax(logits)
  else:
    z = process_logits(logits, scfg)
    tokens = _draw(z, key)
  if scfg.logprob_mode == "processed":
    if scfg.greedy:
      return tokens, jnp.zeros(tokens.shape, jnp.float32)  # a point mass
    dist = z
  elif scfg.logprob_mode == "raw":
    dist = logits
  else:
    dist = logits / (scfg.temperature if scfg.temperature > 0 else 1.0)
  logp = jnp.take_along_axis(jax.nn.log_softmax(dist, axis=-1), tokens[:, None], axis=-1)[:, 0]
  return tokens.astype(jnp.int32), logp


# ------------------------------------------------------------------------------------------------
# The decode step: the model's math for one token per row, with a per-layer, heads-major cache.


def _rms_norm(x: Array, scale: Array, eps: float, dtype) -> Array:
  """As the model's RMSNorm: normalise in float32, cast, scale."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (scale * normed.astype(dtype)).astype(dtype)


def decode_weights(params: Any, cfg: ModelConfig,
                   rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES) -> dict:
  """The model's params rearranged for decoding: per layer, fused q|k|v and gate|up kernels in
  the compute dtype. Done once per call, outside the loop (a copy of the weights)."""
  p = params["params"]
  dtype = jnp.dtype(cfg.dtype)
  layers, attn, mlp = p["layers"], p["layers"]["attn"], p["layers"]["mlp"]
  num_layers = cfg.num_layers

  def heads_flat(kernel):  # [L, d, heads, hd] -> [L, d, heads*hd]
    return kernel.reshape(kernel.shape[0], kernel.shape[1], -1)

  stacked = {
      "attn_norm": layers["attn_norm"]["scale"],
      "mlp_norm": layers["mlp_norm"]["scale"],
      "qkv": jnp.concatenate([heads_flat(attn[n]["kernel"]) for n in "qkv"], -1).astype(dtype),
      "o": attn["o"]["kernel"].reshape(num_layers, -1, cfg.hidden_size).astype(dtype),
      "gate_up": jnp.concatenate([mlp["gate"]["kernel"], mlp["up"]["kernel"]], -1).astype(dtype),
      "down": mlp["down"]["kernel"].astype(dtype),
  }
  if cfg.qkv_bias:
    stacked["qkv_bias"] = jnp.concatenate(
        [attn[n]["bias"].reshape(num_layers, -1) for n in "qkv"], -1).astype(dtype)
  embed = p["embed"]["embedding"].astype(dtype)
  weights = {
      # On a mesh, the table is gathered once here so each step's lookup is local (a lookup
      # from a vocab/embed-sharded table inside the loop reshards on every step).
      "lookup": sharding_lib.constrain(embed, (None, None), rules),
      "embed": embed,
      "final_norm": p["final_norm"]["scale"],
      "layers": [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)],
  }
  if not cfg.tie_embeddings:
    weights["lm_head"] = p["lm_head"]["kernel"].astype(dtype)
  return weights


def _decode_step(weights: dict, cfg: ModelConfig, tokens: Array, positions: Array, caches: list,
                 valid: Array, index: Array,
                 rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES) -> tuple[Array, list]:
  """Logits [B, V] float32 for one new token per row, and the caches with its keys/values.

  caches: per layer (k, v), each [B, kv_heads, S, head_dim]; the token is written at slot
  `index`; `valid` [B, S] already marks that slot. Matches `Transformer.__call__` on one token.
  """
  dtype = jnp.dtype(cfg.dtype)
  hd, nh, nkv = cfg.resolved_head_dim, cfg.num_heads, cfg.num_kv_heads
  batch = tokens.shape[0]
  inv_freq = rope_inverse_frequencies(cfg)
  x = jnp.take(weights["lookup"], tokens, axis=0)  # [B, d]
  new_caches = []
  for layer, (cache_k, cache_v) in zip(weights["layers"], caches):
    h = _rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps, dtype)
    qkv = h @ layer["qkv"]
    if "qkv_bias" in layer:
      qkv = qkv + layer["qkv_bias"]
    q, k, v = jnp.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
    q = apply_rope(q.reshape(batch, 1, nh, hd), positions[:, None], inv_freq)
    k = apply_rope(k.reshape(batch, 1, nkv, hd), positions[:, None], inv_freq)
    v = v.reshape(batch, nkv, 1, hd)
    cache_k = jax.lax.dynamic_update_slice(
        cache_k, k.reshape(batch, nkv, 1, hd).astype(cache_k.dtype), (0, 0, index, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, index, 0))
    new_caches.append((cache_k, cache_v))
    qg = q.reshape(batch, nkv, nh // nkv, hd)
    scores = jnp.einsum("bkgd,bksd->bkgs", qg, cache_k.astype(dtype),
                        preferred_element_type=jnp.float32) / math.sqrt(hd)
    # Slots after `index` are never valid, so validity alone is the causal mask here.
    scores = jnp.where(valid[:, None, None, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    out = jnp.einsum("bkgs,bksd->bkgd", probs, cache_v.astype(dtype)).reshape(batch, nh * hd)
    x = x + out @ layer["o"]
    h = _rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps, dtype)
    gate, up = jnp.split(h @ layer["gate_up"], 2, axis=-1)
    x = x + (nn.silu(gate) * up) @ layer["down"]
    x = sharding_lib.constrain(x, ("activation_batch", "activation_embed"), rules)
  h = _rms_norm(x, weights["final_norm"], cfg.rms_norm_eps, dtype)
  if cfg.tie_embeddings:
    logits = jnp.einsum("bd,vd->bv", h, weights["embed"], preferred_element_type=jnp.float32)
  else:
    logits = (h @ weights["lm_head"]).astype(jnp.float32)
  return logits, new_caches


# ------------------------------------------------------------------------------------------------
# Jitted programs.


@flax.struct.dataclass
class DecodeState:
  """What the prefill hands the decode.

  caches: per layer (k, v) [B, kv_heads, P+N, head_dim], prompt keys in slots [0, P).
  valid: [B, P+N] bool. logits: [B, V] next-token logits after the prompt.
  prompt_lengths: [B] int32.
  """

  caches: Any
  valid: Array
  logits: Array
  prompt_lengths: Array


def _prefill(params: Any, tokens: Array, mask: Array, *, model_cfg: ModelConfig,
             max_new_tokens: int, rules: sharding_lib.Rules) -> DecodeState:
  """Run the left-padded prompts [B, P] through the model in one batch; build the decode cache."""
  TRACE_COUNTS["prefill"] += 1
  batch, width = tokens.shape
  model = Transformer(model_cfg)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  hidden, cache = model.apply(params, tokens, positions=positions, token_mask=mask,
                              cache=init_cache(model_cfg, batch, width), return_hidden=True)
  logits = model.apply(params, hidden[:, -1:], method=Transformer.logits)[:, 0]
  pad = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0))
  names = ("activation_batch", "activation_kv_heads", None, None)

  def decode_layout(x):  # [B, P, kv, hd] -> [B, kv, P+N, hd]
    return sharding_lib.constrain(jnp.pad(x.transpose(0, 2, 1, 3), pad), names, rules)

  caches = [(decode_layout(cache.k[i]), decode_layout(cache.v[i]))
            for i in range(model_cfg.num_layers)]
  valid = jnp.pad(cache.valid, ((0, 0), (0, max_new_tokens)))
  return DecodeState(caches=caches, valid=valid, logits=logits,
                     prompt_lengths=jnp.sum(mask, axis=1).astype(jnp.int32))


def segment_ends(prompt_width: int, max_new_tokens: int, segments: int) -> list[int]:
  """Cache sizes attended by the successive decode loops: growing, multiples of 8, last = P+N.

  Decode step i (1 <= i < N) writes slot P+i-1, so a loop over the first S slots runs the steps
  with P+i-1 < S.
  """
  total = prompt_width + max_new_tokens
  ends = []
  for j in range(1, segments + 1):
    end = prompt_width + math.ceil(max_new_tokens * j / segments)
    end = min(total, -(-end // 8) * 8)
    if not ends or end > ends[-1]:
      ends.append(end)
  if ends[-1] != total:
    ends.append(total)
  return ends


def _decode(params: Any, state: DecodeState, key: Array, *, model_cfg: ModelConfig,
            scfg: SamplingConfig, rules: sharding_lib.Rules) -> tuple[dict, DecodeState]:
  """Sample N tokens per row from the prefilled state; exit early once every row hit EOS.

  Returns (outputs, final state); the state is returned so its donated buffers are reused.
  """
  TRACE_COUNTS["decode"] += 1
  weights = decode_weights(params, model_cfg, rules)
  batch = state.logits.shape[0]
  total = state.valid.shape[1]
  n_new = scfg.max_new_tokens
  width = total - n_new
  eos = jnp.asarray(scfg.eos_ids if scfg.eos_ids else (-1,), jnp.int32)

  first, first_logp = choose_tokens(state.logits, jax.random.fold_in(key, 0), scfg)
  tokens = jnp.full((batch, n_new), scfg.pad_id, jnp.int32).at[:, 0].set(first)
  logprobs = jnp.zeros((batch, n_new), jnp.float32).at[:, 0].set(first_logp)
  done = jnp.isin(first, eos)

  def body(carry):
    step, last, done, tokens, logprobs, caches, valid = carry
    index = width + step - 1  # slot of the token fed in (the previous one)
    valid = jax.lax.dynamic_update_slice(valid, jnp.ones((batch, 1), bool), (0, index))
    logits, caches = _decode_step(weights, model_cfg, last, state.prompt_lengths + step - 1,
                                  caches, valid, index, rules)
    new, logp = choose_tokens(logits, jax.random.fold_in(key, step), scfg)
    new = jnp.where(done, scfg.pad_id, new)
    logp = jnp.where(done, 0.0, logp)
    tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, step))
    logprobs = jax.lax.dynamic_update_slice(logprobs, logp[:, None], (0, step))
    return step + 1, new, done | jnp.isin(new, eos), tokens, logprobs, caches, valid

  carry = (jnp.int32(1), first, done, tokens, logprobs)
  caches, valid = state.caches, state.valid
  for end in segment_ends(width, n_new, scfg.attention_segments):
    # Work on the first `end` slots only: one copy per segment instead of reading (or copying)
    # the whole allocation on every step.
    full = end == total
    seg_caches = caches if full else [(k[:, :, :end], v[:, :, :end]) for k, v in caches]
    seg_valid = valid if full else valid[:, :end]
    stop = min(n_new, end - width + 1)
    out = jax.lax.while_loop(lambda c, stop=stop: (c[0] < stop) & ~jnp.all(c[2]), body,
                             carry + (seg_caches, seg_valid))
    carry, seg_caches, seg_valid = out[:5], out[5], out[6]
    if full:
      caches, valid = seg_caches, seg_valid
    else:
      caches = [(jax.lax.dynamic_update_slice(k, sk, (0, 0, 0, 0)),
                 jax.lax.dynamic_update_slice(v, sv, (0, 0, 0, 0)))
                for (k, v), (sk, sv) in zip(caches, seg_caches)]
      valid = jax.lax.dynamic_update_slice(valid, seg_valid, (0, 0))

  steps, _, _, tokens, logprobs = carry
  is_eos = jnp.isin(tokens, eos)
  ended_before = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
  mask = ~ended_before
  outputs = {
      "tokens": tokens,
      "mask": mask,
      "logprobs": jnp.where(mask, logprobs, 0.0),
      "truncated": ~jnp.any(is_eos & mask, axis=1),
      "lengths": jnp.sum(mask, axis=1).astype(jnp.int32),
      "steps": steps,
  }
  return outputs, state.replace(caches=caches, valid=valid)


_prefill_jit = jax.jit(_prefill, static_argnames=("model_cfg", "max_new_tokens", "rules"))
_decode_jit = jax.jit(_decode, static_argnames=("model_cfg", "scfg", "rules"),
                      donate_argnames=("state",))


# ------------------------------------------------------------------------------------------------
# Public entry point.


def sample(params: Any, model_cfg: ModelConfig, prompts: Any, key: Array,
           sampling_cfg: SamplingConfig, *, prompt_lengths: Any = None,
           padding_side: str = "right", mesh: jax.sharding.Mesh | None = None,
           rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES) -> Rollout:
  """Sample `sampling_cfg.n` responses per prompt; returns a `Rollout` of B*n rows.

  Args:
    params: model params (plain pytree; may be sharded, e.g. by `sharding.init_sharded_params`).
    model_cfg: the model's config.
    prompts: list of token-id lists, or a [B, L] int array (with `prompt_lengths`, a padded one).
    key: PRNG key; step t uses fold_in(key, t), so results do not depend on how the decode is
      segmented.
    sampling_cfg: see `SamplingConfig`.
    prompt_lengths: [B] real lengths when `prompts` is a padded array.
    padding_side: where the padding of a padded `prompts` array is ("right" or "left").
    mesh: when given, rows are split over the mesh's batch axes (rows are padded to a multiple
      of that split and the padding dropped from the result); params keep their own
      shardings (e.g. from `sharding.param_shardings`).
    rules: logical-axis rules for the decode's sharding constraints.
  """
  tokens, mask = prepare_prompts(prompts, model_cfg, sampling_cfg, prompt_lengths, padding_side)
  rows = tokens.shape[0]
  rules = tuple((name, axes if axes is None or isinstance(axes, str) else tuple(axes))
                for name, axes in rules)  # hashable: a static jit argument
  statics = dict(model_cfg=model_cfg, rules=rules)

  def run(tokens, mask):
    state = _prefill_jit(params, tokens, mask, max_new_tokens=sampling_cfg.max_new_tokens,
                         **statics)
    out, _ = _decode_jit(params, state, key, scfg=sampling_cfg, **statics)
    return out

  if mesh is None:
    out = run(tokens, mask)
  else:
    extra = (-rows) % sharding_lib.batch_shards(mesh, rules)
    padded = [np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) for x in (tokens, mask)]
    padded = jax.device_put(padded, sharding_lib.batch_sharding(mesh, rules))
    with jax.set_mesh(mesh):
      out = {k: v[:rows] if v.ndim else v for k, v in run(*padded).items()}
  return Rollout(prompt_tokens=jnp.asarray(tokens), prompt_mask=jnp.asarray(mask),
                 tokens=out["tokens"], mask=out["mask"], logprobs=out["logprobs"],
                 truncated=out["truncated"],
                 prompt_lengths=jnp.asarray(mask.sum(axis=1), jnp.int32),
                 lengths=out["lengths"], steps=out["steps"], group_size=sampling_cfg.n)
