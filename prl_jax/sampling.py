"""Rollout sampler: a batched prefill, then jitted `lax.while_loop` decoding over a fixed KV cache.

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

Cache and loops. The prefill runs the model itself over the prompts in one batch. The decode
then keeps the KV cache per layer in pieces, each [B, kv_heads, slots, head_dim]: the prompt's
P slots, then `attention_segments` response blocks covering the N new tokens (P + N slots in all).
Block j is filled by its own `lax.while_loop`, which attends over the prompt, the finished blocks
and block j only, so a step reads the cache slots in use (up to one block) rather than the whole
allocation; the blocks are allocated by the prefill, donated to the decode and updated in place.
Attention over the pieces is one softmax over their concatenated scores (`_attend`), the model's
math. Why it is fast on a CPU (PERFORMANCE.md; about 2.4x Tunix at the anchor shapes):
  - attention reads are the largest cost after the matmuls and are memory-bound, so reading only
    the slots in use matters; heads-major blocks make the score and value contractions plain
    batched matmuls (the model's [B, slots, kv_heads, head_dim] layout would transpose the cache
    on every step);
  - q|k|v and gate|up projections are fused into one matmul each, weights are cast and split per
    layer and the rotary cos/sin tables computed once per call, outside the loop;
  - all random numbers are drawn before the loop (one uniform per row and step); tokens come from
    a two-level inverse CDF and top-k / top-p thresholds from a bisection over the float bit
    patterns: no sort and no vocabulary-wide cumsum inside the loop.
`tests/test_sampling.py` checks the decode against the model: teacher-forced log-probs (<= 1e-5)
and greedy tokens of full recomputation.

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
from prl_jax.distributed import to_host
from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import Transformer, init_cache, rope_inverse_frequencies

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
    attention_segments: number of response cache blocks, each filled by its own decode loop
      that attends only over the blocks so far (1: every step attends over all P+N slots).
      More segments read less cache per step and cost one more compiled loop body each.
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
  """uint32 keys ordered like the float32 values (negatives: flip all bits; else the sign bit)."""
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


def _first_above(cdf: Array, target: Array, mass: Array) -> Array:
  """Per row, the first index with cdf > target, or the last index with mass > 0 if none
  (target can round up to the total). cdf rises only where mass > 0, so a massless entry is
  never chosen."""
  iota = jax.lax.broadcasted_iota(jnp.int32, cdf.shape, 1)
  first = jnp.sum((cdf <= target[:, None]).astype(jnp.int32), axis=-1)
  last = jnp.max(jnp.where(mass > 0, iota, 0), axis=-1)
  return jnp.minimum(first, last)


def _draw(z: Array, uniform: Array) -> Array:
  """One token per row from softmax(z) by inverse CDF with one uniform [B] in [0, 1) per row.

  Two levels, so no cumsum runs over the whole vocabulary (XLA lowers cumsum to a reduce-window
  costing O(V^2) per row on CPU): pick a block of ~sqrt(V) tokens by the cumulative block mass,
  then the token inside it. Entries at -inf have zero mass and are never drawn.
  """
  weights = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
  batch, vocab = weights.shape
  width = 1 << (((vocab - 1).bit_length() + 1) // 2)  # block size, a power of two ~ sqrt(V)
  blocks = -(-vocab // width)
  w = jnp.pad(weights, ((0, 0), (0, blocks * width - vocab))).reshape(batch, blocks, width)
  block_mass = jnp.sum(w, axis=-1)
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  target = uniform.astype(jnp.float32) * block_cdf[:, -1]
  block = _first_above(block_cdf, target, block_mass)
  pick = lambda x: jnp.take_along_axis(x, block[:, None], axis=1)[:, 0]
  inner = jnp.take_along_axis(w, block[:, None, None], axis=1)[:, 0]  # [B, width]
  inside = target - (pick(block_cdf) - pick(block_mass))  # mass still to cover in the block
  return block * width + _first_above(jnp.cumsum(inner, axis=-1), inside, inner)


def choose_tokens(logits: Array, uniform: Array, scfg: SamplingConfig) -> tuple[Array, Array]:
  """(tokens [B] int32, log-probs [B] float32) for next-token logits [B, V], drawing with one
  uniform number in [0, 1) per row (unused when greedy)."""
  logits = logits.astype(jnp.float32)
  z = None
  if scfg.greedy:
    tokens = _first_argmax(logits)
  else:
    z = process_logits(logits, scfg)
    tokens = _draw(z, uniform)
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


def rope_tables(cfg: ModelConfig, num_positions: int) -> tuple[Array, Array]:
  """cos and sin [num_positions, head_dim] of the model's rotary angles (position * inv_freq,
  duplicated as in `apply_rope`), computed once per call so no step evaluates a cosine."""
  angles = jnp.arange(num_positions, dtype=jnp.int32)[:, None].astype(jnp.float32)
  angles = angles * rope_inverse_frequencies(cfg)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def _rotate(x: Array, cos: Array, sin: Array) -> Array:
  """`apply_rope` with looked-up cos/sin: x [B, heads, hd]; cos, sin [B, hd]."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * cos[:, None] + rotated * sin[:, None]).astype(x.dtype)


def decode_weights(params: Any, cfg: ModelConfig, num_positions: int,
                   rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES) -> dict:
  """What the decode step reads, computed once per call (outside the loop): the model's params
  split per layer with fused q|k|v and gate|up kernels in the compute dtype, the embedding
  table, and rotary cos/sin tables for `num_positions` positions.

  Mirrors the parameter names of `prl_jax.models.transformer`; tests/test_sampling.py checks the
  decode against the model for untied and tied embeddings, with and without q/k/v biases.
  """
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
  weights["rope_cos"], weights["rope_sin"] = rope_tables(cfg, num_positions)
  if not cfg.tie_embeddings:
    weights["lm_head"] = p["lm_head"]["kernel"].astype(dtype)
  return weights


def _attend(q: Array, blocks: list, dtype) -> Array:
  """Softmax attention of q [B, kv, G, hd] over key/value blocks, as ONE softmax over their
  concatenated slots (the model's attention, with the cache kept in pieces).

  blocks: (k, v, valid) with k, v [B, kv, S_c, hd] and valid [B or 1, S_c] bool or None (all
  valid). Only the small score rows are concatenated, never the cache.
  """
  hd = q.shape[-1]
  scores = []
  for k, _, valid in blocks:
    s = jnp.einsum("bkgd,bksd->bkgs", q, k.astype(dtype),
                   preferred_element_type=jnp.float32) / math.sqrt(hd)
    scores.append(s if valid is None else jnp.where(valid[:, None, None, :], s, _MASK_VALUE))
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1).astype(dtype)
  out, start = None, 0
  for _, v, _ in blocks:
    size = v.shape[2]
    part = jnp.einsum("bkgs,bksd->bkgd", probs[..., start:start + size], v.astype(dtype))
    out, start = (part if out is None else out + part), start + size
  return out


def _decode_step(weights: dict, cfg: ModelConfig, tokens: Array, positions: Array,
                 context: list, current: list, index: Array,
                 rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES) -> tuple[Array, list]:
  """Logits [B, V] float32 for one new token per row, and the current block with its keys/values.

  Per layer: `context[l]` are read-only (k, v, valid) blocks (the prompt, then the full earlier
  response blocks); `current[l]` is the (k, v) block [B, kv_heads, S_c, head_dim] being filled,
  the new token going to its slot `index` (slots after it are not valid yet). Same math as
  `Transformer.__call__` on one token.
  """
  dtype = jnp.dtype(cfg.dtype)
  hd, nh, nkv = cfg.resolved_head_dim, cfg.num_heads, cfg.num_kv_heads
  batch = tokens.shape[0]
  cos = jnp.take(weights["rope_cos"], positions, axis=0)
  sin = jnp.take(weights["rope_sin"], positions, axis=0)
  x = jnp.take(weights["lookup"], tokens, axis=0)  # [B, d]
  new_current = []
  for layer, blocks, (cur_k, cur_v) in zip(weights["layers"], context, current):
    h = _rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps, dtype)
    qkv = h @ layer["qkv"]
    if "qkv_bias" in layer:
      qkv = qkv + layer["qkv_bias"]
    q, k, v = jnp.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
    q = _rotate(q.reshape(batch, nh, hd), cos, sin)
    k = _rotate(k.reshape(batch, nkv, hd), cos, sin)
    # The block is a loop carry: XLA updates it in place, no copy per step.
    cur_k = jax.lax.dynamic_update_slice(
        cur_k, k.reshape(batch, nkv, 1, hd).astype(cur_k.dtype), (0, 0, index, 0))
    cur_v = jax.lax.dynamic_update_slice(
        cur_v, v.reshape(batch, nkv, 1, hd).astype(cur_v.dtype), (0, 0, index, 0))
    new_current.append((cur_k, cur_v))
    filled = (jnp.arange(cur_k.shape[2]) <= index)[None]
    out = _attend(q.reshape(batch, nkv, nh // nkv, hd), blocks + [(cur_k, cur_v, filled)], dtype)
    x = x + out.reshape(batch, nh * hd) @ layer["o"]
    h = _rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps, dtype)
    gate, up = jnp.split(h @ layer["gate_up"], 2, axis=-1)
    x = x + (nn.silu(gate) * up) @ layer["down"]
    x = sharding_lib.constrain(x, ("activation_batch", "activation_embed"), rules)
  h = _rms_norm(x, weights["final_norm"], cfg.rms_norm_eps, dtype)
  if cfg.tie_embeddings:
    logits = jnp.einsum("bd,vd->bv", h, weights["embed"], preferred_element_type=jnp.float32)
  else:
    logits = (h @ weights["lm_head"]).astype(jnp.float32)
  return logits, new_current


# ------------------------------------------------------------------------------------------------
# Jitted programs.


@flax.struct.dataclass
class DecodeState:
  """What the prefill hands the decode.

  prompt_cache: per layer (k, v) [B, kv_heads, P, head_dim]. prompt_mask: [B, P] bool.
  logits: [B, V] next-token logits after the prompt. prompt_lengths: [B] int32.
  """

  prompt_cache: Any
  prompt_mask: Array
  logits: Array
  prompt_lengths: Array


def response_blocks(max_new_tokens: int, segments: int) -> list[tuple[int, int]]:
  """(offset, size) of the response cache blocks: `segments` blocks (multiples of 8) covering N.

  Decode step i (1 <= i < N) feeds token i-1, whose keys/values go to response slot i-1; the
  decode loop of block j runs the steps whose slot falls in it and attends over the prompt,
  the earlier blocks and block j only: the slots in use, up to one block.
  """
  size = -(-max_new_tokens // segments)
  size = -(-size // 8) * 8
  return [(offset, min(size, max_new_tokens - offset))
          for offset in range(0, max_new_tokens, size)]


def _prefill(params: Any, tokens: Array, mask: Array, *, model_cfg: ModelConfig,
             scfg: SamplingConfig, rules: sharding_lib.Rules) -> tuple[DecodeState, list]:
  """Run the left-padded prompts [B, P] through the model in one batch.

  Returns the decode state (prompt keys/values, next-token logits) and the zeroed response
  cache blocks, per block a list over layers of (k, v) [B, kv_heads, size, head_dim]. The blocks
  are donated to the decode, which fills them in place.
  """
  TRACE_COUNTS["prefill"] += 1
  batch, width = tokens.shape
  model = Transformer(model_cfg)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  hidden, cache = model.apply(params, tokens, positions=positions, token_mask=mask,
                              cache=init_cache(model_cfg, batch, width), return_hidden=True)
  logits = model.apply(params, hidden[:, -1:], method=Transformer.logits)[:, 0]
  names = ("activation_batch", "activation_kv_heads", None, None)

  def heads_major(x):  # [B, P, kv, hd] -> [B, kv, P, hd]
    return sharding_lib.constrain(x.transpose(0, 2, 1, 3), names, rules)

  prompt_cache = [(heads_major(cache.k[i]), heads_major(cache.v[i]))
                  for i in range(model_cfg.num_layers)]
  state = DecodeState(prompt_cache=prompt_cache, prompt_mask=mask, logits=logits,
                      prompt_lengths=jnp.sum(mask, axis=1).astype(jnp.int32))
  kv = (batch, model_cfg.num_kv_heads, model_cfg.resolved_head_dim)
  zeros = lambda size: sharding_lib.constrain(  # zero: never-written slots must not hold NaNs
      jnp.zeros(kv[:2] + (size,) + kv[2:], cache.k.dtype), names, rules)
  blocks = [[(zeros(size), zeros(size)) for _ in range(model_cfg.num_layers)]
            for _, size in response_blocks(scfg.max_new_tokens, scfg.attention_segments)]
  return state, blocks


def _decode(params: Any, state: DecodeState, blocks: list, key: Array, *,
            model_cfg: ModelConfig, scfg: SamplingConfig,
            rules: sharding_lib.Rules) -> tuple[dict, list]:
  """Sample N tokens per row from the prefilled state; exit early once every row hit EOS.

  `blocks` (donated) are filled in place and returned, so no cache buffer is ever copied.
  """
  TRACE_COUNTS["decode"] += 1
  batch, width = state.prompt_mask.shape
  n_new = scfg.max_new_tokens
  weights = decode_weights(params, model_cfg, width + n_new, rules)
  eos = jnp.asarray(scfg.eos_ids if scfg.eos_ids else (-1,), jnp.int32)

  # All random numbers at once: one uniform per row and step, so the loop runs no PRNG.
  uniforms = jax.random.uniform(key, (n_new, batch), jnp.float32)
  first, first_logp = choose_tokens(state.logits, uniforms[0], scfg)
  tokens = jnp.full((batch, n_new), scfg.pad_id, jnp.int32).at[:, 0].set(first)
  logprobs = jnp.zeros((batch, n_new), jnp.float32).at[:, 0].set(first_logp)
  carry = (jnp.int32(1), first, jnp.isin(first, eos), tokens, logprobs)
  context = [[(k, v, state.prompt_mask)] for k, v in state.prompt_cache]

  filled = []
  for (offset, size), current in zip(response_blocks(n_new, scfg.attention_segments), blocks):
    stop = min(n_new, offset + size + 1)

    def body(carry, context=context, offset=offset):
      step, last, done, tokens, logprobs, current = carry
      logits, current = _decode_step(weights, model_cfg, last, state.prompt_lengths + step - 1,
                                     context, current, step - 1 - offset, rules)
      new, logp = choose_tokens(logits, uniforms[step], scfg)
      new = jnp.where(done, scfg.pad_id, new)
      logp = jnp.where(done, 0.0, logp)
      tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, step))
      logprobs = jax.lax.dynamic_update_slice(logprobs, logp[:, None], (0, step))
      return step + 1, new, done | jnp.isin(new, eos), tokens, logprobs, current

    out = jax.lax.while_loop(lambda c, stop=stop: (c[0] < stop) & ~jnp.all(c[2]), body,
                             carry + (current,))
    carry = out[:5]
    filled.append(out[5])
    # Every slot of a finished block is written (or no later step runs: all rows are done).
    context = [layer + [(k, v, None)] for layer, (k, v) in zip(context, out[5])]

  steps, _, _, tokens, logprobs = carry
  is_eos = jnp.isin(tokens, eos)
  position = jax.lax.broadcasted_iota(jnp.int32, tokens.shape, 1)
  first_eos = jnp.min(jnp.where(is_eos, position, n_new), axis=1, keepdims=True)
  mask = position <= first_eos  # up to and including the first EOS
  return {
      "tokens": tokens,
      "mask": mask,
      "logprobs": jnp.where(mask, logprobs, 0.0),
      "truncated": ~jnp.any(is_eos & mask, axis=1),
      "lengths": jnp.sum(mask, axis=1).astype(jnp.int32),
      "steps": steps,
  }, filled


_prefill_jit = jax.jit(_prefill, static_argnames=("model_cfg", "scfg", "rules"))
_decode_jit = jax.jit(_decode, static_argnames=("model_cfg", "scfg", "rules"),
                      donate_argnames=("blocks",))


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
    key: PRNG key; it draws one uniform per row and step up front, so results do not depend
      on how the decode is segmented.
    sampling_cfg: see `SamplingConfig`.
    prompt_lengths: [B] real lengths when `prompts` is a padded array.
    padding_side: where the padding of a padded `prompts` array is ("right" or "left").
    mesh: when given, rows are split over the mesh's batch axes (rows are padded to a multiple
      of that split and the padding dropped from the result) and params are placed in
      `sharding.param_shardings(model_cfg, mesh, rules)` (free when they already are).
    rules: logical-axis rules for the decode's sharding constraints.
  """
  tokens, mask = prepare_prompts(prompts, model_cfg, sampling_cfg, prompt_lengths, padding_side)
  rows = tokens.shape[0]
  rules = sharding_lib.hashable_rules(rules)  # a static jit argument
  statics = dict(model_cfg=model_cfg, scfg=sampling_cfg, rules=rules)

  def run(tokens, mask):
    state, blocks = _prefill_jit(params, tokens, mask, **statics)
    out, _ = _decode_jit(params, state, blocks, key, **statics)
    return out

  if mesh is None:
    out = run(tokens, mask)
  else:
    extra = (-rows) % sharding_lib.batch_shards(mesh, rules)
    padded = [np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) for x in (tokens, mask)]
    padded = jax.device_put(padded, sharding_lib.batch_sharding(mesh, rules))
    # A no-op for params already placed by `sharding` (the usual case); otherwise a reshard.
    params = jax.device_put(params, sharding_lib.param_shardings(model_cfg, mesh, rules))
    with jax.set_mesh(mesh):
      out = {k: v[:rows] if v.ndim else v for k, v in run(*padded).items()}
  return Rollout(prompt_tokens=jnp.asarray(tokens), prompt_mask=jnp.asarray(mask),
                 tokens=out["tokens"], mask=out["mask"], logprobs=out["logprobs"],
                 truncated=out["truncated"],
                 prompt_lengths=jnp.asarray(mask.sum(axis=1), jnp.int32),
                 lengths=out["lengths"], steps=out["steps"], group_size=sampling_cfg.n)


@dataclasses.dataclass
class HostRollout:
  """One sampler call's responses on the host, padding rows dropped ([R, N] and [R])."""

  tokens: np.ndarray
  mask: np.ndarray  # bool
  lengths: np.ndarray
  truncated: np.ndarray


def sample_in_calls(params: Any, model_cfg: ModelConfig, calls: Sequence[Sequence[Any]],
                    key: Array, sampling_cfg: SamplingConfig, *,
                    pad_to: Sequence[int] | None = None, mesh: jax.sharding.Mesh | None = None,
                    fold_single: bool = True, on_call: Any = None) -> list[HostRollout]:
  """`sampling_cfg.n` responses per prompt, one `sample` call per entry of `calls`.

  The one chunked-call loop of training, evaluation and labelling: a call's KV cache holds only
  its rows. Call i draws with fold_in(key, i) (with `fold_single=False` a lone call uses `key`
  itself). Call i is padded to `pad_to[i]` prompts by repeating its last prompt, so calls share
  compiled programs, and the padding's rows are dropped. `on_call(prompts)` runs after each call
  with its number of real prompts (a progress bar).
  """
  out = []
  for i, prompts in enumerate(calls):
    prompts = [list(p) for p in prompts]
    size = pad_to[i] if pad_to is not None else len(prompts)
    padded = prompts + [prompts[-1]] * (size - len(prompts))
    call_key = key if len(calls) == 1 and not fold_single else jax.random.fold_in(key, i)
    rollout = sample(params, model_cfg, padded, call_key, sampling_cfg, mesh=mesh)
    rows = len(prompts) * sampling_cfg.n
    tokens, mask, lengths, truncated = (to_host(x)[:rows] for x in (
        rollout.tokens, rollout.mask, rollout.lengths, rollout.truncated))
    out.append(HostRollout(tokens, mask.astype(bool), lengths, truncated))
    if on_call is not None:
      on_call(len(prompts))
  return out
