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

Cache and loops. The prefill runs the model itself over the prompts in one batch, each prompt
once for its n samples (its logits are copied to the n rows; its keys and values are not). The
decode then keeps the KV cache per layer in pieces, each [rows, kv_heads, slots, head_dim]: the
prompt's P slots, one row per prompt, then `attention_segments` response blocks of one row per
sample covering the N new tokens (P + N slots in all).
Block j is filled by its own `lax.while_loop`, which attends over the prompt, the finished blocks
and block j only, so a step reads the cache slots in use (up to one block) rather than the whole
allocation; the blocks are allocated by the prefill, donated to the decode and updated in place.
Attention over the pieces is one softmax over their concatenated scores (`_attend`), the model's
math. Why it is fast on a CPU (about 2.4x Tunix 0.1.7 at the shapes of docs/benchmarks.md):
  - attention reads are the largest cost after the matmuls and are memory-bound, so reading only
    the slots in use matters, and a prompt's keys and values are read once for its n samples
    (the n rows' queries meet them as extra query rows of one product; 1.3-1.5x the rollout
    speed after 200-token prompts at n = 8, docs/benchmarks.md); heads-major blocks make the
    score and value contractions plain batched matmuls with the KV head next to the batch (the
    model's [B, slots, kv_heads, head_dim] layout would transpose the cache on every step, and
    XLA's CPU dots run several times slower with the KV head after the query rows);
  - q|k|v and gate|up projections are fused into one matmul each, weights are cast and split per
    layer and the rotary cos/sin tables computed once per call, outside the loop;
  - all random numbers are drawn before the loop (one uniform per row and step); tokens come from
    a two-level inverse CDF and top-k / top-p thresholds from a bisection over the float bit
    patterns: no sort and no vocabulary-wide cumsum inside the loop.
`tests/test_sampling.py` checks the decode against the model: teacher-forced log-probs (<= 1e-5)
and greedy tokens of full recomputation.

No host round trip happens per token: the whole decode is one XLA program that stops early once
every row has emitted EOS. With `SamplingConfig.compact_rows` the blocks run as separate programs
and, between them, the rows still decoding move to a smaller batch once at most half are left
(`prl_jax.decode.decode_compacting`), so finished rows stop costing compute.

Lanes. `sample_in_calls` runs each call as `lanes` calls of a share of its prompts at once, on
host threads (`prl_jax.host_lanes`: 2 on a CPU backend with one device). Each share draws with its
rows' uniforms from the whole call's draw and pads its prompts to the whole call's bucket, so the
tokens are those of the whole call; on a CPU, where one decode in flight keeps about 1.5 of 2
cores busy, two shares take 0.67-0.77x the time at the mini and lab shapes (docs/benchmarks.md,
"Sampler lanes"). Two lanes inside one XLA program ran no faster: the CPU runtime ran them in
turn.

Files: this module is the host side (prompts, `sample`, `sample_in_calls`); `prl_jax.decode` holds
the jitted prefill and decode loop, `prl_jax.token_choice` the `SamplingConfig` and token draws.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from prl_jax import sharding as sharding_lib
from prl_jax.decode import decode_compacting, decode_jit, prefill_jit
from prl_jax.distributed import to_host
from prl_jax.host_lanes import in_lanes, resolve_lanes
from prl_jax.models.config import ModelConfig
from prl_jax.token_choice import SamplingConfig

Array = jax.Array


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
# Public entry point.


def sample(params: Any, model_cfg: ModelConfig, prompts: Any, key: Array,
           sampling_cfg: SamplingConfig, *, prompt_lengths: Any = None,
           padding_side: str = "right", mesh: jax.sharding.Mesh | None = None,
           rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
           draw_window: tuple[int, int] | None = None) -> Rollout:
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
    mesh: when given, rows are split over the mesh's batch axes and params are placed in
      `sharding.param_shardings(model_cfg, mesh, rules)` (free when they already are). When the
      prompts split evenly over those axes, a prompt is prefilled once for its n samples as
      without a mesh; otherwise rows are padded to a multiple of that split (the padding
      dropped from the result) and every row runs its own prompt.
    rules: logical-axis rules for the decode's sharding constraints.
    draw_window: (offset, total): these rows are rows offset .. of a batch of `total` rows
      drawn with `key`, and draw what they would there (`decode.draw_uniforms`), so a batch
      split into calls samples what it would whole (`sample_in_calls`' lanes). None: a batch
      of its own.
  """
  tokens, mask = prepare_prompts(prompts, model_cfg, sampling_cfg, prompt_lengths, padding_side)
  rows = tokens.shape[0]
  rules = sharding_lib.hashable_rules(rules)  # a static jit argument
  statics = dict(model_cfg=model_cfg, scfg=sampling_cfg, rules=rules)
  offset, total = draw_window or (0, None)

  def run(tokens, mask, repeat=1, compact=False):
    state, blocks = prefill_jit(params, tokens, mask, repeat=repeat, **statics)
    if compact:
      return decode_compacting(params, state, blocks, key, jnp.int32(offset), **statics,
                               draw_total=total)
    out, _ = decode_jit(params, state, blocks, key, jnp.int32(offset), **statics,
                        draw_total=total)
    return out

  n = sampling_cfg.n
  if mesh is None:
    # Each prompt is prefilled once for its n samples (rows are [p0] * n + [p1] * n + ...).
    out = run(tokens[::n], mask[::n], n, sampling_cfg.compact_rows)
  else:
    # A no-op for params already placed by `sharding` (the usual case); otherwise a reshard.
    params = jax.device_put(params, sharding_lib.param_shardings(model_cfg, mesh, rules))
    shards = sharding_lib.batch_shards(mesh, rules)
    with jax.set_mesh(mesh):
      if (rows // n) % shards == 0:
        # Every shard holds whole groups: each prompt is prefilled and kept once, on its shard.
        out = run(*jax.device_put([tokens[::n], mask[::n]],
                                  sharding_lib.batch_sharding(mesh, rules)), n)
      else:  # rows padded to a multiple of the shards, every row prefilled on its own
        extra = (-rows) % shards
        padded = [np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) for x in (tokens, mask)]
        padded = jax.device_put(padded, sharding_lib.batch_sharding(mesh, rules))
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
  logprobs: np.ndarray | None = None  # [R, N] float32, 0 past the mask (Rollout.logprobs)


_HOST_FIELDS = ("tokens", "mask", "lengths", "truncated", "logprobs")


def _host_rollout(rollout: Rollout, rows: int) -> HostRollout:
  """The first `rows` rows of a rollout, on the host."""
  tokens, mask, lengths, truncated, logprobs = (to_host(getattr(rollout, name))[:rows]
                                                for name in _HOST_FIELDS)
  return HostRollout(tokens, mask.astype(bool), lengths, truncated, logprobs)


def _sample_in_lanes(params: Any, model_cfg: ModelConfig, prompts: list, key: Array,
                     scfg: SamplingConfig, lanes: int, rows: int, **kwargs) -> HostRollout:
  """`sample(prompts)` on the host, as `lanes` calls of equal shares of the prompts run at once
  on host threads, drawing and padding as the whole call would: each share keeps its rows'
  uniforms (`draw_window`) and the whole call's prompt bucket (so the shares also run one
  compiled program), and the tokens are the whole call's (tests/test_sampler_lanes.py). The
  last share is padded by repeating the last prompt; the first `rows` rows are returned."""
  lanes = min(lanes, len(prompts))
  if lanes == 1:
    return _host_rollout(sample(params, model_cfg, prompts, key, scfg, **kwargs), rows)
  share = -(-len(prompts) // lanes)
  padded = prompts + [prompts[-1]] * (share * lanes - len(prompts))
  width = prepare_prompts(prompts, model_cfg, scfg.replace(n=1))[0].shape[1]
  lane_cfg = scfg.replace(min_prompt_bucket=width)

  def run(lane: int) -> HostRollout:
    part = padded[lane * share:(lane + 1) * share]
    rollout = sample(params, model_cfg, part, key, lane_cfg,
                     draw_window=(lane * share * scfg.n, len(prompts) * scfg.n), **kwargs)
    return _host_rollout(rollout, share * scfg.n)

  parts = in_lanes(run, lanes)
  return HostRollout(*(np.concatenate([getattr(p, name) for p in parts])[:rows]
                       for name in _HOST_FIELDS))


def sample_in_calls(params: Any, model_cfg: ModelConfig, calls: Sequence[Sequence[Any]],
                    key: Array, sampling_cfg: SamplingConfig, *,
                    pad_to: Sequence[int] | None = None, mesh: jax.sharding.Mesh | None = None,
                    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
                    fold_single: bool = True, on_call: Any = None,
                    lanes: int = 0) -> list[HostRollout]:
  """`sampling_cfg.n` responses per prompt, one `sample` call per entry of `calls`.

  The one chunked-call loop of training, evaluation and labelling: a call's KV cache holds only
  its rows. Call i draws with fold_in(key, i) (with `fold_single=False` a lone call uses `key`
  itself). Call i is padded to `pad_to[i]` prompts by repeating its last prompt, so calls share
  compiled programs, and the padding's rows are dropped. `on_call(prompts)` runs after each call
  with its number of real prompts (a progress bar). `mesh` and `rules` go to `sample`. Each
  call runs as `resolve_lanes(lanes, mesh)` calls of a share of its prompts at once, which
  sample the tokens the whole call would (`_sample_in_lanes`).
  """
  lanes = resolve_lanes(lanes, mesh)
  out = []
  for i, prompts in enumerate(calls):
    prompts = [list(p) for p in prompts]
    size = pad_to[i] if pad_to is not None else len(prompts)
    padded = prompts + [prompts[-1]] * (size - len(prompts))
    call_key = key if len(calls) == 1 and not fold_single else jax.random.fold_in(key, i)
    out.append(_sample_in_lanes(params, model_cfg, padded, call_key, sampling_cfg, lanes,
                                len(prompts) * sampling_cfg.n, mesh=mesh, rules=rules))
    if on_call is not None:
      on_call(len(prompts))
  return out
