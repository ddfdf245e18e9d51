"""Sharding: resolved param shardings (snapshot), mesh validation, and sharded == single-device
forward and gradient on 8 simulated CPU devices (data=2, fsdp=2, tensor=2)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from prl_jax import sharding
from prl_jax.models.config import preset
from prl_jax.models.transformer import Transformer, init_params

CFG = preset("tiny")

# The tiny preset's params on a (data=2, fsdp=2, tensor=2) mesh under DEFAULT_RULES.
EXPECTED_TINY = {
    "params/embed/embedding": P("tensor", "fsdp"),
    "params/final_norm/scale": P("fsdp"),
    "params/layers/attn/k/kernel": P(None, "fsdp", "tensor", None),
    "params/layers/attn/o/kernel": P(None, "tensor", None, "fsdp"),
    "params/layers/attn/q/kernel": P(None, "fsdp", "tensor", None),
    "params/layers/attn/v/kernel": P(None, "fsdp", "tensor", None),
    "params/layers/attn_norm/scale": P(None, "fsdp"),
    "params/layers/mlp/down/kernel": P(None, "tensor", "fsdp"),
    "params/layers/mlp/gate/kernel": P(None, "fsdp", "tensor"),
    "params/layers/mlp/up/kernel": P(None, "fsdp", "tensor"),
    "params/layers/mlp_norm/scale": P(None, "fsdp"),
    "params/lm_head/kernel": P("fsdp", "tensor"),
}


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(data=2, fsdp=2, tensor=2)


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def batch():
  tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, CFG.vocab_size)
  lengths = jnp.array([16, 9, 12, 16, 3, 16, 7, 14])
  mask = jnp.arange(16)[None, :] >= (16 - lengths)[:, None]  # left-padded rows
  return tokens, mask


def test_resolved_param_shardings_snapshot(mesh):
  assert sharding.describe(sharding.param_shardings(CFG, mesh)) == EXPECTED_TINY


def test_indivisible_dimension_falls_back_to_replication():
  # tiny has 2 KV heads and 4 query heads: a tensor axis of 4 splits q but not k/v.
  mesh = sharding.make_mesh(data=2, fsdp=1, tensor=4)
  specs = sharding.describe(sharding.param_shardings(CFG, mesh))
  assert specs["params/layers/attn/q/kernel"] == P(None, "fsdp", "tensor", None)
  assert specs["params/layers/attn/k/kernel"] == P(None, "fsdp", None, None)


def test_mesh_fills_minus_one_and_rejects_bad_shapes():
  assert dict(sharding.make_mesh(data=-1, tensor=2).shape) == {"data": 4, "fsdp": 1, "tensor": 2}
  assert sharding.resolve_mesh_shape(2, -1, 2, 8) == (2, 2, 2)
  for bad in (dict(data=3), dict(data=-1, fsdp=3), dict(data=-1, fsdp=-1), dict(data=0),
              dict(data=2, fsdp=2, tensor=4)):
    with pytest.raises(ValueError, match="[Mm]esh"):
      sharding.make_mesh(**bad)


def test_rules_must_cover_every_logical_axis(mesh):
  rules = tuple(r for r in sharding.DEFAULT_RULES if r[0] != "mlp")
  with pytest.raises(ValueError, match="'mlp' has no sharding rule"):
    sharding.param_shardings(CFG, mesh, rules)
  with pytest.raises(ValueError, match="absent from the mesh"):
    sharding.param_shardings(CFG, mesh, (("embed", "model"),) + sharding.DEFAULT_RULES)


def test_init_sharded_params_are_placed_and_equal(mesh, params):
  sharded = sharding.init_sharded_params(CFG, jax.random.key(0), mesh)
  specs = sharding.describe(jax.tree.map(lambda x: x.sharding, sharded))
  assert specs == EXPECTED_TINY
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_optimizer_state_follows_params(mesh, params):
  shardings = sharding.param_shardings(CFG, mesh)
  state = jax.eval_shape(optax.adamw(1e-3).init, params)
  specs = sharding.describe(sharding.tree_shardings_like(state, shardings, sharding.replicated(mesh)))
  assert specs["0/count"] == P()
  for name, spec in EXPECTED_TINY.items():
    assert specs[f"0/mu/{name}"] == spec and specs[f"0/nu/{name}"] == spec
  # And the state can be created directly in those shardings.
  sharded_state = jax.jit(optax.adamw(1e-3).init,
                          out_shardings=sharding.tree_shardings_like(state, shardings, sharding.replicated(mesh)))(params)
  assert sharded_state[0].mu["params"]["lm_head"]["kernel"].sharding.spec == P("fsdp", "tensor")


def test_batch_sharding_splits_rows_over_data_and_fsdp(mesh):
  spec = sharding.batch_sharding(mesh)
  assert spec.spec == P(("data", "fsdp"))
  assert sharding.batch_shards(mesh) == 4
  x = jax.device_put(jnp.zeros((8, 5)), spec)
  assert x.addressable_shards[0].data.shape == (2, 5)


def _next_token_loss(params, tokens, mask):
  """Mean next-token cross-entropy over real (non-pad) target positions."""
  logits, _ = Transformer(CFG).apply(params, tokens, token_mask=mask)
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  weight = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
  return jnp.sum(nll * weight) / jnp.sum(weight)


def _sharded(mesh, params, batch):
  params = jax.device_put(params, sharding.param_shardings(CFG, mesh))
  batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  return params, batch


def test_sharded_forward_equals_single_device(mesh, params, batch):
  forward = lambda p, t, m: Transformer(CFG).apply(p, t, token_mask=m)[0]
  expected = jax.jit(forward)(params, *batch)
  sharded_params, sharded_batch = _sharded(mesh, params, batch)
  with jax.set_mesh(mesh):
    got = jax.jit(forward, out_shardings=sharding.batch_sharding(mesh))(sharded_params,
                                                                         *sharded_batch)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5, rtol=1e-5)


def test_sharded_gradient_equals_single_device(mesh, params, batch):
  grad_fn = jax.value_and_grad(_next_token_loss)
  loss, grads = jax.jit(grad_fn)(params, *batch)
  sharded_params, sharded_batch = _sharded(mesh, params, batch)
  shardings = sharding.param_shardings(CFG, mesh)
  with jax.set_mesh(mesh):
    s_loss, s_grads = jax.jit(grad_fn, out_shardings=(None, shardings))(sharded_params,
                                                                        *sharded_batch)
  np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-6)
  assert isinstance(s_grads["params"]["lm_head"]["kernel"].sharding, NamedSharding)
  for g, h in zip(jax.tree.leaves(s_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(h), atol=1e-5, rtol=1e-5)


def test_check_rules_names_the_bad_rule():
  assert sharding.check_rules(list(map(list, sharding.DEFAULT_RULES))) == sharding.DEFAULT_RULES
  with pytest.raises(ValueError, match="rule 0 .*'embed'.* names mesh axes \\['model'\\]"):
    sharding.check_rules((("embed", "model"),) + sharding.DEFAULT_RULES)
  with pytest.raises(ValueError, match="rule 0 is 'embed'"):
    sharding.check_rules(("embed",) + sharding.DEFAULT_RULES)
  with pytest.raises(ValueError, match="no rule for the logical axes \\['mlp'\\]"):
    sharding.check_rules(tuple(r for r in sharding.DEFAULT_RULES if r[0] != "mlp"))


def _rules_config(rules_override: str):
  import os

  from prl_jax.config import apply_overrides, load_config_file
  config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "mini",
                                         "rloo.py"))
  config.task.num_train, config.task.num_eval = 8, 2
  config.rollout.prompts_per_step, config.rollout.n, config.rollout.max_new_tokens = 4, 2, 4
  config.train.mini_batch_size = config.train.micro_batch_size = 0
  config.train.logprob_micro_batch_size = 0
  config.eval.n = 2
  config.log.progress = config.log.tensorboard = False
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  apply_overrides(config, [f"mesh.rules={rules_override}"])
  return config


def test_config_rules_reach_placement_and_every_sampler_call(tmp_path, monkeypatch):
  """mesh.rules (here: no FSDP split of "embed") decide the run's param placement and are what
  the training loop's and the periodic eval's sampler calls receive."""
  from prl_jax import sampling
  from prl_jax.algorithms.registry import get_recipe
  from prl_jax.run.context import build_context
  from prl_jax.run.state import init_state
  from prl_jax.train import loop, rollouts

  rules = (("embed", None),) + sharding.DEFAULT_RULES
  config = _rules_config(repr(rules))  # as typed on the command line
  ctx = build_context(config, str(tmp_path))
  assert ctx.rules == rules
  state = ctx.place_state(init_state(ctx, get_recipe(config.method)))
  specs = sharding.describe(jax.tree.map(lambda x: x.sharding, state.policy.params))
  assert specs["params/layers/mlp/up/kernel"] == P(None, None, "tensor")  # default: "fsdp" 2nd
  assert specs["params/final_norm/scale"] == P(None)

  seen = []

  class Stop(Exception):
    pass

  def fake_sample(*args, rules, **kwargs):
    seen.append(rules)
    raise Stop

  monkeypatch.setattr(sampling, "sample", fake_sample)
  with pytest.raises(Stop):
    rollouts.sample_rows(ctx, state.policy.params, [[1, 2]], jax.random.key(0))
  with pytest.raises(Stop):
    loop.periodic_eval(ctx, state.policy.params, 1)
  assert seen == [rules, rules]


def test_bad_config_rules_fail_before_anything_is_built(tmp_path):
  from prl_jax.config import ConfigError
  from prl_jax.run.context import build_context

  config = _rules_config(repr((("embed", "model"),) + sharding.DEFAULT_RULES))
  with pytest.raises(ConfigError, match="mesh.rules: rule 0"):
    build_context(config, str(tmp_path))
