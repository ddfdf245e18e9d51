"""Device mesh, logical-axis rules as data, and shardings of params, batches and optimizer state.

The model names every parameter dimension logically ("vocab", "embed", "heads", ...; see
`prl_jax.models.transformer`). A *rule* maps a logical name to zero or more mesh axes; the rules
are plain data (`DEFAULT_RULES`, the config's `mesh.rules`), so a run can swap them without
touching model code:

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    params = init_sharded_params(cfg, key, mesh)           # created already sharded
    batch = jax.device_put(tokens, batch_sharding(mesh))   # rows over ("data", "fsdp")

Mesh axes:
  data:   pure data parallelism (params replicated, batch split).
  fsdp:   batch split *and* params split along "embed" (ZeRO-3 style; gathered per use by XLA).
  tensor: Megatron-style split of heads / MLP width / vocab.

Resolution of one parameter (`logical_to_mesh_spec`): each dimension takes the mesh axes of the
first rule naming its logical axis; a mesh axis already used by an earlier dimension is dropped
(an axis can split only one dimension), and if the remaining axes' total size does not divide the
dimension, that dimension is replicated instead (e.g. 2 KV heads on a tensor axis of 4). Falling
back is what lets one rule set serve every preset; the price is memory, never correctness.

Activations: the model's `nn.with_logical_constraint` calls only act inside
`nn.logical_axis_rules(...)`, and with this flax version that context also constrains the boxed
kernels that `nn.scan`'d DenseGeneral layers re-create during `apply`, where they do not fit.
So the code here places params and batches and lets XLA propagate, and `constrain` applies a
rule-resolved constraint where one is wanted (the sampler's decode) without that context.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from prl_jax.models.config import ModelConfig
from prl_jax.models.transformer import init_params, logical_partition_specs

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, Any]]

# (logical axis, mesh axes). Batch-like axes split over both data-parallel axes; "embed" is the
# FSDP axis of every weight; the Megatron tensor axis takes heads, MLP width and vocab.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
)


# ------------------------------------------------------------------------------------------------
# Mesh.


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with a single -1 replaced so the product equals `num_devices`.

  Raises ValueError when a size is 0 or below -1, when more than one size is -1, or when the
  sizes cannot multiply to the device count.
  """
  sizes = {"data": int(data), "fsdp": int(fsdp), "tensor": int(tensor)}
  bad = {k: v for k, v in sizes.items() if v == 0 or v < -1}
  if bad:
    raise ValueError(f"Mesh axis sizes must be positive or -1 (fill), got {bad}.")
  fill = [k for k, v in sizes.items() if v == -1]
  if len(fill) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {fill} in {sizes}.")
  known = math.prod(v for v in sizes.values() if v != -1)
  if fill:
    if num_devices % known:
      raise ValueError(f"Mesh {sizes}: the fixed axes multiply to {known}, which does not divide "
                       f"the {num_devices} devices, so '{fill[0]}' cannot be filled.")
    sizes[fill[0]] = num_devices // known
  elif known != num_devices:
    raise ValueError(f"Mesh {sizes} has {known} devices but {num_devices} are available; make the "
                     "sizes multiply to the device count or set one axis to -1.")
  return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[Any] | None = None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh over `devices` (default: all), axes of type Auto.

  Auto axes let XLA's partitioner propagate shardings from the params and batch we place, which
  is what the logical constraints inside the model expect.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


# ------------------------------------------------------------------------------------------------
# Logical names -> PartitionSpec.


def _rule_lookup(rules: Rules) -> dict[str, tuple[str, ...]]:
  """First rule wins for each logical name; mesh axes normalised to a tuple."""
  table: dict[str, tuple[str, ...]] = {}
  for logical, axes in rules:
    if logical in table:
      continue
    if axes is None:
      table[logical] = ()
    elif isinstance(axes, str):
      table[logical] = (axes,)
    else:
      table[logical] = tuple(axes)
  return table


def logical_to_mesh_spec(names: Iterable[str | None], shape: Sequence[int], mesh: Mesh,
                         rules: Rules = DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec of an array of `shape` whose dimensions carry logical `names`.

  A dimension takes its rule's mesh axes minus those already used by earlier dimensions; it is
  replicated when that set is empty or its total size does not divide the dimension. A logical
  name with no rule is an error (a silently replicated axis is the usual sharding bug).
  """
  names = tuple(names)
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} logical names {names} for an array of shape {tuple(shape)}.")
  table = _rule_lookup(rules)
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(f"Logical axis {name!r} has no sharding rule; add ({name!r}, mesh axes or "
                       f"None) to the rules. Known: {sorted(table)}.")
    unknown = [a for a in table[name] if a not in mesh.shape]
    if unknown:
      raise ValueError(f"Rule for {name!r} names mesh axes {unknown} absent from the mesh "
                       f"{dict(mesh.shape)}.")
    axes = tuple(a for a in table[name] if a not in used)
    ways = math.prod(mesh.shape[a] for a in axes)
    if not axes or size % ways:
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def check_rules(rules: Any) -> tuple[tuple[str, Any], ...]:
  """`rules` (the config's `mesh.rules`) validated and as nested tuples.

  Each rule is (logical name, None | a mesh axis | a sequence of mesh axes) with axes from
  `MESH_AXES`, and every logical name the model uses must have one. Raises ValueError naming the
  bad rule, so a typo fails before anything is built rather than as a replicated weight.
  """
  out = []
  for i, rule in enumerate(rules):
    if isinstance(rule, str) or len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"rule {i} is {rule!r}; write (logical name, mesh axes), e.g. "
                       "('embed', 'fsdp') or ('batch', ('data', 'fsdp')) or ('length', None).")
    name, axes = rule
    listed = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    unknown = [a for a in listed if a not in MESH_AXES]
    if unknown:
      raise ValueError(f"rule {i} ({name!r}) names mesh axes {unknown}; the mesh axes are "
                       f"{MESH_AXES}.")
    out.append((name, axes if axes is None or isinstance(axes, str) else tuple(axes)))
  missing = sorted({n for n, _ in DEFAULT_RULES} - {n for n, _ in out})
  if missing:
    raise ValueError(f"no rule for the logical axes {missing}; every axis the model names needs "
                     "one (None replicates it).")
  return tuple(out)


def hashable_rules(rules: Rules) -> tuple[tuple[str, Any], ...]:
  """`rules` as nested tuples (usable as a cache key or a static jit argument)."""
  return tuple((name, axes if axes is None or isinstance(axes, str) else tuple(axes))
               for name, axes in rules)


@functools.lru_cache(maxsize=64)
def _param_specs(cfg: ModelConfig, mesh_axes: tuple, rules: tuple) -> Any:
  logical = logical_partition_specs(cfg)
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  mesh = jax.sharding.AbstractMesh(tuple(size for _, size in mesh_axes),
                                   tuple(name for name, _ in mesh_axes))
  return jax.tree.map(lambda names, s: logical_to_mesh_spec(tuple(names), s.shape, mesh, rules),
                      logical, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_partition_specs(cfg: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """Pytree of PartitionSpecs for the param tree of `cfg` (no memory used; cached)."""
  return _param_specs(cfg, tuple(mesh.shape.items()), hashable_rules(rules))


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """Pytree of NamedShardings for the param tree of `cfg` under `rules` on `mesh`."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      param_partition_specs(cfg, mesh, rules),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  """Leading (row) dimension over the mesh axes of logical "batch"; other dimensions replicated."""
  axes = _rule_lookup(rules).get("batch", ())
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
  """How many ways `batch_sharding` splits the rows: a batch must be a multiple of this."""
  return math.prod(mesh.shape[a] for a in _rule_lookup(rules).get("batch", ()))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def constrain(x: jax.Array, names: Sequence[str | None], rules: Rules = DEFAULT_RULES) -> jax.Array:
  """`x` constrained to the sharding its logical `names` resolve to on the current mesh
  (`jax.set_mesh`); a no-op outside a mesh. Indivisible dimensions are left replicated.

  Unlike flax's `nn.with_logical_constraint`, this needs no `nn.logical_axis_rules` context,
  which flax also applies to the model's parameter boxes inside `nn.scan` (where they do not fit).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_mesh_spec(names, x.shape, mesh, rules))


# ------------------------------------------------------------------------------------------------
# Placing params.


def init_sharded_params(cfg: ModelConfig, key: jax.Array, mesh: Mesh,
                        rules: Rules = DEFAULT_RULES) -> Any:
  """Random params of `cfg` created directly in their shardings (no full copy on one device).

  The init is jitted with `out_shardings`, so XLA computes each shard where it lives; that is
  what makes models larger than one device's memory initialisable at all. Logical constraints are
  switched off while tracing the init: flax applies them to kernels before reshaping them, where
  they do not fit; `out_shardings` alone places every param.
  """
  shardings = param_shardings(cfg, mesh, rules)
  with nn.logical_axis_rules(()):
    return jax.jit(lambda k: init_params(cfg, k), out_shardings=shardings)(key)


# ------------------------------------------------------------------------------------------------
# Shardings of trees that contain params (optimizer state, train state).


def _path_key(path) -> tuple:
  """A key path as a tuple of plain names/indices (so paths from different trees compare)."""
  out = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        out.append(getattr(entry, attr))
        break
    else:
      out.append(str(entry))
  return tuple(out)


def _fits(sharding: NamedSharding, shape: Sequence[int]) -> bool:
  spec = tuple(sharding.spec)
  if len(spec) > len(shape):
    return False
  for axes, size in zip(spec, shape):
    if axes is None:
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    if size % math.prod(sharding.mesh.shape[a] for a in axes):
      return False
  return True


def tree_shardings_like(tree: Any, param_shardings_tree: Any, default: NamedSharding) -> Any:
  """Shardings for `tree` (concrete or abstract) that follow the params it contains.

  A leaf whose key path *ends with* a param's key path, and whose shape admits that param's
  sharding, gets the param's sharding: this covers the policy params inside a train state and
  the param-shaped moments of any optax state (Adam's mu/nu, masked or chained states), whose
  paths end in the same names. Everything else (step counters, scalars, RNG keys) gets `default`,
  normally replicated.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(param_shardings_tree)
  by_path = {_path_key(p): s for p, s in flat}
  longest = max((len(p) for p in by_path), default=0)

  def choose(path, leaf):
    key = _path_key(path)
    shape = getattr(leaf, "shape", ())
    for start in range(max(len(key) - longest, 0), len(key)):
      sharding = by_path.get(key[start:])
      if sharding is not None and len(shape) == len(sharding.spec) and _fits(sharding, shape):
        return sharding
    return default

  return jax.tree_util.tree_map_with_path(choose, tree)


def describe(shardings: Any) -> dict[str, PartitionSpec]:
  """{"params/layers/attn/q/kernel": PartitionSpec(...), ...}: a flat, printable view."""
  flat, _ = jax.tree_util.tree_flatten_with_path(
      shardings, is_leaf=lambda x: isinstance(x, (NamedSharding, PartitionSpec)))
  return {"/".join(str(k) for k in _path_key(p)): (s.spec if isinstance(s, NamedSharding) else s)
          for p, s in flat}


