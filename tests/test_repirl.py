"""rePIRL's recipe in code mode (the official code): the reward head, the RM batch layout, the RM
loss wired to the model against `irl.rm_loss`, the advantages, the PRM's initial state."""

import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from prl_jax.algorithms import repirl
from prl_jax.algorithms.recipes import RLInputs
from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import load_config_file
from prl_jax.models import reward_head
from prl_jax.models.config import preset
from prl_jax.models.transformer import Transformer, init_params
from prl_jax.rewards import irl
from prl_jax.run import updates
from prl_jax.run.batch import SequenceBatch, make_sequences
from prl_jax.run.state import init_state

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
CFG = preset("tiny", vocab_size=128)
PROMPT, RESPONSE = 4, 6


def _options(**repirl_overrides):
  config = load_config_file(os.path.join(CONFIGS, "mini", "repirl.py"))
  for k, v in repirl_overrides.items():
    config.algo.repirl[k] = v
  return ml_collections.FrozenConfigDict(config.algo)


def _sequences(seed, rows, empty=()):
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(1, 128, size=rng.integers(1, PROMPT + 1))) for _ in range(rows)]
  responses = [[] if i in empty else list(rng.integers(1, 128, size=rng.integers(1, RESPONSE + 1)))
               for i in range(rows)]
  return make_sequences(prompts, responses, PROMPT, RESPONSE)


@pytest.fixture(scope="module")
def params():
  backbone = init_params(CFG, jax.random.key(0))
  return reward_head.init_reward_model(CFG, backbone, jax.random.key(1), 16)


def test_head_init_is_torch_linear_default_and_apply_matches_numpy():
  head = reward_head.head_init(jax.random.key(3), 8, 5)
  for name, fan_in in (("1", 8), ("2", 5), ("3", 5)):
    for p in (head["w" + name], head["b" + name]):
      assert float(jnp.max(jnp.abs(p))) <= 1.0 / np.sqrt(fan_in)
  h = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  np_head = {k: np.asarray(v) for k, v in head.items()}
  x = np.maximum(h @ np_head["w1"] + np_head["b1"], 0.0)
  x = np.maximum(x @ np_head["w2"] + np_head["b2"], 0.0)
  np.testing.assert_allclose(reward_head.head_apply(head, h),
                             np.tanh(x @ np_head["w3"] + np_head["b3"])[..., 0], rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="head_width"):
    reward_head.head_init(jax.random.key(0), 8, 0)


def test_token_rewards_read_the_hidden_state_at_each_response_token(params):
  seq = _sequences(0, 3)
  r = np.asarray(reward_head.token_rewards(CFG, params, seq.tokens, seq.token_mask,
                                           seq.response_mask, PROMPT))
  hidden, _ = Transformer(CFG).apply(params["backbone"], seq.tokens, token_mask=seq.token_mask,
                                     return_hidden=True)
  want = np.asarray(reward_head.head_apply(params["head"], hidden[:, PROMPT:]))
  np.testing.assert_allclose(r, want * seq.response_mask, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(r) <= 1.0) and np.all(r[seq.response_mask == 0] == 0.0)
  # r_t depends on y_t itself and on nothing after it.
  tokens = np.array(seq.tokens)
  tokens[0, PROMPT + 1] = (tokens[0, PROMPT + 1] + 7) % 128
  r2 = np.asarray(reward_head.token_rewards(CFG, params, tokens, seq.token_mask,
                                            seq.response_mask, PROMPT))
  np.testing.assert_array_equal(r2[0, :1], r[0, :1])
  assert r2[0, 1] != r[0, 1]


def _rollouts(seed, groups=2, n=4):
  seq, demos = _sequences(seed, groups * n), _sequences(seed + 1, groups * n)
  rng = np.random.default_rng(seed)
  old_logp = (-rng.uniform(0.1, 2.0, size=(groups * n, RESPONSE)) * seq.response_mask)
  outcome = np.resize(np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 1.0], np.float32), groups * n)
  return seq, demos, old_logp.astype(np.float32), outcome


@pytest.mark.parametrize("pool", [1, 2, 3])
def test_rm_batch_interleaves_rollouts_and_demonstrations(pool):
  seq, demos, old_logp, outcome = _rollouts(0, groups=3)
  unit = repirl.unit_rows(pool)
  (rows, logp, expert), metrics = repirl.code_batch(seq, demos, old_logp, outcome, unit=unit,
                                                    pseudo_experts=True)
  assert expert.shape == (24 // unit, unit)
  flat = lambda a: np.asarray(a).reshape((-1,) + a.shape[2:])
  np.testing.assert_array_equal(flat(rows.tokens)[0::2], seq.tokens)
  np.testing.assert_array_equal(flat(rows.tokens)[1::2], demos.tokens)
  np.testing.assert_array_equal(flat(expert)[0::2], outcome > 0.99)
  assert flat(expert)[1::2].all() and not flat(logp)[1::2].any()
  np.testing.assert_array_equal(flat(logp)[0::2], old_logp)
  assert float(metrics["pseudo_experts"]) == pytest.approx(np.mean(outcome > 0.99))
  # Every split the loop can make over units holds rollouts and demonstrations 1:1.
  is_demo = np.tile(np.arange(unit) % 2 == 1, (24 // unit, 1))
  for chunks in (1, 2, 4):
    for block in (1, 2):
      if (24 // unit) % (chunks * block) == 0:
        for part in np.asarray(updates.split_rows(is_demo, chunks, block)):
          assert part.sum() * 2 == part.size


def _rm_batch_of(seq, demos, old_logp, outcome, pool):
  return repirl.code_batch(seq, demos, old_logp, outcome, unit=repirl.unit_rows(pool),
                           pseudo_experts=True)[0]


@pytest.mark.parametrize("pool,micro", [(1, 2), pytest.param(2, 4, marks=pytest.mark.slow),
                                        pytest.param(3, 1, marks=pytest.mark.slow)])
def test_rm_loss_fn_is_rm_loss_of_the_head_rewards(params, pool, micro):
  """Loop-style accumulation over micro-batches of units equals irl.rm_loss on the flat rows."""
  seq, demos, old_logp, outcome = _rollouts(1, groups=3)
  batch = _rm_batch_of(seq, demos, old_logp, outcome, pool)
  loss_fn = repirl.rm_loss_fn(CFG, _options(pool_size=pool))
  grads, num, den, _ = jax.jit(lambda p, b: updates.accumulate_gradients(loss_fn, p, b, micro))(
      params, batch)
  rows, logp, expert = jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), batch)

  def direct(p):
    r = reward_head.token_rewards(CFG, p, rows.tokens, rows.token_mask, rows.response_mask,
                                  PROMPT)
    return irl.rm_loss(r, rows.response_mask, logp, expert, pool)

  value, want = jax.jit(jax.value_and_grad(direct))(params)
  np.testing.assert_allclose(num / den, value, rtol=1e-5, atol=1e-6)
  assert int(den) == 24 // pool
  for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(g) / float(den), w, rtol=2e-3, atol=1e-6)


def test_code_advantages_are_token_advantages_of_the_masked_rewards():
  rng = np.random.default_rng(2)
  mask = (np.arange(5)[None, :] < rng.integers(1, 6, size=8)[:, None]).astype(np.float32)
  r = np.tanh(rng.normal(size=(8, 5))).astype(np.float32)
  outcome = jnp.asarray([1.0, 0, 0, 1, 0, 0, 1, 1])
  zeros = jnp.zeros_like(mask)
  x = RLInputs(outcome=outcome, mask=mask, old_logp=zeros, ref_logp=zeros, prm_token=r,
               values=zeros, step_end=zeros.astype(bool), group_size=4)
  out = get_recipe("repirl").advantages(_options(lam=0.05), x)
  np.testing.assert_allclose(out.token, irl.token_advantages(r * mask, mask, outcome, 4, 0.05),
                             atol=1e-6)
  mean = (r * mask).sum(1) / mask.sum(1)
  np.testing.assert_allclose(out.metrics["repirl/reward_correct"], mean[outcome > 0.99].mean(),
                             rtol=1e-5)


def _state(mode):
  config = load_config_file(os.path.join(CONFIGS, "mini", "repirl.py"))
  config.algo.repirl.mode = mode
  config.model.preset = "tiny"
  ctx = types.SimpleNamespace(config=config, model_cfg=CFG, hf_dir="")
  return init_state(ctx, get_recipe("repirl"))


def test_initial_prm_is_a_head_on_a_copy_of_the_policy_without_a_reference():
  state = _state("code")
  assert state.ref_params is None
  assert set(state.prm.params) == {"backbone", "head"}
  assert state.prm.params["head"]["w1"].shape == (CFG.hidden_size, 64)
  for a, b in zip(jax.tree_util.tree_leaves(state.prm.params["backbone"]),
                  jax.tree_util.tree_leaves(state.policy.params)):
    np.testing.assert_array_equal(a, b)
  implicit = _state("implicit")
  assert implicit.ref_params is not None
  assert jax.tree_util.tree_structure(implicit.prm.params) == \
      jax.tree_util.tree_structure(implicit.policy.params)


def test_rm_steps_per_rl_step_and_config_errors():
  """The official setting: 256 rollouts + 256 demonstrations in RM mini-batches of 32 rows."""
  options = _options(rm_mini_batch_size=32, pool_size=1)
  units = 512 // repirl.unit_rows(1)
  assert units // repirl.prm_mini_batch_rows(options, None) == 16
  assert repirl.prm_mini_batch_rows(_options(mode="implicit"), None) == 0
  recipe = get_recipe("repirl")
  assert recipe.check(_options()) is None
  assert "algo.repirl.mode" in recipe.check(_options(mode="paper"))
  assert "rm_mini_batch_size" in recipe.check(_options(rm_mini_batch_size=31))
  assert "pool_size" in recipe.check(_options(pool_size=0))


@pytest.mark.parametrize("mode", ["code", "implicit"])
def test_process_reward_is_the_per_token_reward_on_the_response_tokens(mode):
  """prm/step_auroc reads `Advantages.process_reward`: r_phi[b, t] (code) or beta log(pi_phi /
  pi_ref)(y_t) (implicit), on the same response tokens, zero on padding."""
  from prl_jax.data import register
  from prl_jax.models.tokenizer import CharTokenizer
  from prl_jax.train.step_diagnostics import step_auroc

  tok = CharTokenizer()
  ex = register.generate(1, seed=3)[0]
  lines = ex["solution"].splitlines()
  bad = (int(lines[4][-1]) + 2) % 10
  texts = [ex["solution"], "\n".join(lines[:4] + [lines[4][:3] + str(bad)] + lines[5:])]
  width = 48
  tokens = np.zeros((2, width), np.int32)
  mask = np.zeros((2, width), np.float32)
  for b, text in enumerate(texts):
    ids = tok.encode(text) + [tok.eos_id]
    tokens[b, :len(ids)], mask[b, :len(ids)] = ids, 1
  # A reward that blames exactly the characters of the wrong line (line 4: tokens 20..24) and
  # puts garbage on the padding, which the process reward must not carry.
  reward = np.where(mask > 0, 0.3, 7.0).astype(np.float32)
  reward[1, 20:25] = -0.4
  beta = 0.05
  prm_token = reward if mode == "code" else reward / beta
  zeros = jnp.zeros_like(mask)
  x = RLInputs(outcome=jnp.asarray([1.0, 0.0]), mask=jnp.asarray(mask), old_logp=zeros,
               ref_logp=zeros, prm_token=jnp.asarray(prm_token), values=zeros,
               step_end=zeros.astype(bool), group_size=2)
  out = get_recipe("repirl").advantages(_options(mode=mode, beta=beta), x)
  assert out.process_reward is not None, "rePIRL must return its per-token process reward"
  np.testing.assert_allclose(np.asarray(out.process_reward), reward * mask, rtol=1e-6)
  newline = tok.encode("\n")
  auroc = step_auroc(np.asarray(out.process_reward), tokens, mask, newline, texts, [ex, ex])
  assert auroc == 1.0  # the blamed line scores below every right line before it
