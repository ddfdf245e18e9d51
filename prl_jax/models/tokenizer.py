"""Tokenizers behind one small interface: HF tokenizers loaded from local files, and a character
tokenizer for the synthetic tasks.

    tok = load_tokenizer(checkpoint_dir)
    ids = tok.encode("2+3=5", add_bos=True)
    text = tok.decode(ids)

Special tokens are never inserted implicitly: `encode` adds BOS/EOS only when asked, so prompt
templates, the sampler and the verifiers all see exactly the ids they build.
"""

from __future__ import annotations

import json
import os
import string
from typing import Any, Protocol, Sequence, runtime_checkable

CHAR_TOKENIZER_FILE = "char_tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of the code base needs from a tokenizer.

  `vocab_size` is the number of ids the tokenizer can produce; a model's embedding table may be
  larger (checkpoints often pad it), never smaller. `bos_id` may be None (Qwen2 has no BOS);
  `pad_id` falls back to `eos_id` for tokenizers without a pad token, which is safe because padding
  is always masked out.
  """

  vocab_size: int
  bos_id: int | None
  eos_id: int
  pad_id: int

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ...

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    ...

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    ...


def _with_specials(ids: list[int], bos_id: int | None, eos_id: int | None, add_bos: bool,
                   add_eos: bool) -> list[int]:
  """Wrap ids in BOS/EOS as requested, failing loudly when the tokenizer has no such token."""
  if add_bos:
    if bos_id is None:
      raise ValueError("add_bos=True but this tokenizer has no BOS token.")
    ids = [bos_id] + ids
  if add_eos:
    if eos_id is None:
      raise ValueError("add_eos=True but this tokenizer has no EOS token.")
    ids = ids + [eos_id]
  return ids


class CharTokenizer:
  """One id per character of a fixed alphabet, for synthetic tasks (arithmetic, countdown).

  Ids 0, 1, 2 are pad, bos, eos; the alphabet follows from id 3. The default alphabet is digits,
  ASCII letters, ASCII punctuation (which covers the operators + - * / = ( ) < > % ^), space and
  newline: 99 ids in all. A character outside the alphabet is an error rather than an unknown token,
  so a task that produces text the model cannot represent is caught at once.
  """

  PAD, BOS, EOS = 0, 1, 2
  SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
  DEFAULT_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"

  def __init__(self, alphabet: str | None = None):
    alphabet = self.DEFAULT_ALPHABET if alphabet is None else alphabet
    if not alphabet:
      raise ValueError("CharTokenizer: the alphabet is empty.")
    duplicates = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if duplicates:
      raise ValueError(f"CharTokenizer: alphabet repeats characters {duplicates!r}.")
    self.alphabet = alphabet
    offset = len(self.SPECIAL_TOKENS)
    self._ids = {c: i + offset for i, c in enumerate(alphabet)}
    self.vocab_size = offset + len(alphabet)
    self.bos_id, self.eos_id, self.pad_id = self.BOS, self.EOS, self.PAD

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Ids of each character of `text`; a character outside the alphabet raises ValueError."""
    try:
      ids = [self._ids[c] for c in text]
    except KeyError:
      unknown = sorted({c for c in text if c not in self._ids})
      raise ValueError(f"CharTokenizer: characters {unknown!r} of {text[:60]!r} are not in the "
                       "alphabet.") from None
    return _with_specials(ids, self.bos_id, self.eos_id, add_bos, add_eos)

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    return [self.encode(t, add_bos, add_eos) for t in texts]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`; special ids are dropped (or shown by name when not skipped)."""
    offset = len(self.SPECIAL_TOKENS)
    out = []
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise ValueError(f"CharTokenizer: id {i} is outside the vocabulary [0, {self.vocab_size}).")
      if i < offset:
        if not skip_special_tokens:
          out.append(self.SPECIAL_TOKENS[i])
      else:
        out.append(self.alphabet[i - offset])
    return "".join(out)

  def save(self, directory: str) -> str:
    """Write char_tokenizer.json into `directory` (so a checkpoint dir describes its tokenizer)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CHAR_TOKENIZER_FILE)
    with open(path, "w") as fh:
      json.dump({"type": "char", "special_tokens": list(self.SPECIAL_TOKENS),
                 "alphabet": self.alphabet}, fh, indent=2)
    return path

  @classmethod
  def load(cls, directory: str) -> "CharTokenizer":
    path = os.path.join(directory, CHAR_TOKENIZER_FILE)
    with open(path) as fh:
      data = json.load(fh)
    if data.get("type") != "char" or tuple(data.get("special_tokens", ())) != cls.SPECIAL_TOKENS:
      raise ValueError(f"{path} is not a CharTokenizer file of this version.")
    return cls(data["alphabet"])


class HFTokenizer:
  """A transformers tokenizer (`AutoTokenizer`) behind the `Tokenizer` interface."""

  def __init__(self, tokenizer: Any):
    self.tokenizer = tokenizer
    self.vocab_size = len(tokenizer)  # includes added tokens, unlike tokenizer.vocab_size
    self.bos_id = tokenizer.bos_token_id
    self.eos_id = tokenizer.eos_token_id
    if self.eos_id is None:
      raise ValueError("The tokenizer has no EOS token; generation could never stop. Set "
                       "eos_token in its tokenizer_config.json.")
    self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = list(self.tokenizer.encode(text, add_special_tokens=False))
    return _with_specials(ids, self.bos_id, self.eos_id, add_bos, add_eos)

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    batch = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [_with_specials(list(ids), self.bos_id, self.eos_id, add_bos, add_eos)
            for ids in batch]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  @property
  def has_chat_template(self) -> bool:
    return bool(getattr(self.tokenizer, "chat_template", None))

  def apply_chat_template(self, messages: Sequence[dict[str, str]],
                          add_generation_prompt: bool = True) -> str:
    """Prompt text of `messages` ([{"role": ..., "content": ...}]) under the model's template."""
    if not self.has_chat_template:
      raise ValueError("This tokenizer has no chat template; build prompts with a plain template.")
    return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                              add_generation_prompt=add_generation_prompt)


class RawTokenizer:
  """A bare `tokenizers.Tokenizer` (a lone tokenizer.json), with special tokens named explicitly."""

  def __init__(self, tokenizer: Any, bos_token: str | None = None, eos_token: str | None = None,
               pad_token: str | None = None):
    self.tokenizer = tokenizer
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.bos_id = self._id(bos_token)
    self.eos_id = self._id(eos_token)
    if self.eos_id is None:
      raise ValueError("A bare tokenizer.json needs eos_token=... naming its end-of-sequence "
                       "token.")
    pad_id = self._id(pad_token)
    self.pad_id = pad_id if pad_id is not None else self.eos_id

  def _id(self, token: str | None) -> int | None:
    if token is None:
      return None
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"Token {token!r} is not in the tokenizer's vocabulary.")
    return token_id

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = list(self.tokenizer.encode(text, add_special_tokens=False).ids)
    return _with_specials(ids, self.bos_id, self.eos_id, add_bos, add_eos)

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    batch = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [_with_specials(list(e.ids), self.bos_id, self.eos_id, add_bos, add_eos)
            for e in batch]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def load_tokenizer(path: str, **special_tokens: str) -> Tokenizer:
  """The tokenizer stored at `path`, from local files only (never the network).

  A directory with char_tokenizer.json gives a CharTokenizer; one with tokenizer_config.json an
  `AutoTokenizer`; a lone tokenizer.json (or a path to one) a `RawTokenizer`, whose special tokens
  are named by `bos_token=`, `eos_token=`, `pad_token=`.
  """
  if os.path.isfile(path):
    import tokenizers
    return RawTokenizer(tokenizers.Tokenizer.from_file(path), **special_tokens)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No tokenizer file or directory {path!r}.")
  if os.path.exists(os.path.join(path, CHAR_TOKENIZER_FILE)):
    return CharTokenizer.load(path)
  if os.path.exists(os.path.join(path, "tokenizer_config.json")):
    import transformers  # heavy import, only on this path
    return HFTokenizer(transformers.AutoTokenizer.from_pretrained(path, local_files_only=True))
  if os.path.exists(os.path.join(path, "tokenizer.json")):
    import tokenizers
    return RawTokenizer(tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json")),
                        **special_tokens)
  raise FileNotFoundError(f"No tokenizer in {path!r}: expected {CHAR_TOKENIZER_FILE}, "
                          "tokenizer_config.json or tokenizer.json.")
