"""Hugging Face config.json <-> ModelConfig: model types, RoPE scaling, what is refused and why."""

from __future__ import annotations

from typing import Any

from prl_jax.models.config import ModelConfig

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}
# Qwen2 and Qwen3 window only layers >= max_window_layers, and only with use_sliding_window.
_QWEN_TYPES = ("qwen2", "qwen3")
_SUPPORTED_ROPE_TYPES = ("default", "llama3")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")




def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
  """(rope_theta, rope_scaling) from either the transformers>=5 `rope_parameters` dict or the
  older top-level `rope_theta` + `rope_scaling` keys (both appear in published checkpoints)."""
  params = dict(hf.get("rope_parameters") or {})
  legacy = dict(hf.get("rope_scaling") or {})
  if params and legacy:
    # transformers gives `rope_scaling` precedence when both are present; so do we.
    params = {**params, **legacy}
  elif legacy:
    params = legacy
  if any(isinstance(v, dict) for v in params.values()):
    raise ValueError("config.json: per-layer-type rope_parameters are not supported "
                     f"(got keys {sorted(params)}).")
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in _SUPPORTED_ROPE_TYPES:
    raise ValueError(f"config.json: rope type {kind!r} is not supported "
                     f"(supported: {_SUPPORTED_ROPE_TYPES}).")
  partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if partial not in (None, 1.0):
    raise ValueError(f"config.json: partial_rotary_factor={partial} is not supported (only 1.0).")
  if kind == "default":
    return theta, None
  missing = [k for k in _LLAMA3_KEYS if k not in params and k != "original_max_position_embeddings"]
  if missing:
    raise ValueError(f"config.json: llama3 rope scaling lacks {missing}.")
  scaling = {"rope_type": "llama3", **{k: params[k] for k in _LLAMA3_KEYS if k in params}}
  # HF falls back to max_position_embeddings when the original length is not given.
  scaling.setdefault("original_max_position_embeddings", hf["max_position_embeddings"])
  return theta, scaling


def _check_no_sliding_window(hf: dict[str, Any], num_layers: int, max_positions: int) -> None:
  """Sliding-window attention is not implemented: refuse checkpoints that actually use it."""
  layer_types = hf.get("layer_types") or []
  if any(t != "full_attention" for t in layer_types):
    raise ValueError(f"config.json: layer_types {sorted(set(layer_types))} include non-full "
                     "attention; sliding-window attention is not supported.")
  window = hf.get("sliding_window")
  if hf["model_type"] in _QWEN_TYPES:
    # Qwen applies the window only when use_sliding_window is set, to layers >= max_window_layers.
    if hf.get("use_sliding_window") and window is not None and \
        hf.get("max_window_layers", num_layers) < num_layers:
      raise ValueError(
          f"config.json: use_sliding_window=true with sliding_window={window} on layers >= "
          f"max_window_layers={hf.get('max_window_layers')}; sliding-window attention is not "
          "supported.")
  elif window is not None and window < max_positions:
    # A window at least as long as the context never masks anything, so it is harmless.
    raise ValueError(f"config.json: sliding_window={window} < max_position_embeddings="
                     f"{max_positions}; sliding-window attention is not supported.")


def config_from_hf(hf_config: dict[str, Any], **overrides) -> ModelConfig:
  """ModelConfig from a HF config.json dict of a Llama, Qwen2, Qwen3 or Mistral causal LM.

  Qwen2 always has q/k/v biases (there is no flag in its config); Qwen3 always has q/k norms.
  Llama's and Qwen3's `attention_bias` would also bias o_proj, which this model does not have,
  so it is refused. `overrides` set ModelConfig
  fields that config.json does not describe (dtype, remat) or replace ones it does.
  """
  hf = dict(hf_config)
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"config.json: model_type {model_type!r} is not supported "
                     f"(supported: {SUPPORTED_MODEL_TYPES}).")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise ValueError(f"config.json: hidden_act={act!r} is not supported (only 'silu' / SwiGLU).")
  if hf.get("mlp_bias"):
    raise ValueError("config.json: mlp_bias=true is not supported.")
  if model_type == "qwen2":
    qkv_bias = True
  else:
    if hf.get("attention_bias"):
      raise ValueError("config.json: attention_bias=true (which also biases o_proj) is not "
                       f"supported for model_type {model_type!r}.")
    qkv_bias = False
  qk_norm = model_type == "qwen3"
  num_layers = int(hf["num_hidden_layers"])
  max_positions = int(hf.get("max_position_embeddings", 4096))
  hf.setdefault("max_position_embeddings", max_positions)
  _check_no_sliding_window(hf, num_layers, max_positions)
  theta, scaling = _rope_from_hf(hf)

  hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim")
  # Keep head_dim implicit when it is the default, so configs compare equal after a round trip.
  if head_dim is not None and heads and hidden % heads == 0 and int(head_dim) == hidden // heads:
    head_dim = None
  fields = dict(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=hidden,
      num_layers=num_layers,
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      intermediate_size=int(hf["intermediate_size"]),
      head_dim=None if head_dim is None else int(head_dim),
      rope_theta=theta,
      rope_scaling=scaling,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=qkv_bias,
      qk_norm=qk_norm,
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=max_positions,
  )
  fields.update(overrides)
  return ModelConfig(**fields)


def default_model_type(config: ModelConfig) -> str:
  """qwen3 with q/k norms, qwen2 with q/k/v biases (Qwen2 always has them, Llama never), else
  llama."""
  return "qwen3" if config.qk_norm else "qwen2" if config.qkv_bias else "llama"


def config_to_hf(config: ModelConfig, model_type: str | None = None,
                 dtype: str = "float32") -> dict[str, Any]:
  """A config.json dict that transformers' AutoConfig / AutoModelForCausalLM load as this model.

  Rotary settings are written both as transformers>=5 `rope_parameters` and as the older top-level
  `rope_theta` / `rope_scaling`, so either generation of transformers reads them.
  """
  model_type = model_type or default_model_type(config)
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"model_type {model_type!r} is not supported "
                     f"(supported: {SUPPORTED_MODEL_TYPES}).")
  if model_type == "qwen2" and not config.qkv_bias:
    raise ValueError("A qwen2 checkpoint always has q/k/v biases; this config has qkv_bias=False "
                     "(save it as model_type='llama').")
  if (model_type == "qwen3") != config.qk_norm:
    raise ValueError(f"q/k norms are Qwen3's: qk_norm={config.qk_norm} cannot be saved as "
                     f"model_type {model_type!r}" + ("." if config.qk_norm else
                                                     " (save it as 'qwen2' or 'llama')."))
  if model_type != "qwen2" and config.qkv_bias:
    raise ValueError(f"model_type {model_type!r} cannot express q/k/v biases without an o_proj "
                     "bias; save this config as model_type='qwen2'.")
  scaling = dict(config.rope_scaling) if config.rope_scaling is not None else None
  rope_parameters = {"rope_type": "default", **(scaling or {}), "rope_theta": config.rope_theta}
  hf = {
      "architectures": [_ARCHITECTURES[model_type]],
      "model_type": model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.resolved_head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_scaling": scaling,
      "rope_parameters": rope_parameters,
      "tie_word_embeddings": config.tie_embeddings,
      "attention_dropout": 0.0,
      "use_cache": True,
      "dtype": dtype,
      "torch_dtype": dtype,
  }
  if model_type in _QWEN_TYPES:
    hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.num_layers)
  if model_type == "qwen3":
    hf.update(attention_bias=False)
  elif model_type != "qwen2":
    hf.update(attention_bias=False, mlp_bias=False)
    if model_type == "mistral":
      hf["sliding_window"] = None
  return hf


