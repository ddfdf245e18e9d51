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
from prl_jax.models.transformer import Transformer


def logprob_and_entropy(logits, targets):
  """log p(target) and entropy H = -sum_v p_v log p_v of each row of logits, in float32.

      log p(y) = z_y - logsumexp(z),   p = softmax(z)
  """
  logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


def response_logprobs(config: ModelConfig, params, tokens, token_mask, prompt_len: int,
                      chunk: int = 0, with_entropy: bool = False):
  """Log-probs [B, N] (and entropies) of tokens[:, prompt_len:] given everything before them.

  Args:
    tokens: [B, P+N] int32, prompt left-padded to `prompt_len`, response right-padded.
    token_mask: [B, P+N] bool, False on padding.
    prompt_len: P (static).
    chunk: project at most `chunk` positions at a time (0: all N at once).
  """
  chex.assert_rank([tokens, token_mask], 2)
  model = Transformer(config)
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
