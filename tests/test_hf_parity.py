"""HF checkpoint I/O: logits parity with transformers' PyTorch models built locally at random.

Four reference models cover the paths that differ: Qwen2 (q/k/v biases, GQA, untied head), Qwen3
(q/k norms, explicit head_dim, tied), Llama (GQA, tied embeddings, rope_theta=50000) and Llama with
Llama 3 rope scaling. Inputs are 512 tokens
long (RoPE bugs hide in short ones), one row left-padded. Weights, norms and biases are all
randomised so a swapped or mis-transposed tensor cannot hide behind an initialisation of ones/zeros.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from prl_jax.models import hf  # noqa: E402
from prl_jax.models.config import ModelConfig  # noqa: E402
from prl_jax.models.transformer import Transformer, init_params  # noqa: E402

SEQ = 512
PAD = 37  # left padding of the second row
TOL = 1e-4

_COMMON = dict(hidden_size=64, intermediate_size=160, num_attention_heads=8, num_key_value_heads=2,
               max_position_embeddings=1024, attn_implementation="eager")

REFERENCE_MODELS = {
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=512, num_hidden_layers=2, tie_word_embeddings=False, **_COMMON)),
    # Qwen3: q/k RMSNorm per head before RoPE, explicit head_dim (16, not hidden/heads = 8).
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        vocab_size=384, num_hidden_layers=2, tie_word_embeddings=True, head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **_COMMON)),
    "llama_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=300, num_hidden_layers=3, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, **_COMMON)),
    "llama3_rope": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=256, num_hidden_layers=2, tie_word_embeddings=False,
        # original length 64 puts head_dim=8's wavelengths in all three bands of the rescaling.
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}, **_COMMON)),
}


def _randomise(model):
  """Non-trivial weights everywhere: N(0, 0.08) matrices, 1 + N(0, 0.2) norms, N(0, 0.3) biases."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.normal_(0.0, 0.3)
      else:
        p.normal_(0.0, 0.08)
  return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """name -> (torch model, directory it was saved to with save_pretrained)."""
  root = tmp_path_factory.mktemp("hf")
  out = {}
  for i, (name, build) in enumerate(REFERENCE_MODELS.items()):
    torch.manual_seed(i)
    model = _randomise(build())
    model.save_pretrained(root / name)
    out[name] = (model, str(root / name))
  return out


def _inputs(vocab):
  """[2, SEQ] ids, row 1 left-padded by PAD, with its mask and positions (count of real tokens)."""
  rng = np.random.RandomState(0)
  ids = rng.randint(0, vocab, size=(2, SEQ))
  mask = np.ones((2, SEQ), bool)
  mask[1, :PAD] = False
  ids[1, :PAD] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return ids, mask, positions


def _torch_logits(model, ids, mask, positions):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(positions)).logits.float().numpy()


def _our_logits(config, params, ids, mask):
  logits, _ = jax.jit(lambda p, t, m: Transformer(config).apply(p, t, token_mask=m))(
      params, jnp.asarray(ids), jnp.asarray(mask))
  return np.asarray(logits)


def _max_diff(a, b, mask):
  return float(np.abs(a - b)[mask].max())


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_logits_match_torch(checkpoints, name):
  model, path = checkpoints[name]
  config, params = hf.load_hf(path)
  ids, mask, positions = _inputs(config.vocab_size)
  ref = _torch_logits(model, ids, mask, positions)
  ours = _our_logits(config, params, ids, mask)
  assert np.abs(ref[mask]).max() > 1.0  # the comparison is not between near-zero logits
  assert _max_diff(ours, ref, mask) <= TOL
  # The param tree is exactly the one init_params builds.
  expected = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  assert all(a.shape == b.shape and a.dtype == b.dtype
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)))


def test_configs_read_from_hf(checkpoints):
  qwen, _ = hf.load_hf(checkpoints["qwen2"][1])
  assert qwen.qkv_bias and not qwen.tie_embeddings and qwen.num_kv_heads == 2
  llama, _ = hf.load_hf(checkpoints["llama_tied"][1])
  assert llama.tie_embeddings and not llama.qkv_bias and llama.rope_theta == 50000.0
  assert llama.rms_norm_eps == 1e-5 and llama.head_dim is None
  scaled, _ = hf.load_hf(checkpoints["llama3_rope"][1])
  assert dict(scaled.rope_scaling)["rope_type"] == "llama3"
  assert dict(scaled.rope_scaling)["original_max_position_embeddings"] == 64
  qwen3, params = hf.load_hf(checkpoints["qwen3"][1])
  assert qwen3.qk_norm and not qwen3.qkv_bias and qwen3.head_dim == 16 and qwen3.tie_embeddings
  assert params["params"]["layers"]["attn"]["q_norm"]["scale"].shape == (2, 16)
  assert qwen3.num_params() == sum(p.numel() for p in checkpoints["qwen3"][0].parameters())


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_save_round_trip(checkpoints, name, tmp_path):
  _, path = checkpoints[name]
  config, params = hf.load_hf(path)
  hf.save_hf(str(tmp_path), config, params)
  # Ours -> ours is exact.
  config2, params2 = hf.load_hf(str(tmp_path))
  assert config2 == config
  _assert_trees_equal(params2, params)
  # Ours -> transformers gives the same logits.
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), attn_implementation="eager", local_files_only=True).eval()
  assert type(reloaded).__name__ == {"qwen2": "Qwen2ForCausalLM",
                                    "qwen3": "Qwen3ForCausalLM"}.get(name, "LlamaForCausalLM")
  ids, mask, positions = _inputs(config.vocab_size)
  ours = _our_logits(config, params, ids, mask)
  assert _max_diff(_torch_logits(reloaded, ids, mask, positions), ours, mask) <= TOL
  # Tied embeddings are stored once, as HF does.
  assert ("lm_head.weight" in _tensor_names(tmp_path)) == (not config.tie_embeddings)


def _tensor_names(directory):
  """Names of the tensors in every safetensors file of a directory."""
  import safetensors
  names = set()
  for f in os.listdir(directory):
    if f.endswith(".safetensors"):
      with safetensors.safe_open(os.path.join(directory, f), framework="numpy") as fh:
        names |= set(fh.keys())
  return names


def test_sharded_checkpoints(checkpoints, tmp_path):
  model, path = checkpoints["qwen2"]
  _, params = hf.load_hf(path)
  # transformers' own sharded format.
  model.save_pretrained(tmp_path / "theirs", max_shard_size="100KB")
  assert os.path.exists(tmp_path / "theirs" / hf.INDEX_FILE)
  assert len([f for f in os.listdir(tmp_path / "theirs") if f.endswith(".safetensors")]) > 1
  _, sharded = hf.load_hf(str(tmp_path / "theirs"))
  _assert_trees_equal(sharded, params)
  # Ours, re-read by transformers and by us.
  config = hf.load_hf(path)[0]
  hf.save_hf(str(tmp_path / "ours"), config, params, max_shard_bytes=200_000)
  files = sorted(f for f in os.listdir(tmp_path / "ours") if f.endswith(".safetensors"))
  assert len(files) > 1 and hf.SINGLE_FILE not in files
  _assert_trees_equal(hf.load_hf(str(tmp_path / "ours"))[1], params)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "ours"), attn_implementation="eager", local_files_only=True).eval()
  for (n1, p1), (n2, p2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
    assert n1 == n2 and torch.equal(p1, p2), n1
  # Saving again unsharded into the same directory leaves no stale shard behind.
  hf.save_hf(str(tmp_path / "ours"), config, params)
  assert sorted(f for f in os.listdir(tmp_path / "ours")) == ["config.json", hf.SINGLE_FILE]


def test_bf16_checkpoints(checkpoints, tmp_path):
  model, path = checkpoints["llama_tied"]
  _, params = hf.load_hf(path)
  rounded = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32),
                         params)
  model.to(torch.bfloat16).save_pretrained(tmp_path / "theirs")
  model.to(torch.float32)
  _, loaded = hf.load_hf(str(tmp_path / "theirs"))
  _assert_trees_equal(loaded, rounded)
  _, as_bf16 = hf.load_hf(str(tmp_path / "theirs"), dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(as_bf16))
  config = hf.load_hf(path)[0]
  hf.save_hf(str(tmp_path / "ours"), config, params, dtype=ml_dtypes.bfloat16)
  _assert_trees_equal(hf.load_hf(str(tmp_path / "ours"))[1], rounded)
  assert json.load(open(tmp_path / "ours" / "config.json"))["dtype"] == "bfloat16"


def test_load_with_shardings(checkpoints):
  _, path = checkpoints["qwen2"]
  config, params = hf.load_hf(path)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  replicated = NamedSharding(mesh, P())
  shardings = jax.tree.map(lambda _: replicated, params)
  shardings["params"]["embed"]["embedding"] = NamedSharding(mesh, P("model", None))
  shardings["params"]["layers"]["mlp"]["up"]["kernel"] = NamedSharding(mesh, P(None, "data",
                                                                               "model"))
  _, placed = hf.load_hf(path, shardings=shardings)
  for leaf, sharding in zip(jax.tree.leaves(placed), jax.tree.leaves(shardings)):
    assert leaf.sharding == sharding
  _assert_trees_equal(placed, params)
  assert placed["params"]["embed"]["embedding"].addressable_shards[0].data.shape == (
      config.vocab_size // 4, config.hidden_size)


def _edited_copy(src, dst, **changes):
  shutil.copytree(src, dst)
  with open(os.path.join(dst, "config.json")) as fh:
    cfg = json.load(fh)
  cfg.update(changes)
  with open(os.path.join(dst, "config.json"), "w") as fh:
    json.dump(cfg, fh)
  return str(dst)


def test_shape_and_name_errors(checkpoints, tmp_path):
  _, path = checkpoints["qwen2"]
  wider = _edited_copy(path, tmp_path / "wider", hidden_size=96)
  with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight.*\(512, 64\).*\(512, 96\)"):
    hf.load_hf(wider)
  mlp = _edited_copy(path, tmp_path / "mlp", intermediate_size=128)
  with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight"):
    hf.load_hf(mlp)
  deeper = _edited_copy(path, tmp_path / "deeper", num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"missing tensors \['model\.layers\.2\."):
    hf.load_hf(deeper)
  tied = _edited_copy(path, tmp_path / "tied", tie_word_embeddings=True)
  hf.load_hf(tied)  # a tied model may carry an lm_head copy: ignored, not an error
  llama = _edited_copy(path, tmp_path / "llama", model_type="llama")
  with pytest.raises(ValueError,
                     match=r"unexpected tensors \['model\.layers\.0\.self_attn\.k_proj"):
    hf.load_hf(llama)
  with pytest.raises(FileNotFoundError, match="safetensors"):
    hf.load_hf(str(tmp_path), config=hf.load_hf(path)[0])


def _base_hf(**changes):
  base = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 2048}
  return {**base, **changes}


def test_config_from_hf_formats_and_errors():
  legacy = hf.config_from_hf(_base_hf(rope_theta=500000.0, rope_scaling={
      "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}))
  modern = hf.config_from_hf(_base_hf(rope_parameters={
      "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}))
  assert legacy == modern and legacy.rope_theta == 500000.0
  assert hf.config_from_hf(_base_hf(head_dim=32)).head_dim == 32
  assert hf.config_from_hf(_base_hf(model_type="mistral", sliding_window=None)).num_layers == 2
  # Qwen2.5 ships sliding_window set but disabled.
  qwen = hf.config_from_hf(_base_hf(model_type="qwen2", use_sliding_window=False,
                                    sliding_window=32768, max_window_layers=1))
  assert qwen.qkv_bias
  bad = {
      "model_type": (_base_hf(model_type="gpt2"), "model_type 'gpt2'"),
      "mistral window": (_base_hf(model_type="mistral", sliding_window=512), "sliding_window=512"),
      "qwen2 window": (_base_hf(model_type="qwen2", use_sliding_window=True, sliding_window=64,
                                max_window_layers=1), "use_sliding_window"),
      "layer types": (_base_hf(layer_types=["full_attention", "sliding_attention"]),
                      "sliding_attention"),
      "yarn": (_base_hf(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn'"),
      "o bias": (_base_hf(attention_bias=True), "attention_bias"),
      "gelu": (_base_hf(hidden_act="gelu"), "hidden_act"),
      "kv heads": (_base_hf(num_key_value_heads=3), "num_kv_heads=3"),
  }
  for what, (cfg, message) in bad.items():
    with pytest.raises(ValueError, match=message):
      hf.config_from_hf(cfg)
      pytest.fail(what)


def test_config_to_hf_loads_in_transformers(tmp_path):
  config = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=128, head_dim=32, rope_theta=50000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64},
                       rms_norm_eps=1e-5, tie_embeddings=True)
  for model_type, cfg in (("llama", config),
                          ("qwen2", config.replace(qkv_bias=True, rope_scaling=None)),
                          ("qwen3", config.replace(qk_norm=True, rope_scaling=None))):
    (tmp_path / model_type).mkdir()
    with open(tmp_path / model_type / "config.json", "w") as fh:
      json.dump(hf.config_to_hf(cfg, model_type), fh)
    theirs = transformers.AutoConfig.from_pretrained(str(tmp_path / model_type),
                                                     local_files_only=True)
    assert theirs.model_type == model_type and theirs.head_dim == 32
    assert theirs.rope_parameters["rope_theta"] == 50000.0 and theirs.tie_word_embeddings
    assert hf.config_from_hf(theirs.to_dict()) == cfg
  with pytest.raises(ValueError, match="qkv_bias"):
    hf.config_to_hf(config, "qwen2")
  with pytest.raises(ValueError, match="q/k/v biases"):
    hf.config_to_hf(config.replace(qkv_bias=True), "llama")
  with pytest.raises(ValueError, match="q/k norms are Qwen3's"):
    hf.config_to_hf(config.replace(qk_norm=True), "llama")
  with pytest.raises(ValueError, match="q/k norms are Qwen3's"):
    hf.config_to_hf(config, "qwen3")
  assert hf.config_to_hf(config.replace(qk_norm=True, rope_scaling=None))["model_type"] == "qwen3"
