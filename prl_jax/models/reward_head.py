"""A token reward model: a scalar tanh-MLP head on the final hidden states of a causal LM.

rePIRL's reward model (arXiv 2602.07832; the official code's `RewardModule`,
github.com/ucsb-mlsec/irl, recipe/irl/rm.py, commit 0159023):

    r_phi[b, t] = tanh(W3 relu(W2 relu(W1 h[b, t] + b1) + b2) + b3)  in [-1, 1]

with h[b, t] the backbone's final (normed) hidden state at response token t, W1: H x width,
W2: width x width, W3: width x 1 (width 1024 in the official code). The reward of token y_t
reads the hidden state *at* y_t, so it depends on the token itself, r(s_t, a_t): the shipped run
script scores without padding removal, which takes the last response_length positions of the
sequence. The backbone is a full copy of the policy LM and is trained with the head; there is no
reference model. Parameters are {"backbone": LM params, "head": {"w1", "b1", "w2", "b2", "w3",
"b3"}}.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import Transformer


def head_init(key: jax.Array, hidden_size: int, width: int) -> dict:
  """PyTorch's `nn.Linear` default initialisation, as the official head gets: every weight and
  bias of a layer with fan-in f drawn from U(-1/sqrt(f), 1/sqrt(f)). Float32."""
  if width < 1:
    raise ValueError(f"reward head width must be >= 1, got {width} (algo.repirl.head_width)")
  shapes = {"1": (hidden_size, width), "2": (width, width), "3": (width, 1)}
  params = {}
  for (name, (fan_in, fan_out)), k in zip(shapes.items(), jax.random.split(key, 3)):
    kw, kb = jax.random.split(k)
    bound = 1.0 / jnp.sqrt(float(fan_in))
    params["w" + name] = jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound)
    params["b" + name] = jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound)
  return params


def head_apply(head: dict, hidden: jax.Array) -> jax.Array:
  """tanh(W3 relu(W2 relu(W1 h + b1) + b2) + b3): [..., H] -> [...] in [-1, 1], float32."""
  x = jnp.asarray(hidden, jnp.float32)
  x = jax.nn.relu(x @ head["w1"] + head["b1"])
  x = jax.nn.relu(x @ head["w2"] + head["b2"])
  return jnp.tanh(x @ head["w3"] + head["b3"])[..., 0]


def init_reward_model(model_cfg: ModelConfig, backbone, key: jax.Array, width: int) -> dict:
  """{"backbone": the given LM parameters (a copy of the policy's), "head": `head_init`}."""
  return {"backbone": backbone, "head": head_init(key, model_cfg.hidden_size, width)}


def token_rewards(model_cfg: ModelConfig, params: dict, tokens: jax.Array, token_mask: jax.Array,
                  response_mask: jax.Array, prompt_len: int) -> jax.Array:
  """r_phi [B, N] at the response tokens tokens[:, prompt_len:], zero where response_mask is 0.

  Args:
    params: {"backbone", "head"} (`init_reward_model`).
    tokens: [B, P+N] int32, prompt left-padded to `prompt_len`, response right-padded.
    token_mask: [B, P+N] bool, False on padding.
    response_mask: [B, N] 1 on the response tokens.
    prompt_len: P (static).
  """
  chex.assert_rank([tokens, token_mask, response_mask], 2)
  hidden, _ = Transformer(model_cfg).apply(params["backbone"], tokens, token_mask=token_mask,
                                           return_hidden=True)
  rewards = head_apply(params["head"], hidden[:, prompt_len:])
  return jnp.where(response_mask != 0, rewards, 0.0)
