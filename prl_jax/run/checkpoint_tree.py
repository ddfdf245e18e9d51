"""What a checkpoint stores and restores into: abstract restore targets, typed PRNG keys as raw
data (Orbax stores arrays, not key types), and metadata made JSON-safe with a clear error."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------------------------
# Restore targets and typed keys.


def abstract_like(state: Any, shardings: Any = None) -> Any:
  """Returns the restore target for `state`: a pytree of `jax.ShapeDtypeStruct` with shardings.

  Args:
    state: a pytree of arrays (or of `ShapeDtypeStruct`s, e.g. from `jax.eval_shape`).
    shardings: `None` to keep each leaf's own `.sharding` (jax.Arrays carry one); a single
      `jax.sharding.Sharding` applied to every leaf; or a pytree of shardings matching `state`.
  """
  if shardings is None:
    return jax.tree.map(lambda x: _sds(x, getattr(x, "sharding", None)), state)
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: _sds(x, shardings), state)
  return jax.tree.map(_sds, state, shardings)


def _sds(x: Any, sharding: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _is_key(x: Any) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def keys_to_data(state: Any) -> Any:
  """Replaces typed PRNG key leaves with their uint32 key data (what gets written)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def storage_target(target: Any) -> Any:
  """The target as stored on disk: key leaves become uint32 key-data structs, same sharding.

  A key array of shape S has key data of shape S + (k,); a `NamedSharding` over S shards the
  leading axes of the data the same way and replicates the trailing one.
  """

  def to_storage(x):
    if not _is_key(x):
      return x
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)

  return jax.tree.map(to_storage, target)


def data_to_keys(restored: Any, target: Any) -> Any:
  """Re-wraps key data where the target leaf is a typed key, with the target's key impl."""

  def to_key(x, t):
    if not _is_key(t):
      return x
    # The impl of a key dtype, through public API only: an empty array of that dtype.
    impl = jax.random.key_impl(jnp.zeros((0,), t.dtype))
    return jax.random.wrap_key_data(x, impl=impl)

  return jax.tree.map(to_key, restored, target)


# ----------------------------------------------------------------------------------------------
# JSON meta.


def to_json(obj: Any, where: str = "meta") -> Any:
  """Converts `obj` to plain JSON types (numpy/jax scalars, tuples, ConfigDicts included).

  Raises a TypeError naming the offending entry, because Orbax's own error does not say which.
  """
  if obj is None or isinstance(obj, (bool, str, int)):
    return obj
  if isinstance(obj, float):
    return obj
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
    return to_json(obj.to_dict(), where)
  if isinstance(obj, Mapping):
    return {str(k): to_json(v, f"{where}[{k!r}]") for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
  if isinstance(obj, (np.ndarray, np.generic, jax.Array)) and not _is_key(obj):
    return np.asarray(obj).tolist()
  raise TypeError(
      f"{where} has a value of type {type(obj).__name__} that cannot be stored as JSON; "
      "put arrays in the `state` pytree and keep `meta` to numbers, strings, lists and dicts."
  )


