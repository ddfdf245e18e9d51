"""Model configuration of the Llama / Qwen2 decoder family, with named presets.

The config is a frozen dataclass so it can be a static argument of jitted functions. It is
validated on construction: a shape that cannot work fails here with a message, not deep inside XLA.
"""

from __future__ import annotations

import dataclasses
from typing import Any

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("chunked", "fused")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of a decoder-only transformer (HF Llama / Qwen2 / Qwen3 subset).

  Attributes:
    vocab_size: rows of the embedding table.
    hidden_size: model width d.
    num_layers: decoder blocks, scanned with `nn.scan`.
    num_heads: query heads H.
    num_kv_heads: key/value heads (grouped-query attention when < H); must divide H.
    intermediate_size: SwiGLU hidden width.
    head_dim: per-head width; defaults to hidden_size // num_heads.
    rope_theta: rotary base frequency.
    rope_scaling: None or a dict in HF's format; "llama3" (Llama 3.1/3.2) is supported.
    rms_norm_eps: epsilon of RMSNorm.
    qkv_bias: biases on the q/k/v projections (Qwen2).
    qk_norm: RMSNorm over head_dim on every query and key head before RoPE (Qwen3).
    tie_embeddings: the output projection is the embedding table transposed.
    max_position_embeddings: longest sequence the model was trained for (informational + checks).
    dtype: compute dtype ("float32", "bfloat16"); parameters are always stored in float32.
    remat: rematerialisation policy of each block, one of REMAT_POLICIES.
    attention_chunk: without a KV cache (training, log-probs), attend `attention_chunk` queries
      at a time so only [chunk, T] scores are alive instead of [T, T] (0: all at once). The
      result is the same; the chunks are recomputed for the backward pass.
    scan_unroll: layers per iteration of the layer scan; 0 (default) unrolls stacks of at most
      8 layers fully without remat and scans deeper ones, or any under remat, one layer at a time. Unrolled, the backward pass
      reads each layer's saved activations directly instead of stacking them into [layers, ...]
      buffers (15% of the mini train step's kernel time); scanned, compile time stays flat in
      depth. Parameters are stacked over "layers" either way.
    attention_impl: without a KV cache, "chunked" (the einsum form above, every backend) or
      "fused" (`jax.nn.dot_product_attention`: cuDNN's fused kernel on NVIDIA GPUs in 16-bit,
      XLA's composition elsewhere; attention_chunk is then unused).
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  intermediate_size: int
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rope_scaling: Any = None
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = False
  qk_norm: bool = False
  tie_embeddings: bool = False
  max_position_embeddings: int = 4096
  dtype: str = "float32"
  remat: str = "none"
  attention_chunk: int = 0
  attention_impl: str = "chunked"
  scan_unroll: int = 0

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                 "intermediate_size"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}.")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(
          f"ModelConfig: num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}; "
          "choose a divisor or set head_dim explicitly.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig: num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads} "
          "(grouped-query attention shares each KV head among num_heads/num_kv_heads query heads).")
    if self.resolved_head_dim % 2:
      raise ValueError(f"ModelConfig: head_dim={self.resolved_head_dim} must be even for rotary "
                       "embeddings.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat={self.remat!r}; choose one of {REMAT_POLICIES}.")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"ModelConfig.attention_impl={self.attention_impl!r}; choose one of "
                       f"{ATTENTION_IMPLS}.")
    if self.scan_unroll < 0:
      raise ValueError(f"ModelConfig.scan_unroll must be >= 0 (0: automatic), got "
                       f"{self.scan_unroll}.")
    if self.attention_chunk < 0:
      raise ValueError(f"ModelConfig.attention_chunk must be >= 0 (0: no chunking), got "
                       f"{self.attention_chunk}.")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"ModelConfig.dtype={self.dtype!r}; choose float32, bfloat16 or float16.")
    if self.rope_scaling is not None:
      kind = dict(self.rope_scaling).get("rope_type", dict(self.rope_scaling).get("type"))
      if kind not in ("llama3", "default"):
        raise ValueError(f"ModelConfig.rope_scaling type {kind!r} is not supported "
                         "(supported: 'llama3', 'default').")
      # A dict is unhashable; freeze it so the config stays a valid static jit argument.
      object.__setattr__(self, "rope_scaling", tuple(sorted(dict(self.rope_scaling).items())))

  @property
  def resolved_scan_unroll(self) -> int:
    """Layers per scan iteration (`scan_unroll`, with 0 resolved)."""
    if self.scan_unroll:
      return min(self.scan_unroll, self.num_layers)
    # Remat is a memory choice: unrolled, XLA keeps more of the recomputed activations alive at
    # once (the tiny preset's backward temp +50% under remat="full"), so remat stays scanned.
    return self.num_layers if self.num_layers <= 8 and self.remat == "none" else 1

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Exact parameter count of the module this config builds."""
    d, hd, f = self.hidden_size, self.resolved_head_dim, self.intermediate_size
    q = d * self.num_heads * hd
    kv = 2 * d * self.num_kv_heads * hd
    bias = (self.num_heads + 2 * self.num_kv_heads) * hd if self.qkv_bias else 0
    o = self.num_heads * hd * d
    mlp = 3 * d * f
    norms = 2 * d + (2 * hd if self.qk_norm else 0)
    per_layer = q + kv + bias + o + mlp + norms
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * per_layer + embed + d


_LLAMA32_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

# Real shapes from the published config.json files; "tiny" and "mini" are for CPU tests and runs.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 intermediate_size=128, rope_theta=10000.0, max_position_embeddings=1024),
    # The process-reward lab's policy (configs/lab): ~0.8M parameters, a few seconds per RL step.
    "lab": dict(vocab_size=512, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                intermediate_size=384, rope_theta=10000.0, max_position_embeddings=256),
    # The lab's shape with two more layers: room after a line's value is computed for a PRM to
    # compare it with the value written (benchmarks/prm_capacity.py).
    "lab_deep": dict(vocab_size=512, hidden_size=128, num_layers=6, num_heads=4, num_kv_heads=2,
                     intermediate_size=384, rope_theta=10000.0, max_position_embeddings=256),
    "mini": dict(vocab_size=512, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4,
                 intermediate_size=1024, rope_theta=10000.0, max_position_embeddings=2048),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14,
                         num_kv_heads=2, intermediate_size=4864, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                         max_position_embeddings=32768),
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12,
                         num_kv_heads=2, intermediate_size=8960, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                         max_position_embeddings=32768),
    "qwen2.5-3b": dict(vocab_size=151936, hidden_size=2048, num_layers=36, num_heads=16,
                       num_kv_heads=2, intermediate_size=11008, rope_theta=1000000.0,
                       rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                       max_position_embeddings=32768),
    "qwen2.5-7b": dict(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                       num_kv_heads=4, intermediate_size=18944, rope_theta=1000000.0,
                       rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=False,
                       max_position_embeddings=32768),
    "qwen2.5-math-7b": dict(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                            num_kv_heads=4, intermediate_size=18944, rope_theta=10000.0,
                            rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=False,
                            max_position_embeddings=4096),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
                         num_kv_heads=8, intermediate_size=8192, head_dim=64, rope_theta=500000.0,
                         rope_scaling=_LLAMA32_ROPE, rms_norm_eps=1e-5, tie_embeddings=True,
                         max_position_embeddings=131072),
    "llama-3.2-3b": dict(vocab_size=128256, hidden_size=3072, num_layers=28, num_heads=24,
                         num_kv_heads=8, intermediate_size=8192, head_dim=128, rope_theta=500000.0,
                         rope_scaling=_LLAMA32_ROPE, rms_norm_eps=1e-5, tie_embeddings=True,
                         max_position_embeddings=131072),
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32,
                         num_kv_heads=8, intermediate_size=14336, head_dim=128,
                         rope_theta=500000.0,
                         rope_scaling={**_LLAMA32_ROPE, "factor": 8.0},
                         rms_norm_eps=1e-5, tie_embeddings=False, max_position_embeddings=131072),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                         num_kv_heads=3, intermediate_size=1536, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192),
    # Qwen3 base models (config.json of Qwen/Qwen3-*-Base): q/k norms, no biases, head_dim 128.
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, num_layers=28, num_heads=16,
                       num_kv_heads=8, intermediate_size=3072, head_dim=128,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, qk_norm=True,
                       tie_embeddings=True, max_position_embeddings=32768),
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, num_layers=28, num_heads=16,
                       num_kv_heads=8, intermediate_size=6144, head_dim=128,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, qk_norm=True,
                       tie_embeddings=True, max_position_embeddings=32768),
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, num_layers=36, num_heads=32,
                     num_kv_heads=8, intermediate_size=9728, head_dim=128,
                     rope_theta=1000000.0, rms_norm_eps=1e-6, qk_norm=True,
                     tie_embeddings=True, max_position_embeddings=32768),
}


def preset(name: str, **overrides) -> ModelConfig:
  """The named preset, with optional field overrides (e.g. dtype="bfloat16", remat="full")."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; known presets: {sorted(PRESETS)}.")
  return ModelConfig(**{**PRESETS[name], **overrides})
