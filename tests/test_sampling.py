"""The rollout sampler against the model itself: teacher-forced log-probs, greedy recomputation,
EOS handling, n samples per prompt, top-k/top-p, prompt bucketing, limits, and sharded decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax import decode, sampling, sharding, token_choice
from prl_jax.models.config import preset
from prl_jax.models.transformer import Transformer, init_params
from prl_jax.sampling import SamplingConfig, sample

CFG = preset("tiny")
PROMPTS = [[5, 17, 3, 44, 8, 61, 2], [9, 9, 30], [70, 1, 12, 88, 4], [33]]  # one bucket (8)
NEW = 12
GREEDY = SamplingConfig(max_new_tokens=NEW, greedy=True, attention_segments=3)


@pytest.fixture(scope="module")
def params():
  """Random params scaled up (std ~0.1) so greedy choices are decisive, not near-ties."""
  p = init_params(CFG, jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 64))
  return jax.tree.map(lambda x: x * 5.0 if x.ndim >= 2 else
                      x + 0.1 * jax.random.normal(next(keys), x.shape), p)


@pytest.fixture(scope="module")
def greedy(params):
  return sample(params, CFG, PROMPTS, jax.random.key(0), GREEDY)


def _teacher_forced_logits(params, rollout):
  """Logits [B, N, V] predicting each response token from one full forward pass."""
  tokens, mask = rollout.sequences()
  logits, _ = jax.jit(lambda p, t, m: Transformer(CFG).apply(p, t, token_mask=m))(params, tokens,
                                                                                 mask)
  width = rollout.prompt_tokens.shape[1]
  return logits[:, width - 1:-1]


def _greedy_recompute(params, rollout):
  """Reference: no cache; the whole fixed-width sequence is re-run for every new token, and the
  argmax at the last real position is appended."""
  prompt, prompt_mask = rollout.prompt_tokens, rollout.prompt_mask
  batch, steps = rollout.tokens.shape
  tokens = jnp.concatenate([prompt, jnp.zeros((batch, steps), jnp.int32)], axis=1)
  mask = jnp.concatenate([prompt_mask, jnp.zeros((batch, steps), bool)], axis=1)
  forward = jax.jit(lambda p, t, m: Transformer(CFG).apply(p, t, token_mask=m)[0])
  width = prompt.shape[1]
  for t in range(steps):
    nxt = jnp.argmax(forward(params, tokens, mask)[:, width + t - 1], axis=-1)
    tokens, mask = tokens.at[:, width + t].set(nxt), mask.at[:, width + t].set(True)
  return tokens[:, width:]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_teacher_forced(params, temperature):
  cfg = SamplingConfig(max_new_tokens=NEW, temperature=temperature, n=2)
  rollout = sample(params, CFG, PROMPTS, jax.random.key(1), cfg)
  logits = _teacher_forced_logits(params, rollout) / temperature
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), rollout.tokens[..., None],
                                 -1)[..., 0]
  assert rollout.logprobs.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(rollout.logprobs),
                             np.where(rollout.mask, np.asarray(expected), 0.0), atol=1e-5)


def test_qwen_style_models_biases_norms_and_tied_embeddings():
  """The decode's own weight layout covers q/k/v biases (Qwen2), q/k norms (Qwen3), tied
  embeddings and a head size other than d / heads too, here all in one model (the perturbation
  moves the norms' scales off 1 and the biases off 0, so a skipped one would show)."""
  cfg = CFG.replace(qkv_bias=True, qk_norm=True, tie_embeddings=True, head_dim=32)
  p = init_params(cfg, jax.random.key(2))
  p = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(3), x.shape), p)
  out = sample(p, cfg, PROMPTS, jax.random.key(4), SamplingConfig(max_new_tokens=NEW))
  tokens, mask = out.sequences()
  logits, _ = jax.jit(Transformer(cfg).apply)(p, tokens, token_mask=mask)
  width = out.prompt_tokens.shape[1]
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits[:, width - 1:-1], -1),
                                 out.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(expected), atol=1e-5)


def test_greedy_equals_full_recomputation(params, greedy):
  np.testing.assert_array_equal(np.asarray(greedy.tokens),
                                np.asarray(_greedy_recompute(params, greedy)))
  assert not np.any(np.asarray(greedy.truncated) ^ True)  # no EOS configured: all truncated
  # Greedy log-probs ("temperature" mode at T=0 uses T=1) are the teacher-forced ones.
  logits = _teacher_forced_logits(params, greedy)
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), greedy.tokens[..., None],
                                 -1)[..., 0]
  np.testing.assert_allclose(np.asarray(greedy.logprobs), np.asarray(expected), atol=1e-5)


def test_segmented_decode_equals_single_loop(params, greedy):
  one_loop = sample(params, CFG, PROMPTS, jax.random.key(0),
                    GREEDY.replace(attention_segments=1))
  np.testing.assert_array_equal(np.asarray(one_loop.tokens), np.asarray(greedy.tokens))
  # Segments sum attention in another order, and the rounding difference grows through the
  # layers (weights scaled x5): 1.2e-6 on an Intel Xeon, 2.6e-6 on an AMD EPYC for log-probs of
  # size ~3.6, i.e. a few tens of float32 ulps. The teacher-forced tolerance (1e-5) covers that
  # with room; a wrong segment boundary or cache slot moves log-probs by 1e-2 or more.
  np.testing.assert_allclose(np.asarray(one_loop.logprobs), np.asarray(greedy.logprobs),
                             atol=1e-5)


def test_eos_stops_a_row(params, greedy):
  tokens = np.asarray(greedy.tokens)
  eos = int(tokens[0, 4])  # row 0 emits it at position 4 (or earlier if it repeats)
  out = sample(params, CFG, PROMPTS, jax.random.key(0), GREEDY.replace(eos_id=eos, pad_id=0))
  got, mask = np.asarray(out.tokens), np.asarray(out.mask)
  for row in range(len(PROMPTS)):
    hits = np.flatnonzero(tokens[row] == eos)
    if hits.size == 0:
      assert mask[row].all() and out.truncated[row] and got[row].tolist() == tokens[row].tolist()
      continue
    end = int(hits[0])
    assert got[row, :end + 1].tolist() == tokens[row, :end + 1].tolist()  # same until EOS
    assert mask[row].tolist() == [True] * (end + 1) + [False] * (NEW - end - 1)
    assert (got[row, end + 1:] == 0).all()  # pad after EOS
    assert (np.asarray(out.logprobs)[row, end + 1:] == 0).all()
    assert int(out.lengths[row]) == end + 1 and not out.truncated[row]
  assert int(out.steps) == NEW  # some row never emits EOS


def test_early_exit_when_every_row_ends(params):
  # Every token is an EOS: all rows end on their first token and the loop stops at once.
  out = sample(params, CFG, PROMPTS, jax.random.key(0),
               GREEDY.replace(eos_id=tuple(range(CFG.vocab_size)), pad_id=7))
  assert int(out.steps) == 1
  assert np.asarray(out.mask).sum(1).tolist() == [1] * len(PROMPTS)
  assert (np.asarray(out.tokens)[:, 1:] == 7).all()
  assert not np.asarray(out.truncated).any()


def test_n_samples_are_contiguous_and_differ(params):
  n = 3
  out = sample(params, CFG, PROMPTS[:2], jax.random.key(3),
               SamplingConfig(max_new_tokens=NEW, temperature=1.0, n=n))
  prompts = np.asarray(out.prompt_tokens)
  assert prompts.shape[0] == 2 * n and out.group_size == n
  for g in range(2):
    group = prompts[g * n:(g + 1) * n]
    assert (group == group[0]).all()
    assert np.asarray(out.prompt_mask)[g * n].sum() == len(PROMPTS[g])
    responses = {tuple(r) for r in np.asarray(out.tokens)[g * n:(g + 1) * n]}
    assert len(responses) == n  # independent draws
  assert not (prompts[0] == prompts[n]).all()


@pytest.mark.parametrize("changes", [dict(top_k=1), dict(top_p=1e-6)], ids=["top_k=1", "top_p"])
def test_truncation_to_one_token_equals_greedy(params, greedy, changes):
  cfg = SamplingConfig(max_new_tokens=NEW, temperature=1.0, **changes)
  out = sample(params, CFG, PROMPTS, jax.random.key(5), cfg)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(greedy.tokens))


def _reference_keep(logits, top_k, top_p):
  """Sort-based top-k then nucleus (NumPy, one row at a time): the tokens that may be drawn."""
  keep = np.zeros(logits.shape, bool)
  for r, row in enumerate(logits):
    order = np.argsort(-row, kind="stable")
    k = top_k if top_k else len(row)
    kept = order[:k]
    probs = np.exp(row[kept] - row[kept].max())
    probs /= probs.sum()
    mass_before = np.cumsum(probs) - probs
    keep[r, kept[mass_before < top_p]] = True
  return keep


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.6), (20, 0.9), (0, 0.999)])
def test_top_k_top_p_match_sort_reference(top_k, top_p):
  logits = np.asarray(jax.random.normal(jax.random.key(top_k), (16, 64)) * 3.0)
  cfg = SamplingConfig(temperature=0.8, top_k=top_k, top_p=top_p)
  z = np.asarray(token_choice.process_logits(jnp.asarray(logits), cfg))
  np.testing.assert_array_equal(np.isfinite(z), _reference_keep(logits / 0.8, top_k, top_p))


@pytest.mark.parametrize("mode", ["temperature", "raw", "processed"])
def test_logprob_modes_against_a_normalised_reference(mode):
  """Each mode's log-prob of the chosen token is that token's entry of the log-softmax of its
  distribution (computed here in float64 with numpy): logits / T, the logits, or the truncated
  distribution, where the top-k entries left finite renormalise among themselves."""
  logits = jax.random.normal(jax.random.key(3), (8, 300)) * 4.0
  cfg = SamplingConfig(temperature=0.7, top_k=10, logprob_mode=mode)
  tokens, logp = token_choice.choose_tokens(logits, jax.random.uniform(jax.random.key(4), (8,)),
                                            cfg)
  z = np.asarray(logits, np.float64)
  if mode != "raw":
    z = z / 0.7
  if mode == "processed":
    z = np.where(np.isfinite(np.asarray(token_choice.process_logits(logits, cfg))), z, -np.inf)
  shifted = z - z.max(-1, keepdims=True)
  reference = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  expected = reference[np.arange(8), np.asarray(tokens)]
  assert np.isfinite(expected).all()
  np.testing.assert_allclose(np.asarray(logp), expected, atol=1e-5)
  greedy = cfg.replace(temperature=0.0, top_k=0, logprob_mode="temperature")
  tokens, logp = token_choice.choose_tokens(logits, None, greedy)
  np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))
  raw = np.asarray(logits, np.float64)
  raw = raw - raw.max(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(logp), -np.log(np.exp(raw).sum(-1)), atol=1e-5)


def test_draw_follows_the_distribution():
  logits = jnp.log(jnp.array([[0.5, 0.0, 0.2, 0.3]]))  # a zero-probability token included
  uniforms = jax.random.uniform(jax.random.key(0), (20000, 1))
  draws = np.asarray(jax.vmap(lambda u: token_choice._draw(logits, u)[0])(uniforms))
  freq = np.bincount(draws, minlength=4) / draws.size
  np.testing.assert_allclose(freq, [0.5, 0.0, 0.2, 0.3], atol=0.015)
  assert freq[1] == 0


def test_prompt_buckets_reuse_compiled_programs(params):
  cfg = SamplingConfig(max_new_tokens=4, greedy=True, attention_segments=1)
  sample(params, CFG, [[1, 2, 3, 4, 5], [6, 7]], jax.random.key(0), cfg)
  before = dict(decode.TRACE_COUNTS)
  out = sample(params, CFG, [[1, 2, 3, 4, 5, 6, 7], [8]], jax.random.key(0), cfg)  # same bucket
  assert out.prompt_tokens.shape == (2, 8)
  assert dict(decode.TRACE_COUNTS) == before
  out = sample(params, CFG, [[1] * 9, [8]], jax.random.key(0), cfg)  # next bucket: 16
  assert out.prompt_tokens.shape == (2, 16)
  assert decode.TRACE_COUNTS["decode"] == before["decode"] + 1


def test_padded_array_input_equals_lists(params, greedy):
  width = 9
  right = np.zeros((len(PROMPTS), width), np.int32)
  for i, p in enumerate(PROMPTS):
    right[i, :len(p)] = p
  lengths = [len(p) for p in PROMPTS]
  out = sample(params, CFG, right, jax.random.key(0), GREEDY, prompt_lengths=lengths)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(greedy.tokens))
  np.testing.assert_array_equal(np.asarray(out.prompt_tokens), np.asarray(greedy.prompt_tokens))


def test_limits_raise_clear_errors(params):
  with pytest.raises(ValueError, match="more than the limit of 8"):
    sample(params, CFG, [[1] * 9], jax.random.key(0), GREEDY.replace(max_prompt_len=8))
  too_long = CFG.max_position_embeddings - NEW + 1
  with pytest.raises(ValueError, match="max_position_embeddings"):
    sample(params, CFG, [[1] * too_long], jax.random.key(0), GREEDY)
  with pytest.raises(ValueError, match="empty"):
    sample(params, CFG, [[1, 2], []], jax.random.key(0), GREEDY)
  with pytest.raises(ValueError, match="outside"):
    sample(params, CFG, [[1, CFG.vocab_size]], jax.random.key(0), GREEDY)
  for bad in (dict(top_p=0.0), dict(top_k=-1), dict(n=0), dict(temperature=-1.0),
              dict(max_new_tokens=0), dict(logprob_mode="old")):
    with pytest.raises(ValueError, match="SamplingConfig"):
      SamplingConfig(**bad)


def test_sharded_sampling_prefills_each_prompt_once(params, monkeypatch):
  """On a mesh whose batch shards each hold whole groups, a prompt is prefilled once for its n
  samples, and the samples are the single device's (same uniforms, same rows)."""
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  prefilled = []
  real = sampling.prefill_jit
  monkeypatch.setattr(sampling, "prefill_jit",
                      lambda p, t, m, **kw: prefilled.append(t.shape[0]) or real(p, t, m, **kw))
  cfg = SamplingConfig(max_new_tokens=NEW, temperature=1.0, n=3)
  single = sample(params, CFG, PROMPTS, jax.random.key(6), cfg)
  sharded = sample(params, CFG, PROMPTS, jax.random.key(6), cfg, mesh=mesh)
  assert prefilled == [len(PROMPTS), len(PROMPTS)]  # 4 prompts over 4 batch shards
  np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(single.tokens))
  np.testing.assert_allclose(np.asarray(sharded.logprobs), np.asarray(single.logprobs),
                             atol=1e-5)


def test_sharded_sampling_equals_single_device(params, greedy):
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = jax.device_put(params, sharding.param_shardings(CFG, mesh))
  # 4 prompts x n=2 = 8 rows over 4 batch shards; a 6-row call checks the row padding too.
  cfg = GREEDY.replace(n=2)
  out = sample(sharded, CFG, PROMPTS, jax.random.key(0), cfg, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens)[::2], np.asarray(greedy.tokens))
  np.testing.assert_array_equal(np.asarray(out.tokens)[1::2], np.asarray(greedy.tokens))
  out = sample(params, CFG, PROMPTS[:3], jax.random.key(0), cfg, mesh=mesh)  # placed by sample
  np.testing.assert_array_equal(np.asarray(out.tokens)[::2], np.asarray(greedy.tokens)[:3])
