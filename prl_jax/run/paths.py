"""One file system for everything a run reads or writes: local paths and URLs alike.

A workdir, model or data file may be a local path or a URL that fsspec knows (`gs://bucket/run`
with gcsfs installed, `s3://`, `file:///abs/path`, `memory://` in tests). Every file a run writes
(metrics.jsonl, config.json, TensorBoard events, eval outputs) goes through these functions, so
a `gs://` workdir on a TPU pod keeps all of it in the bucket, where a re-created VM finds it.
Checkpoints go through Orbax, which takes local paths and gs://, s3://, az:// itself
(`orbax_path`).

Object stores have no append and no rename: `append_line` rewrites the object and
`write_atomic` writes it in one upload (which replaces an object whole), so a reader never sees
half a file there either.

Models and tokenizers are read by libraries that want a local directory (safetensors,
transformers), so a remote model or data file is copied once into a local cache (`local_copy`),
and a Hugging Face Hub id (`Qwen/Qwen2.5-Math-7B`) is resolved by `huggingface_hub` from its
cache, downloading only when HF_HUB_OFFLINE is unset (`hub_snapshot`).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
from typing import IO, Iterator

from prl_jax.config import ConfigError

# Schemes Orbax (through etils.epath) opens itself; file:// is given to it as a local path.
ORBAX_SCHEMES = ("gs", "s3", "az")
# "owner/name" or "name" of a Hub repository (the Hub's own rule: letters, digits, -_.).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_url(path: str) -> bool:
  """Whether `path` is a URL (`scheme://...`) rather than a local path."""
  return "://" in str(path)


def scheme(path: str) -> str:
  """The URL scheme of `path` ("gs", "file", ...), "" for a local path."""
  return str(path).split("://", 1)[0] if is_url(path) else ""


def join(base: str, *parts: str) -> str:
  """`base`/`parts`: os.path.join locally, "/" for URLs (whatever the operating system)."""
  return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def normpath(path: str) -> str:
  """`path` without redundant separators or a trailing "/" ("gs://b/run/" -> "gs://b/run");
  os.path.normpath would turn "gs://" into "gs:/"."""
  if not is_url(path):
    return os.path.normpath(path)
  head, rest = path.split("://", 1)
  return f"{head}://{posixpath.normpath(rest)}" if rest else path


def _fs(path: str):
  """(fsspec file system, path inside it) of the URL `path`; a ConfigError names what to fix."""
  import fsspec
  try:
    return fsspec.core.url_to_fs(path)
  except ImportError as err:  # e.g. gs:// without gcsfs
    raise ConfigError(f"{path}: the {scheme(path)}:// file system needs a package that is not "
                      f"installed ({err}); for gs:// run `pip install gcsfs`.") from err
  except ValueError as err:  # an unknown protocol
    raise ConfigError(f"{path}: {err}; use a local path or a URL fsspec knows (gs://, s3://, "
                      "file://).") from err


def _ask(path: str, local, method: str):
  """local(path) for a local path, the fsspec file system's `method` for a URL."""
  if not is_url(path):
    return local(path)
  fs, inner = _fs(path)
  return getattr(fs, method)(inner)


def exists(path: str) -> bool:
  return _ask(path, os.path.exists, "exists")


def isdir(path: str) -> bool:
  return _ask(path, os.path.isdir, "isdir")


def isfile(path: str) -> bool:
  return _ask(path, os.path.isfile, "isfile")


def listdir(path: str) -> list[str]:
  """The names (not paths) in directory `path`; [] when it does not exist."""
  if not is_url(path):
    return os.listdir(path) if os.path.isdir(path) else []
  fs, inner = _fs(path)
  if not fs.isdir(inner):
    return []
  return [posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False)
          if p.rstrip("/") != inner.rstrip("/")]


def getsize(path: str) -> int:
  return _ask(path, os.path.getsize, "size")


def makedirs(path: str) -> None:
  """Creates directory `path` and its parents (object stores need none: a no-op there)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    return
  fs, inner = _fs(path)
  fs.makedirs(inner, exist_ok=True)


def remove(path: str) -> None:
  """Removes the file or directory tree `path`."""
  if not is_url(path):
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return
  fs, inner = _fs(path)
  fs.rm(inner, recursive=True)


def open(path: str, mode: str = "r", **kwargs) -> IO:  # pylint: disable=redefined-builtin
  """builtins.open for local paths, fsspec's open for URLs (a file object either way)."""
  if not is_url(path):
    return builtins.open(path, mode, **kwargs)
  import fsspec
  _fs(path)  # a clear error for an unknown scheme or a missing package
  return fsspec.open(path, mode, **kwargs).open()


def parent(path: str) -> str:
  """The directory holding `path` (absolute for a local path)."""
  if is_url(path):
    return posixpath.dirname(path.rstrip("/"))
  return os.path.dirname(os.path.abspath(path))


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` whole (`write_atomic`), creating its directory first."""
  makedirs(parent(path))
  write_atomic(path, text)


def read_text(path: str) -> str:
  with open(path, "r", encoding="utf-8") as fh:
    return fh.read()


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so that a reader (or a kill) never sees half a file.

  Locally: a sibling file, fsynced, renamed over `path`, then the directory synced so the rename
  survives a crash. On an object store one upload replaces the object whole.
  """
  if is_url(path):
    with open(path, "w", encoding="utf-8") as fh:
      fh.write(text)
    return
  tmp = f"{path}.tmp{os.getpid()}"
  with builtins.open(tmp, "w", encoding="utf-8") as fh:
    fh.write(text)
    fh.flush()
    os.fsync(fh.fileno())
  os.replace(tmp, path)
  fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def append_line(path: str, line: str) -> None:
  """Appends `line` and a newline to `path` in one write, durable once this returns.

  Locally one `os.write` on an O_APPEND descriptor puts the whole line in at once (a killed
  process leaves the line or nothing; Python's buffered file may split a long line over several
  writes), then fsync. An object store cannot append: the object is rewritten with the line
  added, in one upload, so it too holds the old rows or all of the new ones.
  """
  if is_url(path):
    old = read_text(path) if exists(path) else ""
    write_atomic(path, old + line + "\n")
    return
  data = (line + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    done = os.write(fd, data)
    while done < len(data):  # a short write appends the rest, still before any other line
      done += os.write(fd, data[done:])
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def local_dir(path: str) -> Iterator[str]:
  """A local directory to write `path`'s files into with ordinary libraries (matplotlib,
  safetensors): `path` itself when local, else a temporary directory uploaded to `path` on exit.
  """
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="prl_jax_upload_") as tmp:
    yield tmp
    fs, inner = _fs(path)
    fs.makedirs(inner, exist_ok=True)
    for name in sorted(os.listdir(tmp)):  # put(recursive) nests differently across backends
      _put(fs, os.path.join(tmp, name), posixpath.join(inner, name))


def _put(fs, local: str, remote: str) -> None:
  if os.path.isdir(local):
    fs.makedirs(remote, exist_ok=True)
    for name in sorted(os.listdir(local)):
      _put(fs, os.path.join(local, name), posixpath.join(remote, name))
  else:
    fs.put_file(local, remote)


def orbax_path(path: str) -> str:
  """The checkpoint directory as Orbax takes it: an absolute local path, or a gs://, s3://,
  az:// URL (Orbax writes those itself); file:///x is the local /x. Other schemes are refused:
  Orbax would read them as a relative local directory named after the scheme."""
  if not is_url(path):
    return os.path.abspath(path)
  if scheme(path) == "file":
    return "/" + path.split("://", 1)[1].lstrip("/")
  if scheme(path) in ORBAX_SCHEMES:
    return path
  raise ConfigError(f"{path}: checkpoints (Orbax) take a local path or a "
                    f"{', '.join(s + '://' for s in ORBAX_SCHEMES)} or file:// URL; "
                    f"use one of those for --workdir.")


def cache_dir() -> str:
  """Where remote models and data files are copied: $PRL_JAX_CACHE, else ~/.cache/prl_jax."""
  return os.environ.get("PRL_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "prl_jax")


def local_copy(url: str, key: str, refresh: bool = False) -> str:
  """A local copy of the file or directory at `url` (returned as it is when local).

  The copy lives under cache_dir() at a name made from the URL, so every process and every
  re-created VM gets the same path (a resumed run's recorded config stays equal); a finished
  copy is reused unless `refresh` (a run's own output, which a later run may rewrite). `key`
  names the config key in the error.
  """
  if not is_url(url):
    return url
  fs, inner = _fs(url)
  if not fs.exists(inner):
    raise ConfigError(f"{key}={url!r} does not exist; fix the URL or leave it empty.")
  digest = hashlib.sha256(url.encode()).hexdigest()[:16]
  target = os.path.join(cache_dir(), "remote", digest, posixpath.basename(inner.rstrip("/")))
  done = target + ".complete"
  if refresh and os.path.exists(done):
    os.remove(done)
    shutil.rmtree(target, ignore_errors=True)
  if not os.path.exists(done):
    partial = f"{target}.partial{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if fs.isdir(inner):
      os.makedirs(partial)
      for name in sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False)):
        _get(fs, posixpath.join(inner, name), os.path.join(partial, name))
    else:
      fs.get_file(inner, partial)
    try:
      os.replace(partial, target)
    except OSError:  # another process on this host finished the same copy first
      if not os.path.exists(target):
        raise
      shutil.rmtree(partial, ignore_errors=True) if os.path.isdir(partial) else os.remove(partial)
    builtins.open(done, "w").close()
  return target


def _get(fs, remote: str, local: str) -> None:
  if fs.isdir(remote):
    os.makedirs(local, exist_ok=True)
    for name in sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(remote, detail=False)):
      _get(fs, posixpath.join(remote, name), os.path.join(local, name))
  else:
    fs.get_file(remote, local)


def is_hub_id(path: str) -> bool:
  """Whether `path` reads as a Hub repository id ("owner/name") and is no local path."""
  return bool(_HUB_ID.match(path)) and not os.path.exists(path)


def hub_snapshot(repo_id: str, key: str) -> str:
  """The local directory of Hub model `repo_id` (its latest snapshot in the Hugging Face cache).

  huggingface_hub reads its cache (HF_HOME / HF_HUB_CACHE) and downloads only what is missing;
  with HF_HUB_OFFLINE=1 it never touches the network, and a model not in the cache is an error
  naming `key`. Only the weights, config, tokenizer and generation files are fetched.
  """
  import huggingface_hub
  from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
  patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
  try:
    return huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns)
  except LocalEntryNotFoundError as err:
    raise ConfigError(f"{key}={repo_id!r} is no local directory, and as a Hugging Face Hub id "
                      "it is not in the local cache while the Hub cannot be reached "
                      "(HF_HUB_OFFLINE=1 or no network); fix the path, or download it first "
                      f"(`hf download {repo_id}`).") from err
  except (HfHubHTTPError, ValueError, OSError) as err:
    raise ConfigError(f"{key}={repo_id!r}: cannot be fetched from the Hugging Face Hub "
                      f"({type(err).__name__}: {str(err).splitlines()[0]}); check the id or "
                      "pass a local directory.") from err


def resolve_input(path: str, key: str) -> str:
  """A local path for the model, tokenizer or data file `path` names: local paths unchanged,
  URLs copied into the cache (`local_copy`), Hub ids from the Hugging Face cache (`hub_snapshot`)."""
  if not path:
    return path
  if is_url(path):
    return local_copy(path, key)
  if is_hub_id(path):
    return hub_snapshot(path, key)
  return path
