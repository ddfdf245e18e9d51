"""Depth expansion: a deeper model that computes exactly what the given one computes.

`expand_depth` appends `extra` decoder layers whose output projections (attention's o and the
MLP's down) are zero. Each sub-block of a new layer then adds nothing to the residual stream,

    h' = h + W_o attn(norm(h)) = h,    h'' = h' + W_down mlp(norm(h')) = h',   (W_o = W_down = 0)

so the expanded model's logits equal the original's. The zeroed projections get a gradient at
once and the new layers' other weights are freshly initialised, so the layers train from there
(block expansion, LLaMA Pro, arXiv 2401.02415, which interleaves the blocks; here they go on
top). Use: a reward model that starts from a policy and has room above the layers where the
policy computes its answer (benchmarks/prm_capacity.py `--expand-layers`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import init_params

# The projections whose output is added to the residual stream.
ZEROED = (("attn", "o"), ("mlp", "down"))


def expand_depth(cfg: ModelConfig, params: Any, extra: int,
                 key: jax.Array) -> tuple[ModelConfig, Any]:
  """(config with num_layers + extra, params with `extra` identity layers on top).

  `params` is the model's tree ({"params": ...} or its inside); it is not modified.
  """
  if extra < 1:
    raise ValueError(f"expand_depth: extra={extra} must be >= 1")
  wrapped = "params" in params
  tree = params["params"] if wrapped else params
  # Jitted: flax's init run op by op takes seconds even for a small model.
  fresh = jax.jit(init_params, static_argnums=0)(dataclasses.replace(cfg, num_layers=extra), key)
  new_layers = dict(fresh["params"]["layers"])
  for block, proj in ZEROED:
    new_layers[block] = {**new_layers[block],
                         proj: jax.tree_util.tree_map(jnp.zeros_like, new_layers[block][proj])}
  layers = jax.tree_util.tree_map(lambda old, new: jnp.concatenate([old, new.astype(old.dtype)]),
                                  tree["layers"], new_layers)
  out = {**tree, "layers": layers}
  return (dataclasses.replace(cfg, num_layers=cfg.num_layers + extra),
          {"params": out} if wrapped else out)


def first_layers(cfg: ModelConfig, params: Any, depth: int) -> tuple[ModelConfig, Any]:
  """(config with num_layers = depth, params {"params": ...} with only the first `depth`
  layers): the model cut after `depth` layers, final norm and output layer kept (a logit lens
  at that depth; the inverse of `expand_depth`)."""
  if not 1 <= depth <= cfg.num_layers:
    raise ValueError(f"first_layers: depth={depth} must be in 1..{cfg.num_layers}")
  tree = params["params"] if "params" in params else params
  layers = jax.tree_util.tree_map(lambda x: x[:depth], tree["layers"])
  return dataclasses.replace(cfg, num_layers=depth), {"params": {**tree, "layers": layers}}
