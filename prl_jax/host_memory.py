"""Keep freed host memory mapped, so XLA's CPU buffers are not faulted in again on every call.

On the CPU backend XLA allocates a program's temporaries and outputs with `malloc` on every
execution and frees them at its end. glibc's defaults give large blocks back to the kernel: a block
above the mmap threshold is its own `mmap` and is unmapped on `free`, and free memory at a heap's
top is trimmed. The next call then takes a page fault and a zero-fill for every 4 KiB page again.

`keep_freed_memory()` sets, through `mallopt`, an mmap threshold of 1 GiB (blocks below it come
from a heap) and no trimming below 2 GiB (`M_TRIM_THRESHOLD`), so freed pages stay mapped and are
reused; resident memory then stays at its peak between steps. That is enough while a program's
buffers fit a worker thread's arena, whose heaps hold at most 64 MB each: the demo's tiny
policy steps with no faults instead of ~18,000 a step. Larger buffers (the mini preset's update:
~200,000 faults a step) are still mapped afresh there, because glibc serves anything a secondary
arena cannot hold with `mmap`; `one_arena=True` adds `M_ARENA_MAX=1`, so every thread allocates
from the main heap, which grows without that limit. One arena costs the tiny model's many small
kernels a shared lock (its PRIME step ~1.2x slower), so the entry points ask for it only for
models at least the mini preset's size (`one_arena_pays`). Measured: docs/benchmarks.md, "Host
memory on the CPU backend".

Importing `prl_jax` applies the thresholds; `prl-jax` commands add the one arena from the run's
model (`keep_for_model`) before JAX starts: a thread keeps the arena it first allocated from, so
it must come before JAX's thread pools run anything. It is skipped where it would not help or
could surprise:

- `PRL_JAX_HOST_MALLOC=system` in the environment (the opt-out);
- not glibc (macOS, musl): other allocators keep their own caches;
- a JAX backend other than the CPU: `JAX_PLATFORMS` names another platform first, or, with
  `JAX_PLATFORMS` unset, a GPU or TPU plugin is installed (device buffers are not malloc'd there).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

ENV_OPT_OUT = "PRL_JAX_HOST_MALLOC"

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_SETTINGS = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
# The mini preset's MLP (256 x 1024): its update's buffers outgrow a secondary arena's heaps.
ONE_ARENA_MIN_MLP = 256 * 1024
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")

status = "not set"  # what keep_freed_memory() did, in words (for logs and docs)


def _cpu_backend_expected() -> bool:
  """Whether JAX will run on the CPU, judged without starting a backend."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def one_arena_pays(hidden_size: int, intermediate_size: int) -> bool:
  """Whether a model's programs are large enough for `one_arena` to pay (see above)."""
  return hidden_size * intermediate_size >= ONE_ARENA_MIN_MLP


def keep_for_model(model_cfg) -> None:
  """What `prl-jax` commands do for a run's model (any object with hidden_size and
  intermediate_size): add one arena where `one_arena_pays`; call it before JAX starts."""
  if one_arena_pays(model_cfg.hidden_size, model_cfg.intermediate_size):
    keep_freed_memory(one_arena=True)


def keep_freed_memory(one_arena: bool = False) -> str:
  """Apply the settings above where they apply; returns (and stores in `status`) what was done."""
  global status
  if os.environ.get(ENV_OPT_OUT, "").lower() == "system":
    status = f"skipped: {ENV_OPT_OUT}=system"
  elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    status = "skipped: not glibc"
  elif not _cpu_backend_expected():
    status = "skipped: an accelerator backend"
  else:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = _SETTINGS + (((_M_ARENA_MAX, 1),) if one_arena else ())
    refused = [param for param, value in settings if mallopt(param, value) != 1]
    done = "applied, one arena" if one_arena else "applied"
    status = done if not refused else f"partly applied (mallopt refused {refused})"
  return status
