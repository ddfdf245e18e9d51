"""How a sampled token is chosen: `SamplingConfig` and the logit processing under the decode loop.

Temperature, top-k and top-p truncate and renormalise the logits (`process_logits`); a token is
drawn by a two-level inverse CDF from one uniform per row and step (`choose_tokens`), and top-k /
top-p thresholds come from a bisection over the float bit patterns: no sort and no
vocabulary-wide cumsum inside the loop. Log-probs follow `SamplingConfig.logprob_mode` (see
`prl_jax.sampling`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array

LOGPROB_MODES = ("temperature", "raw", "processed")


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
    compact_rows: between response blocks, move the rows still decoding to a smaller batch
      (a power of two) once at most half are left, so rows that emitted EOS stop costing
      compute (`prl_jax.decode.decode_compacting`; one host sync per block, a compiled block
      program per batch size). Same tokens; ignored on a mesh.
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
  compact_rows: bool = False

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


