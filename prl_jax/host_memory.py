"""Keep freed host memory mapped, so XLA's CPU buffers are not faulted in again on every call.

On the CPU backend XLA allocates a program's temporaries and outputs with `malloc` on every
execution and frees them at its end. glibc's defaults give large blocks back to the kernel: a block
above the mmap threshold is its own `mmap` and is unmapped on `free`, a worker thread's secondary
arena (heaps of at most 64 MB) serves anything larger with `mmap` too, and free memory at a heap's
top is trimmed. The next call then takes a page fault and a zero-fill for every 4 KiB page again:
about 220,000 faults (~860 MB) per GRPO step of the mini preset, ~10% of the step.

`keep_freed_memory()` sets, through `mallopt`: one arena for every thread (`M_ARENA_MAX=1`: the
main heap grows without the 64 MB limit), an mmap threshold of 1 GiB (blocks below it come from
the heap) and no trimming below 2 GiB (`M_TRIM_THRESHOLD`). Freed pages stay mapped and are
reused; the resident memory then stays at its peak instead of falling between steps, which a
training process reaches every step anyway. Measured (docs/benchmarks.md, "Host memory"): the GRPO
step of the mini preset with 1 fault per step instead of 220,000.

It runs when `prl_jax` is imported (glibc Linux, CPU backend), and must run before JAX's thread
pool threads first allocate (a thread keeps the arena it first used): import `prl_jax` before
running JAX computations. It is skipped where it would not help or could surprise:

- `PRL_JAX_HOST_MALLOC=system` in the environment (the opt-out);
- not glibc (macOS, musl): other allocators keep their own caches;
- a JAX backend other than the CPU: `JAX_PLATFORMS` names another platform first, or, with
  `JAX_PLATFORMS` unset, a GPU or TPU plugin is installed (device buffers are not malloc'd there,
  and a single arena would serialise the host threads' allocations for nothing).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

ENV_OPT_OUT = "PRL_JAX_HOST_MALLOC"

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1),
             (_M_TOP_PAD, 64 << 20))
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")

status = "not set"  # what keep_freed_memory() did, in words (for logs and docs)


def _cpu_backend_expected() -> bool:
  """Whether JAX will run on the CPU, judged without starting a backend."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def keep_freed_memory() -> str:
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
    refused = [param for param, value in _SETTINGS if mallopt(param, value) != 1]
    status = "applied" if not refused else f"partly applied (mallopt refused {refused})"
  return status
