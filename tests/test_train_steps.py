"""Row chunking of the update and log-prob passes: exact results, and no cross-device gathers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax import sharding
from prl_jax.models.config import preset
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import init_params
from prl_jax.run import updates as steps


def test_split_rows_is_strided_and_merge_rows_inverts_it():
  x = np.arange(24).reshape(12, 2)
  chunks = np.asarray(steps.split_rows(x, 3))
  assert chunks.shape == (3, 4, 2)
  for j in range(3):  # chunk j holds rows j, j+3, j+6, j+9
    np.testing.assert_array_equal(chunks[j], x[j::3])
  np.testing.assert_array_equal(np.asarray(steps.merge_rows(chunks)), x)
  with pytest.raises(ValueError, match="does not split into 5"):
    steps.split_rows(x, 5)


def test_chunked_log_probs_equal_one_pass():
  cfg = preset("tiny", vocab_size=40)
  params = init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, 40)
  mask = jnp.ones((8, 12), bool).at[::3, :2].set(False)
  fn = lambda b: response_logprobs(cfg, params, b[0], b[1], 5)
  whole = fn((tokens, mask))
  for chunks in (2, 4, 8):
    # Jitted as in training: op by op, the scan over chunks is ten times slower.
    chunked = jax.jit(lambda b, c=chunks: steps.chunked_rows(fn, b, c))
    np.testing.assert_allclose(chunked((tokens, mask)), whole, atol=1e-6)


def test_micro_batches_stay_on_their_devices():
  """A scan over micro-batches of a row-sharded batch compiles without gathering rows: each
  device works on its own rows of every micro-batch (a contiguous split would all-gather)."""
  mesh = sharding.make_mesh(data=8, fsdp=1, tensor=1)
  # Inputs of order 1 keep tanh off its saturation, so the gradient compared below is not ~0.
  x_key, w_key = jax.random.split(jax.random.PRNGKey(0))
  rows = jax.device_put(jax.random.normal(x_key, (64, 16)), sharding.batch_sharding(mesh))
  weights = jax.device_put(0.25 * jax.random.normal(w_key, (16, 16)), jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  loss = lambda w, x: (jnp.sum(jnp.tanh(x @ w)), (jnp.float32(x.shape[0]), {}))
  grads = jax.jit(lambda w, x: steps.accumulate_gradients(loss, w, x, 4)[0])
  hlo = grads.lower(weights, rows).compile().as_text()
  assert "all-gather" not in hlo and "all-to-all" not in hlo
  # Each device multiplies its 2 rows of each 16-row micro-batch.
  assert "f32[2,16]" in hlo
  np.testing.assert_allclose(grads(weights, rows), jax.grad(lambda w: loss(w, rows)[0])(weights),
                             rtol=1e-5, atol=1e-5)


def test_update_norm_is_the_parameters_displacement_and_ignores_the_gradients_scale():
  """`update_norm` is ||theta_after - theta_before|| of each optimizer step. Under Adam it stays
  the same size when every gradient is 1000x smaller: the reason it is logged beside
  `grad_norm`, which cannot show how far a step on a vanishing signal moves the policy."""
  import optax
  from prl_jax.run.state import ModelState
  w = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  tx = optax.adam(1e-2)

  def step(scale):
    loss = lambda p, b: (scale * jnp.sum(jnp.tanh(b @ p["w"])), (jnp.float32(b.shape[0]), {}))
    state = ModelState(params=w, opt_state=tx.init(w))
    new, metrics = steps.minibatch_updates(state, tx, loss, x, 1, 1)
    moved = optax.global_norm(jax.tree_util.tree_map(jnp.subtract, new.params, w))
    return metrics, moved

  metrics, moved = step(1.0)
  np.testing.assert_allclose(metrics["update_norm"], moved, rtol=1e-5)
  small, _ = step(1e-3)
  np.testing.assert_allclose(small["grad_norm"], 1e-3 * metrics["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(small["update_norm"], metrics["update_norm"], rtol=1e-3)
