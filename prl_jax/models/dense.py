"""A dense projection whose weight gradient is one 2-D matmul written by hand.

    y = x W + b,   dL/dx = dy W^T,   dL/dW = X^T dY   (X, dY: every leading position as a row)

Same parameters (names, shapes, logical axes) and the same arithmetic as `flax.linen.DenseGeneral`.
Why it exists: with autodiff's transpose of a [B, T, k] x [k, m] `dot_general`, XLA's CPU pipeline
fuses the elementwise backward of whatever produced dy (SwiGLU's silu' for the MLP) into the
layout copy that feeds the weight-gradient dot, and runs that fusion in the transposed order:
each of its inputs is read at a stride of a whole row. In the mini train step those four fusions
took a fifth of the step. Written as a custom VJP, the weight gradient reads X and dY row-major
and the elementwise backward stays a plain row-major loop (benchmarks/profile_step.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x, w):
  """x [..., k] @ w [k, m] -> [..., m]."""
  return jnp.matmul(x, w)


def _matmul_fwd(x, w):
  return jnp.matmul(x, w), (x, w)


def _matmul_bwd(residuals, dy):
  x, w = residuals
  rows_x = x.reshape(-1, x.shape[-1])
  rows_dy = dy.reshape(-1, dy.shape[-1])
  # X^T dY as one contraction over all leading positions; no [m, rows] copy of dY is made.
  dw = jax.lax.dot_general(rows_x, rows_dy, (((0,), (0,)), ((), ())))
  dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
  return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
  """`nn.DenseGeneral` over the trailing input axes `axis` (-1 or (-2, -1)) to `features`.

  kernel: [*x.shape[axis], *features] float32 (`param_dtype`), cast to `dtype` for the product.
  """

  features: int | Sequence[int]
  axis: int | Sequence[int]
  use_bias: bool
  dtype: Any
  kernel_init: Any
  bias_init: Any
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    n_in = len(axis)
    if sorted(a % x.ndim for a in axis) != list(range(x.ndim - n_in, x.ndim)):
      raise ValueError(f"Dense contracts trailing axes only, got axis={self.axis}.")
    in_shape = x.shape[x.ndim - n_in:]
    kernel = self.param("kernel", self.kernel_init, in_shape + features, self.param_dtype)
    k, m = kernel.size // _prod(features), _prod(features)
    lead = x.shape[:x.ndim - n_in]
    y = matmul(x.astype(self.dtype).reshape(*lead, k), kernel.astype(self.dtype).reshape(k, m))
    y = y.reshape(*lead, *features)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _prod(shape) -> int:
  out = 1
  for s in shape:
    out *= s
  return out
