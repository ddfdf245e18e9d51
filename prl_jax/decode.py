"""The jitted prefill and `lax.while_loop` decode of `prl_jax.sampling.sample`, over a fixed KV cache.

The cache is kept per layer in pieces, each [B, kv_heads, slots, head_dim]: the prompt's P slots,
then `attention_segments` response blocks covering the N new tokens. Block j is filled by its own
`lax.while_loop` that attends over the prompt, the finished blocks and block j only, so a step
reads the cache slots in use; the blocks are allocated by the prefill, donated to the decode and
updated in place (the why of each choice is in `prl_jax.sampling`'s docstring).
"""

from __future__ import annotations

import collections
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax import sharding as sharding_lib
from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import Transformer, init_cache, rope_inverse_frequencies
from prl_jax.token_choice import SamplingConfig, choose_tokens

Array = jax.Array

# Same masked-logit value as the model's attention, so padded slots behave identically.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

# How many times each jitted program was traced (tests read this to check shape bucketing).
TRACE_COUNTS: collections.Counter = collections.Counter()


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
  decode against the model for untied and tied embeddings, with and without q/k/v biases and
  q/k norms.
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
  if cfg.qk_norm:
    stacked["q_norm"], stacked["k_norm"] = attn["q_norm"]["scale"], attn["k_norm"]["scale"]
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

  blocks: (k, v, valid) with k, v [B_c, kv, S_c, hd] and valid [B_c or 1, S_c] bool or None (all
  valid). A block of B_c = B / g rows is shared by g consecutive query rows (a prompt's n
  samples): query row r reads its row r // g, and the g rows' queries meet it as g x G query
  rows per KV head of one product, so its keys and values are read once per group. Both
  products keep the KV head next to the batch ([B_c, kv, queries, ...]): XLA's CPU dots ran
  several times slower with it after the query rows. Only the small query and score rows are
  regrouped, never the cache.
  """
  batch, kv, g_q, hd = q.shape

  def stacked(x, rows):  # [B, kv, G, ...] -> [rows, kv, B / rows * G, ...]
    x = x.reshape(rows, batch // rows, kv, g_q, *x.shape[3:]).swapaxes(1, 2)
    return x.reshape(rows, kv, -1, *x.shape[4:])

  def unstacked(x, rows):  # the inverse of `stacked`
    x = x.reshape(rows, kv, batch // rows, g_q, *x.shape[3:]).swapaxes(1, 2)
    return x.reshape(batch, kv, g_q, *x.shape[4:])

  scores = []
  for k, _, valid in blocks:
    rows = k.shape[0]
    s = jnp.einsum("bkqd,bksd->bkqs", stacked(q, rows), k.astype(dtype),
                   preferred_element_type=jnp.float32) / math.sqrt(hd)
    if valid is not None:
      s = jnp.where(valid[:, None, None, :], s, _MASK_VALUE)
    scores.append(unstacked(s, rows))
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1).astype(dtype)
  out, start = None, 0
  for _, v, _ in blocks:
    rows, size = v.shape[0], v.shape[2]
    part = unstacked(jnp.einsum("bkqs,bksd->bkqd", stacked(probs[..., start:start + size], rows),
                                v.astype(dtype)), rows)
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
    q, k = q.reshape(batch, nh, hd), k.reshape(batch, nkv, hd)
    if cfg.qk_norm:
      q = _rms_norm(q, layer["q_norm"], cfg.rms_norm_eps, dtype)
      k = _rms_norm(k, layer["k_norm"], cfg.rms_norm_eps, dtype)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
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
  """What the prefill hands the decode, for B rows in groups of g that share a prompt.

  prompt_cache: per layer (k, v) [B / g, kv_heads, P, head_dim], one row per prompt.
  prompt_mask: [B / g, P] bool. logits: [B, V] next-token logits after the prompt.
  prompt_lengths: [B] int32.
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
             scfg: SamplingConfig, rules: sharding_lib.Rules,
             repeat: int = 1) -> tuple[DecodeState, list]:
  """Run the left-padded prompts [B, P] through the model in one batch.

  Returns the decode state (prompt keys/values, next-token logits) and the zeroed response
  cache blocks, per block a list over layers of (k, v) [B * repeat, kv_heads, size, head_dim].
  The blocks are donated to the decode, which fills them in place. With `repeat` r > 1 the
  prompts are distinct and each is run once for r contiguous rows: the n samples of a prompt
  share its prefill (a prompt's keys, values and logits do not depend on the other rows), so
  the prefill costs B, not B * r, rows; the logits and lengths are copied to the r rows, the
  prompt's keys and values are not (the decode reads them once per group, `_attend`).
  """
  TRACE_COUNTS["prefill"] += 1
  width = tokens.shape[1]
  batch = tokens.shape[0] * repeat
  model = Transformer(model_cfg)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  hidden, cache = model.apply(params, tokens, positions=positions, token_mask=mask,
                              cache=init_cache(model_cfg, tokens.shape[0], width),
                              return_hidden=True)
  logits = model.apply(params, hidden[:, -1:], method=Transformer.logits)[:, 0]
  names = ("activation_batch", "activation_kv_heads", None, None)
  rows = lambda x: x if repeat == 1 else jnp.repeat(x, repeat, axis=0)

  def heads_major(x):  # [B, P, kv, hd] -> [B, kv, P, hd]
    return sharding_lib.constrain(x.transpose(0, 2, 1, 3), names, rules)

  prompt_cache = [(heads_major(cache.k[i]), heads_major(cache.v[i]))
                  for i in range(model_cfg.num_layers)]
  state = DecodeState(prompt_cache=prompt_cache, prompt_mask=mask, logits=rows(logits),
                      prompt_lengths=rows(jnp.sum(mask, axis=1).astype(jnp.int32)))
  kv = (batch, model_cfg.num_kv_heads, model_cfg.resolved_head_dim)
  zeros = lambda size: sharding_lib.constrain(  # zero: never-written slots must not hold NaNs
      jnp.zeros(kv[:2] + (size,) + kv[2:], cache.k.dtype), names, rules)
  blocks = [[(zeros(size), zeros(size)) for _ in range(model_cfg.num_layers)]
            for _, size in response_blocks(scfg.max_new_tokens, scfg.attention_segments)]
  return state, blocks


def _first_tokens(state: DecodeState, uniforms: Array, scfg: SamplingConfig, eos: Array):
  """The decode carry after the first token, drawn from the prefill's logits:
  (step 1, last tokens [B], done [B], tokens [B, N], log-probs [B, N])."""
  batch, n_new = state.logits.shape[0], scfg.max_new_tokens
  first, first_logp = choose_tokens(state.logits, uniforms[0], scfg)
  tokens = jnp.full((batch, n_new), scfg.pad_id, jnp.int32).at[:, 0].set(first)
  logprobs = jnp.zeros((batch, n_new), jnp.float32).at[:, 0].set(first_logp)
  return (jnp.int32(1), first, jnp.isin(first, eos), tokens, logprobs)


def _block_loop(weights: dict, model_cfg: ModelConfig, scfg: SamplingConfig, rules, eos: Array,
                uniforms: Array, prompt_lengths: Array, context: list, carry: tuple,
                current: list, offset: int, size: int) -> tuple[tuple, list]:
  """The `lax.while_loop` of the response block at `offset` (`size` slots): the steps whose
  keys/values go to its slots, until every row is done. Returns the carry and the filled block."""
  stop = min(scfg.max_new_tokens, offset + size + 1)

  def body(carry):
    step, last, done, tokens, logprobs, current = carry
    logits, current = _decode_step(weights, model_cfg, last, prompt_lengths + step - 1,
                                   context, current, step - 1 - offset, rules)
    new, logp = choose_tokens(logits, uniforms[step], scfg)
    new = jnp.where(done, scfg.pad_id, new)
    logp = jnp.where(done, 0.0, logp)
    tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, step))
    logprobs = jax.lax.dynamic_update_slice(logprobs, logp[:, None], (0, step))
    return step + 1, new, done | jnp.isin(new, eos), tokens, logprobs, current

  out = jax.lax.while_loop(lambda c: (c[0] < stop) & ~jnp.all(c[2]), body, carry + (current,))
  return out[:5], out[5]


def _finish(carry: tuple, scfg: SamplingConfig, eos: Array) -> dict:
  """The decode's outputs from its final carry: tokens, mask (up to and including the first
  EOS), log-probs (0 past the mask), truncated, lengths and steps."""
  steps, _, _, tokens, logprobs = carry
  n_new = scfg.max_new_tokens
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
  }


def _eos(scfg: SamplingConfig) -> Array:
  return jnp.asarray(scfg.eos_ids if scfg.eos_ids else (-1,), jnp.int32)


def draw_uniforms(key: Array, steps: int, rows: int, offset: Array | int = 0,
                  total: int | None = None) -> Array:
  """[steps, rows] uniforms: all the decode's random numbers, one per row and step, drawn at once
  so the loop runs no PRNG.

  The rows are rows offset .. offset + rows - 1 of a [steps, total] draw from `key` (total None:
  this call's own rows), so a batch split into calls draws what it would whole
  (`prl_jax.sampling.sample`'s draw_window); rows past `total` (a split's padding) get 0.5.
  """
  if total is None:
    return jax.random.uniform(key, (steps, rows), jnp.float32)
  whole = jnp.pad(jax.random.uniform(key, (steps, total), jnp.float32), ((0, 0), (0, rows)),
                  constant_values=0.5)
  return jax.lax.dynamic_slice_in_dim(whole, offset, rows, axis=1)


def _decode(params: Any, state: DecodeState, blocks: list, key: Array,
            draw_offset: Array | int = 0, *, model_cfg: ModelConfig, scfg: SamplingConfig,
            rules: sharding_lib.Rules, draw_total: int | None = None) -> tuple[dict, list]:
  """Sample N tokens per row from the prefilled state; exit early once every row hit EOS.

  `blocks` (donated) are filled in place and returned, so no cache buffer is ever copied. The
  rows draw with `draw_uniforms(key, N, B, draw_offset, draw_total)`.
  """
  TRACE_COUNTS["decode"] += 1
  batch, width = state.logits.shape[0], state.prompt_mask.shape[1]
  n_new = scfg.max_new_tokens
  weights = decode_weights(params, model_cfg, width + n_new, rules)
  eos = _eos(scfg)
  uniforms = draw_uniforms(key, n_new, batch, draw_offset, draw_total)
  carry = _first_tokens(state, uniforms, scfg, eos)
  context = [[(k, v, state.prompt_mask)] for k, v in state.prompt_cache]
  filled = []
  for (offset, size), current in zip(response_blocks(n_new, scfg.attention_segments), blocks):
    carry, block = _block_loop(weights, model_cfg, scfg, rules, eos, uniforms,
                               state.prompt_lengths, context, carry, current, offset, size)
    filled.append(block)
    # Every slot of a finished block is written (or no later step runs: all rows are done).
    context = [layer + [(k, v, None)] for layer, (k, v) in zip(context, block)]
  return _finish(carry, scfg, eos), filled


prefill_jit = jax.jit(_prefill, static_argnames=("model_cfg", "scfg", "rules", "repeat"))
decode_jit = jax.jit(_decode, static_argnames=("model_cfg", "scfg", "rules", "draw_total"),
                     donate_argnames=("blocks",))




# ------------------------------------------------------------------------------------------------
# Row compaction: rows that have emitted EOS stop costing compute.


def _start(params: Any, state: DecodeState, key: Array, draw_offset: Array | int = 0, *,
           model_cfg: ModelConfig, scfg: SamplingConfig, rules: sharding_lib.Rules,
           draw_total: int | None = None):
  """(decode weights, uniforms [N, B], carry after the first token): `_decode`'s preamble."""
  width = state.prompt_mask.shape[1]
  weights = decode_weights(params, model_cfg, width + scfg.max_new_tokens, rules)
  uniforms = draw_uniforms(key, scfg.max_new_tokens, state.logits.shape[0], draw_offset,
                           draw_total)
  return weights, uniforms, _first_tokens(state, uniforms, scfg, _eos(scfg))


def _one_block(weights: dict, uniforms: Array, prompt_lengths: Array, prompt_cache: list,
               prompt_mask: Array, filled: list, carry: tuple, current: list, *, block: int,
               model_cfg: ModelConfig, scfg: SamplingConfig, rules: sharding_lib.Rules):
  """Response block `block`'s loop of `_decode` on its own: the context is the prompt and the
  `filled` earlier blocks. Returns (carry, the filled block)."""
  TRACE_COUNTS["decode_block"] += 1
  offset, size = response_blocks(scfg.max_new_tokens, scfg.attention_segments)[block]
  context = [[(k, v, prompt_mask)] + [(bk, bv, None) for bk, bv in layer_blocks]
             for (k, v), layer_blocks in zip(prompt_cache, zip(*filled) if filled else
                                             [()] * len(prompt_cache))]
  return _block_loop(weights, model_cfg, scfg, rules, _eos(scfg), uniforms, prompt_lengths,
                     context, carry, current, offset, size)


_start_jit = jax.jit(_start, static_argnames=("model_cfg", "scfg", "rules", "draw_total"))
_one_block_jit = jax.jit(_one_block, static_argnames=("block", "model_cfg", "scfg", "rules"),
                         donate_argnames=("current",))
_finish_jit = jax.jit(lambda carry, scfg: _finish(carry, scfg, _eos(scfg)),
                      static_argnames=("scfg",))


def compact_size(done: np.ndarray, minimum: int) -> int | None:
  """Rows of the smaller batch the live rows move to, or None to keep the batch: the live
  count rounded up to a power of two (at least `minimum`), when that halves the batch or more."""
  live = int((~done).sum())
  size = 1 << max(live - 1, 0).bit_length()
  size = max(size, minimum)
  return size if live and size <= done.shape[0] // 2 else None


def decode_compacting(params: Any, state: DecodeState, blocks: list, key: Array,
                      draw_offset: Array | int = 0, *, model_cfg: ModelConfig,
                      scfg: SamplingConfig, rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
                      draw_total: int | None = None, minimum: int = 8) -> dict:
  """`decode_jit`'s outputs, with the rows still decoding moved to a smaller batch between
  response blocks once at most half of them are left, so finished rows stop costing compute.

  The blocks run as separate programs; after each the host reads which rows are done and, when
  `compact_size` says so, gathers the live rows' carry, uniforms, prompt and cache into a batch
  of a power-of-two size (padded with a finished row, which only writes padding). Each row keeps
  its uniforms, so it draws what it would in the full batch; its tokens and log-probs go back to
  their rows at the end (tests/test_decode_speed.py checks both against `decode_jit`).
  """
  weights, uniforms, carry = _start_jit(params, state, key, draw_offset, model_cfg=model_cfg,
                                        scfg=scfg, rules=rules, draw_total=draw_total)
  full_tokens, full_logprobs = carry[3], carry[4]
  rows = None  # original row of each row of the current batch (None: all, in order)
  lengths, cache, mask, filled = state.prompt_lengths, state.prompt_cache, state.prompt_mask, []
  statics = dict(model_cfg=model_cfg, scfg=scfg, rules=rules)

  def put_back(tokens, logprobs, carry):  # the current rows' outputs into the full arrays
    if rows is None:
      return carry[3], carry[4]
    return tokens.at[rows].set(carry[3]), logprobs.at[rows].set(carry[4])

  for j in range(len(blocks)):
    carry, block = _one_block_jit(weights, uniforms, lengths, cache, mask, filled, carry,
                                  blocks[j], block=j, **statics)
    filled.append(block)
    if j == len(blocks) - 1:
      break
    done = np.asarray(carry[2])
    if done.all():  # the later loops would run no step
      break
    size = compact_size(done, minimum)
    if size is None:
      continue
    full_tokens, full_logprobs = put_back(full_tokens, full_logprobs, carry)
    live = np.flatnonzero(~done)
    pick = np.concatenate([live, np.full(size - live.size, np.flatnonzero(done)[0])])
    rows = pick if rows is None else rows[pick]
    take = lambda x: x[pick]
    # The prompt's rows are per group until the first move; the live rows then get their own.
    take_prompt = lambda x, group=lengths.shape[0] // mask.shape[0]: x[pick // group]
    carry = (carry[0],) + tuple(take(x) for x in carry[1:3]) + (take(carry[3]), take(carry[4]))
    uniforms, lengths, mask = uniforms[:, pick], take(lengths), take_prompt(mask)
    cache, filled = jax.tree.map(take_prompt, cache), jax.tree.map(take, filled)
    blocks = blocks[:j + 1] + [jax.tree.map(take, b) for b in blocks[j + 1:]]
  full_tokens, full_logprobs = put_back(full_tokens, full_logprobs, carry)
  return _finish_jit((carry[0], None, None, full_tokens, full_logprobs), scfg=scfg)
