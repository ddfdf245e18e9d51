"""models.dense.Dense: the same parameters, outputs and gradients as flax's DenseGeneral."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.models.dense import Dense


@pytest.mark.parametrize("features,axis,in_shape,use_bias,dtype", [
    (8, -1, (2, 5, 6), False, jnp.float32),
    ((3, 4), -1, (2, 5, 6), True, jnp.float32),
    (6, (-2, -1), (2, 5, 3, 4), False, jnp.float32),
    (8, -1, (2, 5, 6), True, jnp.bfloat16),
])
def test_dense_matches_dense_general(features, axis, in_shape, use_bias, dtype):
  init = dict(kernel_init=nn.initializers.normal(0.5), bias_init=nn.initializers.normal(0.5))
  ours = Dense(features=features, axis=axis, use_bias=use_bias, dtype=dtype, **init)
  ref = nn.DenseGeneral(features=features, axis=axis, use_bias=use_bias, dtype=dtype,
                        param_dtype=jnp.float32, **init)
  x = jax.random.normal(jax.random.key(0), in_shape)
  params = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape,
                                                                                   params)
  cot = jax.random.normal(jax.random.key(2), jax.eval_shape(ref.apply, params, x).shape)

  def loss(module, p, x):
    return jnp.sum(module.apply(p, x).astype(jnp.float32) * cot)

  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(ours.apply(params, x).astype(jnp.float32),
                             ref.apply(params, x).astype(jnp.float32), rtol=tol, atol=tol)
  ours_grads = jax.jit(jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1)))(params, x)
  ref_grads = jax.grad(lambda p, x: loss(ref, p, x), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(ref_grads)):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=tol * 10, atol=tol * 10)
