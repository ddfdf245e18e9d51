"""Hugging Face checkpoints in and out: safetensors <-> param pytree (config.json <-> ModelConfig is
`prl_jax.models.hf_config`; `config_from_hf` / `config_to_hf` are used through here too).

Layout conversion (HF `nn.Linear` stores weight as [out, in]; our kernels are [in, ...out]):

    embed_tokens.weight [V, d]             -> embed.embedding [V, d]
    q_proj.weight [H*hd, d]                -> layers.attn.q.kernel [L, d, H, hd]   (k, v: KVH heads)
    q_proj.bias [H*hd]                     -> layers.attn.q.bias [L, H, hd]
    q_norm.weight [hd] (Qwen3; k_norm too) -> layers.attn.q_norm.scale [L, hd]
    o_proj.weight [d, H*hd]                -> layers.attn.o.kernel [L, H, hd, d]
    gate_proj/up_proj.weight [F, d]        -> layers.mlp.gate/up.kernel [L, d, F]
    down_proj.weight [d, F]                -> layers.mlp.down.kernel [L, F, d]
    input_layernorm.weight [d]             -> layers.attn_norm.scale [L, d]
    post_attention_layernorm.weight [d]    -> layers.mlp_norm.scale [L, d]
    model.norm.weight [d]                  -> final_norm.scale [d]
    lm_head.weight [V, d]                  -> lm_head.kernel [d, V]   (absent when tied)

No head permutation is needed: our RoPE uses HF's rotate-half convention.

Loading streams one tensor at a time through `safetensors.safe_open(..., framework="numpy")`:
each stacked [L, ...] leaf is filled layer by layer in one preallocated host array and then placed
with `jax.device_put(leaf, sharding)`, so the host holds at most one leaf and no device ever holds
more than its shard. bfloat16 tensors read as `ml_dtypes.bfloat16` (importing ml_dtypes registers
the type name with numpy, which is all safetensors' numpy backend needs), so no PyTorch is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Iterator

import jax
import ml_dtypes  # also registers "bfloat16" with numpy so safetensors can read BF16
import numpy as np
import safetensors
import safetensors.numpy

from prl_jax.models.config import ModelConfig
from prl_jax.models.hf_config import (SUPPORTED_MODEL_TYPES, config_from_hf, config_to_hf,
                                      default_model_type)

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# ----------------------------------------------------------------------------------------------
# Tensor naming and layout
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TensorSpec:
  """One leaf of our param tree and the HF tensor(s) it comes from.

  path: keys under params["params"]. hf_names: one name, or one per layer for stacked leaves.
  hf_shape: shape of each HF tensor. shape: shape of our leaf (with the leading L when stacked).
  to_ours / to_hf: layout conversion of one (per-layer) tensor.
  """

  path: tuple[str, ...]
  hf_names: tuple[str, ...]
  hf_shape: tuple[int, ...]
  shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  stacked: bool


def _identity(x):
  return x


def _transpose(x):
  return x.T


def _tensor_specs(config: ModelConfig) -> list[_TensorSpec]:
  """Every parameter of `config`'s model, with its HF name(s), shapes and layout conversion."""
  d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
  h, kvh, hd, n = config.num_heads, config.num_kv_heads, config.resolved_head_dim, config.num_layers

  def heads_in(heads):  # [heads*hd, d] -> [d, heads, hd] and back
    return (lambda w: w.T.reshape(d, heads, hd)), (lambda k: k.reshape(d, heads * hd).T)

  def bias_in(heads):  # [heads*hd] -> [heads, hd] and back
    return (lambda b: b.reshape(heads, hd)), (lambda b: b.reshape(heads * hd))

  o_in = (lambda w: w.T.reshape(h, hd, d)), (lambda k: k.reshape(h * hd, d).T)

  def single(path, name, hf_shape, shape, conv=(_identity, _identity)):
    return _TensorSpec(path, (name,), hf_shape, shape, conv[0], conv[1], False)

  def layered(path, suffix, hf_shape, shape, conv=(_identity, _identity)):
    names = tuple(f"model.layers.{i}.{suffix}" for i in range(n))
    return _TensorSpec(("layers",) + path, names, hf_shape, (n,) + shape, conv[0], conv[1], True)

  specs = [single(("embed", "embedding"), "model.embed_tokens.weight", (v, d), (v, d))]
  for proj, heads in (("q", h), ("k", kvh), ("v", kvh)):
    specs.append(layered(("attn", proj, "kernel"), f"self_attn.{proj}_proj.weight",
                         (heads * hd, d), (d, heads, hd), heads_in(heads)))
    if config.qkv_bias:
      specs.append(layered(("attn", proj, "bias"), f"self_attn.{proj}_proj.bias",
                           (heads * hd,), (heads, hd), bias_in(heads)))
  if config.qk_norm:
    specs += [layered(("attn", f"{proj}_norm", "scale"), f"self_attn.{proj}_norm.weight", (hd,),
                      (hd,)) for proj in "qk"]
  specs += [
      layered(("attn", "o", "kernel"), "self_attn.o_proj.weight", (d, h * hd), (h, hd, d), o_in),
      layered(("attn_norm", "scale"), "input_layernorm.weight", (d,), (d,)),
      layered(("mlp", "gate", "kernel"), "mlp.gate_proj.weight", (f, d), (d, f),
              (_transpose, _transpose)),
      layered(("mlp", "up", "kernel"), "mlp.up_proj.weight", (f, d), (d, f),
              (_transpose, _transpose)),
      layered(("mlp", "down", "kernel"), "mlp.down_proj.weight", (d, f), (f, d),
              (_transpose, _transpose)),
      layered(("mlp_norm", "scale"), "post_attention_layernorm.weight", (d,), (d,)),
      single(("final_norm", "scale"), "model.norm.weight", (d,), (d,)),
  ]
  if not config.tie_embeddings:
    specs.append(single(("lm_head", "kernel"), "lm_head.weight", (v, d), (d, v),
                        (_transpose, _transpose)))
  return specs


def _is_ignored(name: str, config: ModelConfig) -> bool:
  """Tensors we accept and drop: rotary caches (derived from config), and a tied model's lm_head
  (some exporters write the shared matrix twice)."""
  return name.endswith("rotary_emb.inv_freq") or (config.tie_embeddings and
                                                 name == "lm_head.weight")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict[str, Any]:
  with open(path) as fh:
    return json.load(fh)


def _weight_files(model_dir: str) -> dict[str, str]:
  """Map tensor name -> safetensors file path, from the index when sharded."""
  index_path = os.path.join(model_dir, INDEX_FILE)
  if os.path.exists(index_path):
    weight_map = _read_json(index_path).get("weight_map")
    if not weight_map:
      raise ValueError(f"{index_path} has no weight_map.")
    return {name: os.path.join(model_dir, file) for name, file in weight_map.items()}
  single_path = os.path.join(model_dir, SINGLE_FILE)
  if os.path.exists(single_path):
    with safetensors.safe_open(single_path, framework="numpy") as fh:
      return {name: single_path for name in fh.keys()}
  present = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
  raise FileNotFoundError(
      f"No {SINGLE_FILE} or {INDEX_FILE} in {model_dir!r} (found: {present[:20]}); only "
      "safetensors checkpoints are supported.")


def _check_names(specs: list[_TensorSpec], available: set[str], config: ModelConfig,
                 model_dir: str) -> None:
  """Every expected tensor present, nothing unexplained left over."""
  expected = {name for spec in specs for name in spec.hf_names}
  missing = sorted(expected - available)
  unexpected = sorted(n for n in available - expected if not _is_ignored(n, config))
  problems = []
  if missing:
    problems.append(f"missing tensors {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
  if unexpected:
    problems.append(f"unexpected tensors {unexpected[:10]}"
                    + (" ..." if len(unexpected) > 10 else ""))
  if problems:
    raise ValueError(f"Checkpoint {model_dir!r} does not match the config: "
                     + "; ".join(problems) + ".")


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _sharding_for(shardings: Any, path: tuple[str, ...]) -> Any:
  """The sharding of one leaf: a single Sharding applies to all; a pytree is indexed by path
  (with or without the top-level "params" key)."""
  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    return shardings
  tree = shardings["params"] if "params" in shardings else shardings
  try:
    return _lookup(tree, path)
  except (KeyError, TypeError) as err:
    raise ValueError(f"shardings has no entry for params/{'/'.join(path)}.") from err


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def load_hf(model_dir: str, config: ModelConfig | None = None, shardings: Any = None,
            dtype: Any = None) -> tuple[ModelConfig, Any]:
  """(config, params) from a HF safetensors checkpoint directory.

  Args:
    model_dir: holds config.json and model.safetensors or model.safetensors.index.json + shards.
    config: use this config instead of the one derived from config.json (e.g. to set dtype or
      remat); tensor shapes are checked against it.
    shardings: None (default device), one `jax.sharding.Sharding` for every leaf, or a pytree of
      shardings matching the params.
    dtype: parameter dtype, float32 by default (the model keeps parameters in float32 and casts
      to its compute dtype).

  Returns:
    (config, {"params": ...}) with the tree of `init_params(config, key)`.
  """
  if config is None:
    config = config_from_hf(_read_json(os.path.join(model_dir, CONFIG_FILE)))
  dtype = np.dtype(dtype or np.float32)
  specs = _tensor_specs(config)
  files = _weight_files(model_dir)
  _check_names(specs, set(files), config, model_dir)

  params: dict[str, Any] = {}
  with contextlib.ExitStack() as stack:
    handles = {path: stack.enter_context(safetensors.safe_open(path, framework="numpy"))
               for path in sorted(set(files.values()))}
    # All shapes first (header reads only), so a wrong config fails before any heavy I/O.
    for spec in specs:
      for name in spec.hf_names:
        shape = tuple(handles[files[name]].get_slice(name).get_shape())
        if shape != spec.hf_shape:
          raise ValueError(f"Tensor {name!r} in {model_dir!r} has shape {shape}, expected "
                           f"{spec.hf_shape} from the config (params/{'/'.join(spec.path)} "
                           f"{spec.shape}).")
    for spec in specs:
      host = np.empty(spec.shape, dtype)
      for i, name in enumerate(spec.hf_names):
        tensor = spec.to_ours(handles[files[name]].get_tensor(name))
        if spec.stacked:
          host[i] = tensor
        else:
          host[...] = tensor
      _set(params, spec.path, jax.device_put(host, _sharding_for(shardings, spec.path)))
      del host
  return config, {"params": params}


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _to_host(x: Any) -> np.ndarray:
  """A full host copy of one leaf, gathering across processes when it is not all local."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # only needed on multi-host runs
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def _plan_shards(sizes: list[int], max_shard_bytes: int) -> list[int]:
  """Shard number of each tensor, packing in order; a tensor larger than the limit gets its own."""
  shard, used, plan = 0, 0, []
  for size in sizes:
    if used and used + size > max_shard_bytes:
      shard, used = shard + 1, 0
    plan.append(shard)
    used += size
  return plan


def _hf_tensors(specs: list[_TensorSpec], tree: Any, out_dtype: np.dtype
                ) -> Iterator[tuple[str, np.ndarray]]:
  """(name, HF-layout array) in spec order, fetching one of our leaves at a time."""
  for spec in specs:
    host = _to_host(_lookup(tree, spec.path))
    if host.shape != spec.shape:
      raise ValueError(f"params/{'/'.join(spec.path)} has shape {host.shape}, expected "
                       f"{spec.shape} from the config.")
    layers = host if spec.stacked else host[None]
    for name, layer in zip(spec.hf_names, layers):
      yield name, np.ascontiguousarray(spec.to_hf(layer).astype(out_dtype))


def _remove_old_weights(model_dir: str) -> None:
  """Drop weight files a previous save left here, so no stale shard or index can be loaded."""
  for name in os.listdir(model_dir):
    if name in (SINGLE_FILE, INDEX_FILE) or (name.startswith("model-") and
                                             name.endswith(".safetensors")):
      os.remove(os.path.join(model_dir, name))


def save_hf(model_dir: str, config: ModelConfig, params: Any, model_type: str | None = None,
            max_shard_bytes: int = 5 * 2**30, dtype: Any = np.float32) -> None:
  """Write config.json and safetensors weights that transformers' `from_pretrained` loads.

  One model.safetensors when everything fits `max_shard_bytes`, otherwise
  model-0000k-of-0000n.safetensors plus model.safetensors.index.json. Tied embeddings are written
  once, as model.embed_tokens.weight (HF re-ties lm_head on load). `model_type` defaults to qwen2
  for configs with q/k/v biases, else llama. `dtype` is the stored dtype (float32 or bfloat16).
  """
  model_type = model_type or default_model_type(config)
  out_dtype = np.dtype(dtype)
  hf_config = config_to_hf(config, model_type, dtype=str(out_dtype))
  tree = params["params"] if "params" in params else params
  specs = _tensor_specs(config)
  names = [name for spec in specs for name in spec.hf_names]
  sizes = [int(np.prod(spec.hf_shape)) * out_dtype.itemsize
           for spec in specs for _ in spec.hf_names]
  plan = _plan_shards(sizes, max_shard_bytes)
  num_shards = plan[-1] + 1
  file_names = ([SINGLE_FILE] if num_shards == 1 else
                [f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors" for k in range(num_shards)])

  os.makedirs(model_dir, exist_ok=True)
  _remove_old_weights(model_dir)
  # "format": "pt" is the metadata transformers expects on safetensors weights.
  metadata = {"format": "pt"}
  current, buffer = 0, {}
  for (name, array), shard in zip(_hf_tensors(specs, tree, out_dtype), plan):
    if shard != current:
      safetensors.numpy.save_file(buffer, os.path.join(model_dir, file_names[current]), metadata)
      current, buffer = shard, {}
    buffer[name] = array
  safetensors.numpy.save_file(buffer, os.path.join(model_dir, file_names[current]), metadata)

  if num_shards > 1:
    index = {"metadata": {"total_size": sum(sizes)},
             "weight_map": {name: file_names[shard] for name, shard in zip(names, plan)}}
    with open(os.path.join(model_dir, INDEX_FILE), "w") as fh:
      json.dump(index, fh, indent=2)
  with open(os.path.join(model_dir, CONFIG_FILE), "w") as fh:
    json.dump(hf_config, fh, indent=2)


# ------------------------------------------------------------------------------------------------
# Exports that look like the checkpoint they started from.

GENERATION_CONFIG_FILE = "generation_config.json"
SPECIAL_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
_STORED_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32}


def stored_dtype(model_dir: str) -> Any:
  """The dtype the weights of `model_dir` are stored in (config.json's `dtype`/`torch_dtype`);
  float32 for no directory or an unknown value."""
  path = os.path.join(model_dir, CONFIG_FILE) if model_dir else ""
  if not path or not os.path.isfile(path):
    return np.float32
  hf_config = _read_json(path)
  name = str(hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32")
  return _STORED_DTYPES.get(name.replace("torch.", ""), np.float32)


def save_like(model_dir: str, config: ModelConfig, params: Any, source_dir: str = "") -> None:
  """`save_hf`, shaped like the checkpoint the run started from (`source_dir`, "" for none).

  The weights keep the source's stored dtype (a bfloat16 model is exported in bfloat16) and its
  model_type (e.g. mistral stays mistral); its generation_config.json is copied and the
  special-token ids of its config.json (bos/eos/pad) are carried over, so sampling defaults and
  stop tokens are those users of the source expect.
  """
  source = _read_json(os.path.join(source_dir, CONFIG_FILE)) if source_dir and os.path.isfile(
      os.path.join(source_dir, CONFIG_FILE)) else {}
  model_type = source.get("model_type")
  model_type = model_type if model_type in SUPPORTED_MODEL_TYPES else None
  save_hf(model_dir, config, params, model_type=model_type, dtype=stored_dtype(source_dir))
  if not source:
    return
  generation = os.path.join(source_dir, GENERATION_CONFIG_FILE)
  if os.path.isfile(generation):
    with open(generation) as src, open(os.path.join(model_dir, GENERATION_CONFIG_FILE), "w") as dst:
      dst.write(src.read())
  carried = {k: source[k] for k in SPECIAL_TOKEN_KEYS if source.get(k) is not None}
  if carried:
    path = os.path.join(model_dir, CONFIG_FILE)
    written = _read_json(path)
    written.update(carried)
    with open(path, "w") as fh:
      json.dump(written, fh, indent=2)
