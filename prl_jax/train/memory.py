"""Per-device memory of a run, computed without allocating anything: `prl-jax memory --config FILE`.

The train state is the loop's own (`loop.init_state`, traced with `jax.eval_shape`, so no array
exists), placed with the loop's shardings (`sharding.param_partition_specs` +
`sharding.tree_shardings_like`) on a `jax.sharding.AbstractMesh` of any size. Every state leaf
then costs  prod(shard shape) x itemsize  on each device, exactly. On top of the state, each
phase of an RL step adds transient memory, which is estimated (not measured) by the formulas
below. Notation, all per device: R = mesh.data x mesh.fsdp (the ways a batch's rows are split),
S = mesh.tensor, T = P + N (prompt length task.max_prompt_len + rollout.max_new_tokens), d, f,
L, H, K, h_d, V the model's width, MLP width, layers, query heads, KV heads, head dim and
vocabulary (H, K, f, V divided by S where S divides them), c the compute dtype's bytes, C the
log-prob chunk (train.logprob_chunk, or N).

  one block, forward  W(t) = t c (2d + (2H + 2K) h_d + 3f) + H q t (8 + c)
                      (normed input and attention output, q/k/v and the attention context, gate/up
                      and their product; two float32 buffers of attention scores (raw, masked /
                      exponentiated) and the probabilities for q query rows at a time:
                      q = model.attention_chunk, or t without chunking, when the q t term
                      dominates at 4k tokens)
  kept per row for the backward pass, by model.remat:
                      full: L T d c (each block's input); none: L W(T);
                      dots: L T c ((2H + 2K) h_d + 2d + 2f) + L H T^2 4; dots_no_batch: the same
                      without the attention term
  logits              rows x C x V x 4 bytes x (2 forward, 3 with gradients)
  gathered weights    FSDP all-gathers one block's weights (and the output projection) in the
                      compute dtype while it runs: (params of a block + V d) c, twice with gradients
  rollout             the KV cache of one sampler call's rows, B' = rollout.max_rows (default all
                      B = prompts_per_step x n): L (B'/R) T K h_d 2 c, the
                      sampler's compute-dtype copy of the policy (policy params x c/4) plus its
                      replicated embedding table V d c, and the prompt prefill (B'/R) W(P)
  log-probs           the loop scores the batch m rows at a time (m = train.logprob_micro_batch_size,
                      default the micro-batch), one block at a time: (m/R) (T d c + W(T)) + logits(m/R)
  policy update       gradients (accumulator + one micro-batch's: 2 x policy params) + for
                      rows = micro/R: rows (kept + 2 W(T)) + logits(rows, with gradients)
  PRM / value update  the same with their params (rePIRL's reward-model update runs the rollouts
                      and their demonstrations in micro-batches too, one pool at a time)

peak = state + the largest phase. A plan fits when the peak is within USABLE_FRACTION of HBM: XLA
needs scratch space and its allocator fragments, which this model does not see.

The forward and backward terms (`forward_bytes`, `backward_bytes`) are checked against XLA's own
buffer assignment of the compiled log-prob and gradient functions on CPU
(tests/test_paper_configs.py); fusion differs on TPU and GPU, so read them as estimates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from prl_jax import sharding
from prl_jax.algorithms.recipes import Recipe
from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import ConfigError
from prl_jax.models import hf
from prl_jax.models.config import ModelConfig, preset
from prl_jax.models.transformer import init_params, logical_partition_specs
from prl_jax.run.state import init_state

GIB = 1024 ** 3
USABLE_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Target:
  """A machine to plan for: its device count and HBM per device (bytes)."""

  name: str
  devices: int
  hbm_bytes: float
  description: str


# Cloud TPU names count TensorCores: a v5p chip (one JAX device) has two, so v5p-64 is 32 chips
# and 64 chips are v5p-128 (Cloud TPU v5p docs: 95 GB HBM2e per chip). H100: 80 GB per GPU.
TARGETS: dict[str, Target] = {
    "v5p-64": Target("v5p-64", 32, 95e9, "32 TPU v5p chips, 95 GB HBM each"),
    "v5p-128": Target("v5p-128", 64, 95e9, "64 TPU v5p chips, 95 GB HBM each"),
    "8xH100": Target("8xH100", 8, 80e9, "8 NVIDIA H100, 80 GB HBM each"),
}


# ------------------------------------------------------------------------------------------------
# Model shapes and the abstract state.


def model_config(config: ml_collections.ConfigDict, source: str | None = None) -> ModelConfig:
  """Shapes the run will have: `source`'s (default init_from or model.hf_dir) config.json when it
  exists, else the preset's own shapes (vocabulary included), with the run's dtype and remat."""
  overrides = dict(dtype=config.model.dtype, remat=config.model.remat,
                   attention_chunk=config.model.attention_chunk)
  source = (config.init_from or config.model.hf_dir) if source is None else source
  path = os.path.join(source, "config.json") if source else ""
  if path and os.path.isfile(path):
    with open(path) as fh:
      return hf.config_from_hf(json.load(fh), **overrides)
  try:
    return preset(config.model.preset, **overrides)
  except ValueError as err:
    raise ConfigError(f"model.preset: {err}") from err


def _recipe(config) -> Recipe:
  try:
    return get_recipe(config.method)
  except ValueError as err:
    raise ConfigError(str(err)) from err


def abstract_state(config, model_cfg: ModelConfig, recipe: Recipe):
  """`loop.init_state` traced abstractly: a TrainState of ShapeDtypeStructs, nothing allocated."""
  # init_state reads only these fields of its RunContext; an empty hf_dir makes it build the
  # policy with init_params, which eval_shape traces without running.
  ctx = types.SimpleNamespace(config=config, model_cfg=model_cfg, hf_dir="")
  return jax.eval_shape(lambda: init_state(ctx, recipe))


def _abstract_mesh(shape: tuple[int, int, int]) -> jax.sharding.AbstractMesh:
  return jax.sharding.AbstractMesh(tuple(shape), sharding.MESH_AXES)


def _param_shardings(model_cfg: ModelConfig, mesh, rules) -> Any:
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      sharding.param_partition_specs(model_cfg, mesh, rules),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def _device_bytes(tree, shardings) -> int:
  """Bytes of `tree` on one device under `shardings` (a matching tree)."""
  leaves = jax.tree.leaves(tree)
  specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  return sum(int(np.prod(s.shard_shape(x.shape), dtype=np.int64)) * np.dtype(x.dtype).itemsize
             for x, s in zip(leaves, specs))


def _state_bytes(state, model_cfg: ModelConfig, mesh,
                 rules) -> tuple[dict[str, int], dict[str, str]]:
  """Per-device bytes of each part of the train state, placed as `RunContext.place_state` does,
  and the kind of each part: "params" and "optimizer" of a trained model, or "frozen"."""
  params = _param_shardings(model_cfg, mesh, rules)
  shardings = sharding.tree_shardings_like(state, params, NamedSharding(mesh, PartitionSpec()))
  parts, kinds = {}, {}
  for field in dataclasses.fields(state):
    value, where = getattr(state, field.name), getattr(shardings, field.name)
    if value is None:
      continue
    if hasattr(value, "opt_state"):  # a trained ModelState
      parts[f"{field.name}_params"] = _device_bytes(value.params, where.params)
      parts[f"{field.name}_opt"] = _device_bytes(value.opt_state, where.opt_state)
      trained = parts[f"{field.name}_opt"] > 0  # a model held without an optimizer is frozen
      kinds.update({f"{field.name}_params": "params" if trained else "frozen",
                    f"{field.name}_opt": "optimizer"})
    else:  # the reference, the step counter, the RNG key
      parts[field.name] = _device_bytes(value, where)
      kinds[field.name] = "frozen"
  return parts, kinds


def _frozen_prm_bytes(config, policy_cfg: ModelConfig, mesh, rules) -> tuple[int, ModelConfig]:
  """ER-PRM's frozen PRM, float32 params: its own config.json (algo.erprm.prm_dir) if present,
  else the policy's shapes."""
  prm_dir = config.algo.erprm.prm_dir
  prm_cfg = model_config(config, source=prm_dir) if prm_dir else policy_cfg
  shapes = jax.eval_shape(lambda: init_params(prm_cfg, jax.random.key(0)))
  return _device_bytes(shapes, _param_shardings(prm_cfg, mesh, rules)), prm_cfg


def _replicated_params(model_cfg: ModelConfig, mesh, rules) -> list[str]:
  """Parameters whose rule names mesh axes of size > 1 but that stay whole on every device (the
  axis does not divide them): the memory price of `logical_to_mesh_spec`'s fallback."""
  logical = sharding.describe(logical_partition_specs(model_cfg))
  resolved = sharding.describe(sharding.param_partition_specs(model_cfg, mesh, rules))
  table = dict(reversed(rules))  # the first rule for a name wins
  out = []
  for name, names in logical.items():
    wanted = set()
    for axis in names:
      rule = table.get(axis) if axis else None
      wanted.update((rule,) if isinstance(rule, str) else (rule or ()))
    split = {a for a in wanted if mesh.shape[a] > 1}
    used = {a for entry in resolved[name] if entry
            for a in ((entry,) if isinstance(entry, str) else entry)}
    if split - used:
      out.append(name)
  return out


# ------------------------------------------------------------------------------------------------
# Transient memory of each phase (the formulas of the module docstring).


@dataclasses.dataclass(frozen=True)
class _Shapes:
  """The model sizes the formulas use, per device (split by the tensor axis where it divides)."""

  d: int
  f: int
  layers: int
  heads: int
  kv_heads: int
  head_dim: int
  vocab: int
  c: int  # compute dtype bytes
  attention_chunk: int = 0  # queries attended at a time (0: all)

  @classmethod
  def of(cls, cfg: ModelConfig, tensor: int) -> "_Shapes":
    split = lambda n: n // tensor if n % tensor == 0 else n
    return cls(d=cfg.hidden_size, f=split(cfg.intermediate_size), layers=cfg.num_layers,
               heads=split(cfg.num_heads), kv_heads=split(cfg.num_kv_heads),
               head_dim=cfg.resolved_head_dim, vocab=split(cfg.vocab_size),
               c=jnp.dtype(cfg.dtype).itemsize, attention_chunk=cfg.attention_chunk)

  def queries(self, t: int) -> int:
    """Query rows whose attention scores are alive at once (model.attention_chunk)."""
    return min(self.attention_chunk, t) if self.attention_chunk > 0 else t

  def block_forward(self, t: int) -> int:
    """W(t): one decoder block's live activations for one row of t tokens."""
    per_token = self.c * (2 * self.d + (2 * self.heads + 2 * self.kv_heads) * self.head_dim
                          + 3 * self.f)
    return t * per_token + self.heads * self.queries(t) * t * (8 + self.c)

  def kept(self, t: int, remat: str) -> int:
    """Activations kept for the backward pass, all layers, one row."""
    if remat == "full":
      return self.layers * t * self.d * self.c
    if remat == "none":
      return self.layers * self.block_forward(t)
    dots = t * self.c * ((2 * self.heads + 2 * self.kv_heads) * self.head_dim + 2 * self.d
                         + 2 * self.f)
    # Chunked attention is recomputed chunk by chunk: no probabilities are kept.
    attention = self.heads * t * t * 4 if remat == "dots" and self.queries(t) == t else 0
    return self.layers * (dots + attention)

  def logits(self, rows: int, chunk: int, grads: bool) -> int:
    return rows * chunk * self.vocab * 4 * (3 if grads else 2)

  def gathered(self, cfg: ModelConfig, grads: bool) -> int:
    block = (cfg.num_params() - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings
                                                                     else 2)) // cfg.num_layers
    return (block + cfg.vocab_size * cfg.hidden_size) * self.c * (2 if grads else 1)


def forward_bytes(cfg: ModelConfig, rows: int, seq_len: int, chunk: int, tensor: int = 1) -> int:
  """Transient bytes of a teacher-forced log-prob pass over `rows` rows of `seq_len` tokens on
  one device: rows (T d c + W(T)) + logits(rows) (module docstring)."""
  s = _Shapes.of(cfg, tensor)
  return rows * (seq_len * s.d * s.c + s.block_forward(seq_len)) + s.logits(rows, chunk, False)


def backward_bytes(cfg: ModelConfig, rows: int, seq_len: int, chunk: int,
                   tensor: int = 1) -> int:
  """Activation bytes of a forward + backward pass over `rows` rows (gradients excluded):
  rows (kept + 2 W(T)) + logits(rows, with gradients) (module docstring)."""
  s = _Shapes.of(cfg, tensor)
  return (rows * (s.kept(seq_len, cfg.remat) + 2 * s.block_forward(seq_len))
          + s.logits(rows, chunk, True))


def _rows(total: int, ways: int, what: str) -> int:
  if total % ways:
    raise ConfigError(f"The mesh splits batches {ways} ways (mesh.data x mesh.fsdp), which does "
                      f"not divide the {what} of {total} responses; change mesh.*, "
                      "rollout.prompts_per_step or train.micro_batch_size.")
  return total // ways


def _update_bytes(cfg: ModelConfig, rows: int, seq: int, chunk: int, tensor: int,
                  params: int) -> tuple[int, int]:
  """(activations with the gathered weights, gradients) of one micro-batch of `rows` rows."""
  s = _Shapes.of(cfg, tensor)
  return backward_bytes(cfg, rows, seq, chunk, tensor) + s.gathered(cfg, True), 2 * params


# ------------------------------------------------------------------------------------------------
# The report.


def memory_report(config: ml_collections.ConfigDict, *, devices: int | None = None,
                  mesh_shape: tuple[int, int, int] | None = None,
                  hbm_bytes: float | None = None) -> dict:
  """Per-device bytes of the run `config` describes, on `devices` abstract devices.

  Args:
    config: a full run config (configs/base.py keys).
    devices: device count (default: `prod(mesh_shape)`, else mesh.num_devices or the devices
      this process sees); the mesh.* sizes of `config` are resolved against it.
    mesh_shape: explicit (data, fsdp, tensor) sizes instead of the config's mesh.*.
    hbm_bytes: memory per device; when given, the report says whether the peak fits.

  Returns:
    A dict: `devices`, `mesh` {data, fsdp, tensor}, `model` (name, num_params), `state` (bytes
    of each state part), `params` / `optimizer` / `frozen` (trained params, their optimizer
    states, everything else held all run: reference, frozen PRM, counters), `persistent` (their
    sum), `gradients` and `activations` (policy update, one micro-batch), `phases` (transient
    bytes of rollout, log-probs and each update), `peak`, `peak_phase`, `replicated_params`,
    and with `hbm_bytes`: `hbm_bytes`, `fits`.

  Raises:
    ConfigError: the mesh does not match the device count or does not split the batches.
  """
  if mesh_shape is not None:
    mesh_shape = tuple(int(x) for x in mesh_shape)
    if len(mesh_shape) != 3:
      raise ConfigError(f"mesh_shape must be (data, fsdp, tensor), got {mesh_shape}.")
    if devices is not None and math.prod(mesh_shape) != devices:
      raise ConfigError(f"mesh_shape {mesh_shape} has {math.prod(mesh_shape)} devices, not "
                        f"{devices}.")
    devices = math.prod(mesh_shape)
  devices = int(devices or config.mesh.num_devices or jax.device_count())
  sizes = mesh_shape or (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  try:
    shape = sharding.resolve_mesh_shape(*sizes, devices)
  except ValueError as err:
    raise ConfigError(f"mesh.*: {err}") from err
  mesh = _abstract_mesh(shape)
  try:
    rules = sharding.check_rules(config.mesh.rules)
  except (TypeError, ValueError) as err:
    raise ConfigError(f"mesh.rules: {err}") from err
  data, fsdp, tensor = shape
  r, t = config.rollout, config.train
  batch = r.prompts_per_step * r.n
  mini = t.mini_batch_size or batch
  micro = t.micro_batch_size or mini
  ways = data * fsdp
  rows_batch = _rows(batch, ways, "batch")
  rows_micro = _rows(micro, ways, "micro-batch")
  rows_logprob = _rows(t.logprob_micro_batch_size or micro, ways, "log-prob micro-batch")

  model_cfg = model_config(config)
  recipe = _recipe(config)
  state = abstract_state(config, model_cfg, recipe)
  parts, kinds = _state_bytes(state, model_cfg, mesh, rules)
  prm_cfg = None
  if recipe.frozen_prm:
    parts["frozen_prm"], prm_cfg = _frozen_prm_bytes(config, model_cfg, mesh, rules)
    kinds["frozen_prm"] = "frozen"
  total = lambda kind: sum(v for k, v in parts.items() if kinds[k] == kind)
  persistent = sum(parts.values())

  s = _Shapes.of(model_cfg, tensor)
  prompt, new = config.task.max_prompt_len, r.max_new_tokens
  seq = prompt + new
  chunk = t.logprob_chunk if 0 < t.logprob_chunk < new else new
  policy_params = parts["policy_params"]

  rows_sample = _rows(min(batch, r.max_rows or batch), ways, "rollout.max_rows")
  kv_cache = model_cfg.num_layers * rows_sample * seq * s.kv_heads * s.head_dim * 2 * s.c
  phases = {
      "rollout": (kv_cache + policy_params * s.c // 4 + model_cfg.vocab_size * model_cfg.hidden_size
                  * s.c + rows_sample * s.block_forward(prompt)),
      "logprobs": (forward_bytes(model_cfg, rows_logprob, seq, chunk, tensor)
                   + s.gathered(model_cfg, False)),
  }
  if prm_cfg is not None:  # the frozen PRM scores the batch like a log-prob pass
    phases["prm_scores"] = (forward_bytes(prm_cfg, rows_logprob, seq, chunk, tensor)
                            + _Shapes.of(prm_cfg, tensor).gathered(prm_cfg, False))
  activations, gradients = _update_bytes(model_cfg, rows_micro, seq, chunk, tensor,
                                         policy_params)
  phases["policy_update"] = activations + gradients
  if recipe.prm is not None and kinds.get("prm_params") == "params":
    # Both PRM updates run micro-batches (rePIRL's over the rollouts and their demonstrations,
    # its self-normalised weights computed inside each pool).
    phases["prm_update"] = sum(_update_bytes(model_cfg, rows_micro, seq, chunk, tensor,
                                             parts["prm_params"]))
  if "value_params" in parts:
    phases["value_update"] = sum(_update_bytes(model_cfg, rows_micro, seq, chunk, tensor,
                                               parts["value_params"]))
  peak_phase = max(phases, key=phases.get)

  report = {
      "devices": devices,
      "mesh": dict(zip(sharding.MESH_AXES, shape)),
      "method": config.method,
      "model": {"name": config.init_from or config.model.hf_dir or config.model.preset,
                "num_params": model_cfg.num_params()},
      "rows": {"batch": rows_batch, "micro_batch": rows_micro, "logprob_micro_batch": rows_logprob,
               "sequence": seq},
      "state": parts,
      "params": total("params"),
      "optimizer": total("optimizer"),
      "frozen": total("frozen"),
      "persistent": persistent,
      "gradients": gradients,
      "activations": activations,
      "phases": phases,
      "peak_phase": peak_phase,
      "peak": persistent + phases[peak_phase],
      "replicated_params": _replicated_params(model_cfg, mesh, rules),
  }
  if hbm_bytes is not None:
    report["hbm_bytes"] = float(hbm_bytes)
    report["fits"] = report["peak"] <= USABLE_FRACTION * hbm_bytes
  return report


def target_reports(config, targets=None) -> dict[str, dict]:
  """`memory_report` on each named machine of TARGETS (default: all of them)."""
  targets = targets or list(TARGETS)
  return {name: memory_report(config, devices=TARGETS[name].devices,
                              hbm_bytes=TARGETS[name].hbm_bytes) for name in targets}


def format_table(reports: dict[str, dict]) -> str:
  """Rows of GiB per device, one column per report."""
  names = list(reports)
  first = reports[names[0]]
  lines = [f"method={first['method']}  model={first['model']['name']} "
           f"({first['model']['num_params'] / 1e9:.2f}B params)  sequence="
           f"{first['rows']['sequence']} tokens  (GiB per device; phases are estimates, see "
           "prl_jax/train/memory.py)"]
  gib = lambda b: f"{b / GIB:.2f}"
  rows = [
      ("devices", lambda r: str(r["devices"])),
      ("mesh data,fsdp,tensor", lambda r: ",".join(str(v) for v in r["mesh"].values())),
      ("rows per device: batch/micro", lambda r: f"{r['rows']['batch']}/{r['rows']['micro_batch']}"),
      ("trained params", lambda r: gib(r["params"])),
      ("optimizer state", lambda r: gib(r["optimizer"])),
      ("frozen copies", lambda r: gib(r["frozen"])),
      ("= state", lambda r: gib(r["persistent"])),
      ("update: gradients", lambda r: gib(r["gradients"])),
      ("update: activations", lambda r: gib(r["activations"])),
  ]
  phases = []
  for r in reports.values():
    phases += [p for p in r["phases"] if p not in phases]
  rows += [(f"phase {p}", (lambda p: lambda r: gib(r["phases"].get(p, 0)))(p)) for p in phases]
  rows += [("peak (state + largest phase)", lambda r: f"{gib(r['peak'])} {r['peak_phase']}")]
  if all("hbm_bytes" in r for r in reports.values()):
    rows += [("HBM", lambda r: gib(r["hbm_bytes"])),
             (f"fits (peak <= {USABLE_FRACTION:.0%} HBM)",
              lambda r: "yes" if r["fits"] else "NO")]
  width = max(len(label) for label, _ in rows) + 2
  cols = [max(len(n), *(len(fn(reports[n])) for _, fn in rows)) + 2 for n in names]
  lines.append(" " * width + "".join(n.rjust(w) for n, w in zip(names, cols)))
  for label, fn in rows:
    lines.append(label.ljust(width) + "".join(fn(reports[n]).rjust(w)
                                              for n, w in zip(names, cols)))
  replicated = sorted({p for r in reports.values() for p in r["replicated_params"]})
  if replicated:
    lines.append("not split (a mesh axis does not divide them): " + ", ".join(replicated))
  return "\n".join(lines)
