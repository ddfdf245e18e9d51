"""Batches as frozen pytrees: token sequences and the per-token arrays of an RL update."""

from __future__ import annotations

import flax
import jax
import numpy as np


@flax.struct.dataclass
class SequenceBatch:
  """Left-padded prompts followed by right-padded responses.

  Attributes:
    tokens: [B, P+N] int32.
    token_mask: [B, P+N] bool, False on padding.
    response_mask: [B, N] float32, 1 on the response tokens that count (loss mask).
    prompt_len: P, static so slicing stays shape-static under jit.
  """

  tokens: jax.Array
  token_mask: jax.Array
  response_mask: jax.Array
  prompt_len: int = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class PolicyBatch:
  """What one policy update consumes: sequences, rollout log-probs and token advantages."""

  seq: SequenceBatch
  old_logp: jax.Array  # [B, N] log pi_old(y_t), recomputed teacher-forced
  ref_logp: jax.Array  # [B, N] log pi_ref(y_t) (zeros when the method has no reference)
  advantages: jax.Array  # [B, N]


def make_sequences(prompts: list[list[int]], responses: list[list[int]], prompt_len: int,
                   response_len: int, pad_id: int = 0) -> SequenceBatch:
  """Host-side packing of token lists into a `SequenceBatch` (numpy; place it afterwards).

  Prompts longer than `prompt_len` or responses longer than `response_len` are an error here
  rather than a silent truncation that would change what the model is trained on.
  """
  b = len(prompts)
  if len(responses) != b:
    raise ValueError(f"{b} prompts but {len(responses)} responses.")
  tokens = np.full((b, prompt_len + response_len), pad_id, np.int32)
  mask = np.zeros((b, prompt_len + response_len), bool)
  resp_mask = np.zeros((b, response_len), np.float32)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    if len(p) > prompt_len or len(p) == 0:
      raise ValueError(f"Prompt {i} has {len(p)} tokens; it must have 1..{prompt_len} "
                       "(raise task.max_prompt_len).")
    if len(r) > response_len:
      raise ValueError(f"Response {i} has {len(r)} tokens, more than {response_len} "
                       "(raise rollout.max_new_tokens).")
    tokens[i, prompt_len - len(p):prompt_len] = p
    mask[i, prompt_len - len(p):prompt_len] = True
    tokens[i, prompt_len:prompt_len + len(r)] = r
    mask[i, prompt_len:prompt_len + len(r)] = True
    resp_mask[i, :len(r)] = 1.0
  return SequenceBatch(tokens=tokens, token_mask=mask, response_mask=resp_mask,
                       prompt_len=prompt_len)
