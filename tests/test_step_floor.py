"""benchmarks/step_floor.py counts the GRPO step's FLOPs by formula; XLA's own count of a forward
pass is the independent reference."""

import os
import sys

import jax
import jax.numpy as jnp

from prl_jax.models.config import preset
from prl_jax.models.transformer import Transformer, init_params

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.step_floor import (NEW_TOKENS, PROMPT_LEN, attention_flops,  # noqa: E402
                                   matmul_params)


def test_the_forward_flops_formula_matches_xla_cost_analysis():
  """2 N per position plus attention's two products (the module's own terms) equals XLA's count
  of the mini model's forward at the step's width to 1% (the rest is elementwise work)."""
  cfg = preset("mini")
  rows, width = 8, PROMPT_LEN + NEW_TOKENS
  model = Transformer(cfg)
  forward = jax.jit(lambda p, t: model.apply(p, t)[0])
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((rows, width), jnp.int32)
  cost = forward.lower(params, tokens).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  formula = 2 * matmul_params(cfg) * rows * width + attention_flops(cfg, rows, width)
  assert abs(cost["flops"] - formula) / formula < 0.01
