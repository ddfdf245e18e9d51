"""Config files and overrides: `get_config()` files plus `--config.a.b=value` on the command line.

A config file is a Python file defining `get_config(arg=None) -> ml_collections.ConfigDict`;
`path.py:arg` passes `arg`. Overrides are type-checked against the existing field, an unknown key
stops with the closest known keys, and `validate` checks the values that can be wrong together
(e.g. a batch that does not split into the mesh) before anything is compiled.
"""

from __future__ import annotations

import ast
import codecs
import difflib
import importlib.util
import os
import sys
from typing import Any, Sequence

import ml_collections

ConfigDict = ml_collections.ConfigDict


class ConfigError(ValueError):
  """A config that cannot run; the message says which key and what to change."""


def load_config_file(spec: str) -> ConfigDict:
  """Imports `file.py[:arg]` and returns its `get_config(arg)` (unlocked copy)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} does not exist; pass e.g. --config configs/mini/prime.py.")
  # Config files import their siblings as `configs.base`: put the folder holding `configs/` on
  # the path, wherever the command was started from.
  root = os.path.dirname(os.path.abspath(path))
  while os.path.basename(root) != "configs" and os.path.dirname(root) != root:
    root = os.path.dirname(root)
  root = os.path.dirname(root)
  # A user's own config anywhere imports the shipped ones (`from configs import base`): they are
  # packaged beside prl_jax, or, in a source checkout, found beside the package's folder.
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for folder in (checkout, root):
    if folder not in sys.path and (folder == root or
                                   os.path.isfile(os.path.join(folder, "configs", "base.py"))):
      sys.path.insert(0, folder)
  module_spec = importlib.util.spec_from_file_location("_prl_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except (ImportError, SyntaxError) as err:
    raise ConfigError(f"Config file {path!r} cannot be loaded: {type(err).__name__}: {err}.") from err
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path!r} defines no get_config().")
  config = module.get_config(arg) if arg else module.get_config()
  return ConfigDict(config.to_dict()) if isinstance(config, ConfigDict) else ConfigDict(config)


def shipped_defaults() -> dict:
  """Today's defaults of every key (configs/base.py) as a plain dict; {} when the package runs
  without its configs folder. A key added to the project defaults to the earlier behaviour, so
  a run recorded before the key existed reads as having run with this default."""
  base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "base.py")
  return load_config_file(base).to_dict() if os.path.isfile(base) else {}


def parse_config_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
  """`key=value,key=value` (the `:arg` of `--config FILE:arg`) over `defaults`.

  A config file that takes paths calls this on its `get_config(arg)` argument, e.g.
  `--config configs/paper/prime_eurus2_7b.py:hf_dir=/ckpt/sft,train_file=/data/train.parquet`.
  Each value takes the type of its default (as `--config.a.b=value` overrides do); a value
  cannot contain a comma. An unknown key stops with the known ones.
  """
  values = dict(defaults)
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
      raise ConfigError(f"Config argument {item!r} must look like key=value; known keys: "
                        f"{', '.join(sorted(defaults))}.")
    if key not in defaults:
      raise ConfigError(f"Unknown config argument {key!r}; known keys: "
                        f"{', '.join(sorted(defaults))}.")
    values[key] = _parse_like(text.strip(), defaults[key], key)
  return values


def flat_keys(config: ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for name, value in config.items():
    key = f"{prefix}{name}"
    keys.extend(flat_keys(value, key + ".") if isinstance(value, ConfigDict) else [key])
  return keys


def _parse_like(text: str, current: Any, key: str) -> Any:
  """Parses the command-line `text` into the type of the field's current value."""
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
      return True
    if lowered in ("0", "false", "no"):
      return False
    raise ConfigError(f"--config.{key}={text!r}: expected true or false.")
  if isinstance(current, str) or current is None:
    if current is None:
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return text
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as err:
    raise ConfigError(f"--config.{key}={text!r}: expected a {type(current).__name__}.") from err
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(current)(value)
  if not isinstance(value, type(current)):
    raise ConfigError(f"--config.{key}={text!r}: expected a {type(current).__name__}, "
                      f"got {type(value).__name__}.")
  return value


def suggest_keys(key: str, known: Sequence[str], n: int = 3) -> list[str]:
  """Known keys close to `key`: first those whose last component matches the last component of
  `key` (`lr` -> `optim.lr`, `kl_coef` -> `algo.loss.kl_coef`), then whole-key near misses."""
  leaf = key.rsplit(".", 1)[-1]
  leaves = {k: k.rsplit(".", 1)[-1] for k in known}
  same = [k for k in known if leaves[k] == leaf]
  near = difflib.get_close_matches(leaf, sorted(set(leaves.values())), n=n, cutoff=0.8)
  by_leaf = same + [k for k in known if leaves[k] in near and k not in same]
  # Among those, the keys most like the whole of `key` first (train.step -> train.steps); a
  # bare leaf keeps the config's order (lr -> optim.lr before sft.lr).
  like = lambda k: difflib.SequenceMatcher(None, key, k).ratio() if "." in key else 0.0
  by_leaf.sort(key=lambda k: (leaves[k] != leaf, -like(k)))
  whole = [k for k in difflib.get_close_matches(key, known, n=n) if k not in by_leaf]
  return (by_leaf + whole)[:n]


def apply_overrides(config: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
  """Applies `a.b=value` strings (the `--config.` prefix already removed)."""
  known = flat_keys(config)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"Override {item!r} must look like --config.{item}=VALUE.")
    if key not in known:
      close = suggest_keys(key, known)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"Unknown config key {key!r}.{hint} Every key is in configs/base.py "
                        "(--print-config prints the resolved config).")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf.endswith("delimiter"):
      # A shell passes `\n` as backslash + n; a step delimiter means the newline.
      text = codecs.decode(text, "unicode_escape")
    node[leaf] = _parse_like(text, node[leaf], key)
  return config


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
  """Separates `--config FILE`, `--config.k=v` overrides and the remaining arguments."""
  spec, overrides, rest = None, [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--config":
      if i + 1 >= len(argv):
        raise ConfigError("--config needs a file, e.g. --config configs/mini/prime.py.")
      spec, i = argv[i + 1], i + 2
      continue
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg.startswith("--config."):
      body = arg[len("--config."):]
      if "=" not in body and i + 1 < len(argv):
        body, i = f"{body}={argv[i + 1]}", i + 1
      overrides.append(body)
    else:
      rest.append(arg)
    i += 1
  return spec, overrides, rest
