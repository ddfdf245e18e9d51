"""Tokenizers: the character tokenizer of the synthetic tasks, and HF tokenizers built offline."""

import os
import shutil

import pytest

from prl_jax.models.tokenizer import (CHAR_TOKENIZER_FILE, CharTokenizer, HFTokenizer, RawTokenizer,
                                      Tokenizer, load_tokenizer)

TEXTS = ["Q: 12+7*3=? A: 33\n", "count down from 10 to 0, then stop.", "(4-2)/2 = 1; x^2 >= 0!"]


def test_char_round_trip_and_specials(tmp_path):
  tok = CharTokenizer()
  assert isinstance(tok, Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == 3 + len(CharTokenizer.DEFAULT_ALPHABET) <= 128
  for text in TEXTS:
    ids = tok.encode(text)
    assert len(ids) == len(text) and min(ids) >= 3 and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text
  wrapped = tok.encode("1+1", add_bos=True, add_eos=True)
  assert wrapped[0] == tok.bos_id and wrapped[-1] == tok.eos_id
  assert tok.decode(wrapped + [tok.pad_id]) == "1+1"
  assert tok.decode(wrapped, skip_special_tokens=False) == "<bos>1+1<eos>"
  assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
  # Saved next to a checkpoint, it is found again by load_tokenizer.
  tok.save(str(tmp_path))
  loaded = load_tokenizer(str(tmp_path))
  assert isinstance(loaded, CharTokenizer) and loaded.encode(TEXTS[0]) == tok.encode(TEXTS[0])


def test_char_errors(tmp_path):
  tok = CharTokenizer()
  with pytest.raises(ValueError, match="not in the alphabet"):
    tok.encode("2 × 3")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tok.decode([tok.vocab_size])
  with pytest.raises(ValueError, match="repeats"):
    CharTokenizer("abca")
  with pytest.raises(ValueError, match="empty"):
    CharTokenizer("")
  small = CharTokenizer("0123456789+=")
  assert small.vocab_size == 15 and small.decode(small.encode("1+2=3")) == "1+2=3"
  with pytest.raises(ValueError, match="not in the alphabet"):
    small.encode("a")
  (tmp_path / CHAR_TOKENIZER_FILE).write_text('{"type": "bpe"}')
  with pytest.raises(ValueError, match="not a CharTokenizer"):
    CharTokenizer.load(str(tmp_path))


def _train_bpe():
  """A byte-level BPE with <s>, </s>, <pad>, trained on a few strings in memory."""
  tokenizers = pytest.importorskip("tokenizers")
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS * 20, trainer)
  return tok


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  transformers = pytest.importorskip("transformers")
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=_train_bpe(), bos_token="<s>", eos_token="</s>", pad_token="<pad>")
  fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
                        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
  path = tmp_path_factory.mktemp("tok")
  fast.save_pretrained(str(path))
  return str(path)


def test_auto_tokenizer_offline(hf_dir):
  tok = load_tokenizer(hf_dir)
  assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == len(tok.tokenizer) <= 300
  for text in TEXTS + ["unseen words still round-trip"]:
    ids = tok.encode(text)
    assert tok.bos_id not in ids and tok.decode(ids) == text
  ids = tok.encode(TEXTS[0], add_bos=True, add_eos=True)
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids) == TEXTS[0]
  assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
  assert tok.has_chat_template
  prompt = tok.apply_chat_template([{"role": "user", "content": "2+2?"}])
  assert prompt == "<|user|>2+2?\n<|assistant|>"


def test_bare_tokenizer_json(hf_dir, tmp_path):
  shutil.copy(os.path.join(hf_dir, "tokenizer.json"), tmp_path / "tokenizer.json")
  tok = load_tokenizer(str(tmp_path), bos_token="<s>", eos_token="</s>")
  assert isinstance(tok, RawTokenizer)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)  # pad falls back to EOS
  reference = load_tokenizer(hf_dir)
  for text in TEXTS:
    assert tok.encode(text) == reference.encode(text) and tok.decode(tok.encode(text)) == text
  assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
  assert isinstance(load_tokenizer(str(tmp_path / "tokenizer.json"), eos_token="</s>"),
                    RawTokenizer)
  with pytest.raises(ValueError, match="eos_token"):
    load_tokenizer(str(tmp_path))
  with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
    load_tokenizer(str(tmp_path), eos_token="<eos>")
  with pytest.raises(ValueError, match="no BOS"):
    load_tokenizer(str(tmp_path), eos_token="</s>").encode("x", add_bos=True)


def test_missing_tokenizer(tmp_path):
  with pytest.raises(FileNotFoundError, match="No tokenizer"):
    load_tokenizer(str(tmp_path))
  with pytest.raises(FileNotFoundError):
    load_tokenizer(str(tmp_path / "nope"))
