"""Speed changes of the RL step that must not change its results: a step's sequences are
left-padded only to its longest prompt (rounded up), not to task.max_prompt_len."""

import jax
import jax.numpy as jnp
import numpy as np

from prl_jax.models.config import preset
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import init_params
from prl_jax.run.batch import PolicyBatch, make_sequences
from prl_jax.train import objectives
from prl_jax.train.rollouts import sequence_prompt_len

CFG = preset("tiny")
PROMPTS = [[5, 17, 3, 44, 8, 61, 2, 9, 11], [9, 9, 30], [70, 1, 12, 88, 4], [33]]
RESPONSES = [[4, 8, 15, 16, 23], [42], [7, 7, 7, 7, 7, 7, 7], [2, 3]]


def test_sequence_prompt_len_buckets():
  lengths = {1: 4, 4: 4, 5: 8, 9: 12, 12: 12, 13: 16, 17: 20, 33: 40, 100: 112, 129: 160}
  for longest, want in lengths.items():
    assert sequence_prompt_len([[0] * longest, [0]], 4096) == want
  assert sequence_prompt_len([[0] * 11], 12) == 12  # never above task.max_prompt_len
  assert sequence_prompt_len([[0] * 9], 9) == 9


def test_trimmed_prompt_padding_leaves_log_probs_and_loss_unchanged():
  params = init_params(CFG, jax.random.key(0))
  trimmed_len = sequence_prompt_len(PROMPTS, 32)
  assert trimmed_len == 12
  seqs = {p: make_sequences(PROMPTS, RESPONSES, p, 8) for p in (32, trimmed_len)}
  logp = {p: response_logprobs(CFG, params, s.tokens, s.token_mask, p)
          for p, s in seqs.items()}
  mask = seqs[32].response_mask
  np.testing.assert_allclose(np.asarray(logp[32]) * mask, np.asarray(logp[trimmed_len]) * mask,
                             atol=1e-5)
  loss = objectives.policy_loss_fn(CFG, objectives.PolicyLossConfig(kl_coef=0.04))
  adv = jnp.asarray(np.linspace(-1, 1, mask.size).reshape(mask.shape), jnp.float32)

  def value_and_grad(p):
    batch = PolicyBatch(seq=seqs[p], old_logp=logp[32] * mask, ref_logp=logp[32] * mask - 0.1,
                        advantages=adv)
    # Jitted as in training (op by op the backward pass takes most of a minute).
    return jax.jit(jax.value_and_grad(lambda w: loss(w, batch)[0]))(params)

  (full, full_grad), (trimmed, trimmed_grad) = value_and_grad(32), value_and_grad(trimmed_len)
  np.testing.assert_allclose(float(full), float(trimmed), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(full_grad), jax.tree.leaves(trimmed_grad)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
