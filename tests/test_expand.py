"""Depth expansion: the deeper model computes the original's logits, and its new layers train."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.models.config import preset
from prl_jax.models.expand import expand_depth, first_layers
from prl_jax.models.transformer import Transformer, init_params

CONFIG = preset("tiny", qkv_bias=True)
_init = jax.jit(init_params, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg, params, tokens):
  return Transformer(cfg).apply(params, tokens, token_mask=jnp.ones(tokens.shape, bool))[0]


def test_expanded_model_computes_the_original_logits_and_keeps_its_layers():
  params = _init(CONFIG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, 11), 0, CONFIG.vocab_size)
  cfg, deeper = expand_depth(CONFIG, params, 3, jax.random.key(2))
  assert cfg.num_layers == CONFIG.num_layers + 3
  np.testing.assert_allclose(_logits(cfg, deeper, tokens), _logits(CONFIG, params, tokens),
                             atol=1e-6)
  # The first layers are the original's, untouched; the new q kernels are not zero.
  old_q = params["params"]["layers"]["attn"]["q"]["kernel"]
  new_q = deeper["params"]["layers"]["attn"]["q"]["kernel"]
  np.testing.assert_array_equal(new_q[:CONFIG.num_layers], old_q)
  assert float(jnp.abs(new_q[CONFIG.num_layers:]).mean()) > 1e-3
  with pytest.raises(ValueError, match="extra=0"):
    expand_depth(CONFIG, params, 0, jax.random.key(2))


def test_new_layers_get_a_gradient_and_then_change_the_logits():
  """Zero output projections get a gradient at once; after one SGD step the new layers are no
  longer the identity (a block that could never leave it would be dead weight)."""
  params = _init(CONFIG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 9), 0, CONFIG.vocab_size)
  cfg, deeper = expand_depth(CONFIG, params, 2, jax.random.key(3))

  def loss(p):
    logp = jax.nn.log_softmax(_logits(cfg, p, tokens[:, :-1]))
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

  grads = jax.jit(jax.grad(loss))(deeper)
  for block, proj in (("attn", "o"), ("mlp", "down")):
    new = grads["params"]["layers"][block][proj]["kernel"][CONFIG.num_layers:]
    assert float(jnp.abs(new).max()) > 0, f"{block}/{proj} of the new layers gets no gradient"
  stepped = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, deeper, grads)
  before = _logits(*first_layers(cfg, stepped, CONFIG.num_layers), tokens)
  after = _logits(cfg, stepped, tokens)
  assert float(jnp.abs(after - before).max()) > 1e-4

