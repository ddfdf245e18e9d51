"""Teacher-forced log-probabilities of response tokens, projected in sequence chunks.

A sequence is a left-padded prompt of P tokens followed by a right-padded response of N tokens.
The logits at position P-1+i predict response token i, so the response log-probs are
log_softmax(h[P-1+i] W)[y_i]. Only one [B, chunk, V] block of logits is alive at a time, which
is what keeps a 150k vocabulary affordable at long response lengths.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import KVCache, Transformer, init_cache


def logprob_and_entropy(logits, targets):
  """log p(target) and entropy H = -sum_v p_v log p_v of each row of logits, in float32.

      log p(y) = z_y - logsumexp(z),   p = softmax(z)
  """
  logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


def shares_prompts(config: ModelConfig, group: int) -> bool:
  """Whether `response_logprobs(..., group)` runs each prompt once: with group > 1, and only on
  the plain attention path (the shared form attends through a KV cache, which neither the fused
  kernel nor query chunking serves, so a config that chose those keeps its memory profile)."""
  return group > 1 and config.attention_impl != "fused" and config.attention_chunk == 0


def _shared_prompt_hidden(model: Transformer, params, tokens, token_mask, prompt_len: int,
                          group: int):
  """Final hidden states at the positions that predict the response, computing each prompt once
  for its `group` consecutive rows.

  The prompt of rows g*group .. (g+1)*group-1 runs once into a KV cache; the cache is repeated
  to the group's rows and the responses run against it, so every response token attends to the
  same keys and values as in the full forward (positions count the real tokens before them,
  the cached ones included). The gradient of the repeat sums the group's contributions to its
  prompt. Returns [B, N, d]: the prompt's last position, then responses 0 .. N-2.
  """
  rows, total = tokens.shape
  cache = init_cache(model.config, rows // group, total)
  prompt_hidden, cache = model.apply(params, tokens[::group, :prompt_len],
                                     token_mask=token_mask[::group, :prompt_len], cache=cache,
                                     return_hidden=True)
  repeat = lambda a, axis: jnp.repeat(a, group, axis=axis)
  cache = KVCache(k=repeat(cache.k, 1), v=repeat(cache.v, 1), valid=repeat(cache.valid, 0),
                  index=cache.index)
  response_hidden, _ = model.apply(params, tokens[:, prompt_len:],
                                   token_mask=token_mask[:, prompt_len:], cache=cache,
                                   return_hidden=True)
  return jnp.concatenate([repeat(prompt_hidden[:, -1:], 0), response_hidden[:, :-1]], axis=1)


def response_logprobs(config: ModelConfig, params, tokens, token_mask, prompt_len: int,
                      chunk: int = 0, with_entropy: bool = False, group: int = 1):
  """Log-probs [B, N] (and entropies) of tokens[:, prompt_len:] given everything before them.

  Args:
    tokens: [B, P+N] int32, prompt left-padded to `prompt_len`, response right-padded.
    token_mask: [B, P+N] bool, False on padding.
    prompt_len: P (static).
    chunk: project at most `chunk` positions at a time (0: all N at once).
    group: rows come in consecutive groups of `group` with one prompt (a rollout group): each
      prompt then runs once (`shares_prompts`), the same log-probs with (group-1)/group of the
      prompt positions' compute saved. 1: every row runs its own prompt.
  """
  chex.assert_rank([tokens, token_mask], 2)
  model = Transformer(config)
  if shares_prompts(config, group):
    if tokens.shape[0] % group:
      raise ValueError(f"{tokens.shape[0]} rows do not form groups of {group} with one prompt.")
    hidden = _shared_prompt_hidden(model, params, tokens, token_mask, prompt_len, group)
  else:
    hidden, _ = model.apply(params, tokens, token_mask=token_mask, return_hidden=True)
    hidden = hidden[:, prompt_len - 1:-1]  # positions that predict the response tokens
  targets = tokens[:, prompt_len:]
  n = targets.shape[1]
  chunk = n if chunk <= 0 or chunk >= n else chunk

  def project(h, y):
    logits = model.apply(params, h, method=Transformer.logits)
    return logprob_and_entropy(logits, y)

  if chunk == n:
    logp, entropy = project(hidden, targets)
  else:
    pad = (-n) % chunk
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(targets, ((0, 0), (0, pad)))
    b = h.shape[0]
    h = h.reshape(b, -1, chunk, h.shape[-1]).swapaxes(0, 1)
    y = y.reshape(b, -1, chunk).swapaxes(0, 1)
    # A scan (not a vmap) so XLA keeps one chunk of logits alive; remat recomputes it for grads.
    _, (logp, entropy) = jax.lax.scan(lambda c, xs: (c, jax.checkpoint(project)(*xs)), None,
                                      (h, y))
    logp = logp.swapaxes(0, 1).reshape(b, -1)[:, :n]
    entropy = entropy.swapaxes(0, 1).reshape(b, -1)[:, :n]
  return (logp, entropy) if with_entropy else logp
