"""prl_jax.host_memory: freed host memory stays mapped, so repeated XLA calls stop page-faulting."""

import json
import os
import platform
import subprocess
import sys

import pytest

from prl_jax import host_memory

# A jitted program with three temporaries of ROWS x 1024 floats (16 MB at 4,096 rows), called
# repeatedly; prints the median number of page faults (minor: fresh pages the kernel maps and
# zero-fills) per call after warm-up (a median, as threads that XLA's pools start or retire now and
# then fault in their stacks once), and what was set.
_CHILD = """
import json, resource, statistics, sys
import prl_jax
from prl_jax import host_memory
rows, one_arena = int(sys.argv[1]), sys.argv[2] == "1"
if one_arena:
  host_memory.keep_freed_memory(one_arena=True)
import jax, jax.numpy as jnp
x = jnp.ones((rows, 256)); a = jnp.ones((256, 1024)) * 1e-3; d = jnp.ones((1024, 256)) * 1e-3
f = jax.jit(lambda x, a, d: ((x @ a) * (x @ (a + 1)) + (x @ (a + 2))) @ d)
for _ in range(3):
  f(x, a, d).block_until_ready()
faults = []
for _ in range(15):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, a, d).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults": statistics.median(faults), "status": host_memory.status}))
"""


def _child(rows: int, one_arena: bool, **env) -> dict:
  environ = {k: v for k, v in os.environ.items() if k != host_memory.ENV_OPT_OUT}
  environ.update(env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _CHILD, str(rows), str(int(one_arena))],
                       env=environ, capture_output=True,
                       text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


_GLIBC = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                            reason="the settings are glibc's")


@_GLIBC
def test_buffers_that_fit_a_thread_arena_stop_faulting_with_the_import_alone():
  kept, system = _child(4096, False), _child(4096, False, **{host_memory.ENV_OPT_OUT: "system"})
  assert kept["status"] == "applied"
  assert system["status"].startswith("skipped")
  # glibc's defaults map a call's 16 MB temporaries afresh: at least one buffer's 4,096 pages.
  assert system["faults"] > 4096, system
  assert kept["faults"] < 0.1 * system["faults"], (kept, system)


@_GLIBC
def test_buffers_beyond_a_thread_arena_stop_faulting_with_one_arena():
  # 64 MB temporaries: where a secondary arena (heaps of at most 64 MB) allocates them, glibc
  # serves them with mmap whatever the thresholds; one arena (the main heap) keeps them.
  one_arena = _child(16384, True)
  system = _child(16384, False, **{host_memory.ENV_OPT_OUT: "system"})
  assert one_arena["status"] == "applied, one arena"
  assert system["faults"] > 16384, system
  assert one_arena["faults"] < 0.1 * system["faults"], (one_arena, system)


def test_one_arena_from_the_model_size():
  assert host_memory.one_arena_pays(256, 1024)  # the mini preset
  assert host_memory.one_arena_pays(576, 1536)  # SmolLM2-135M
  assert not host_memory.one_arena_pays(64, 128)  # the tiny preset


def test_skipped_where_it_does_not_apply(monkeypatch):
  monkeypatch.setattr(host_memory, "status", host_memory.status)  # this process's stays as it was
  monkeypatch.setenv(host_memory.ENV_OPT_OUT, "system")
  assert host_memory.keep_freed_memory().startswith("skipped")
  monkeypatch.delenv(host_memory.ENV_OPT_OUT)
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert host_memory.keep_freed_memory() == "skipped: an accelerator backend"
  monkeypatch.setenv("JAX_PLATFORMS", "tpu")
  assert not host_memory._cpu_backend_expected()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert host_memory._cpu_backend_expected()


def test_commands_ask_for_one_arena_from_the_run_model(monkeypatch):
  from prl_jax import cli
  from prl_jax.config import apply_overrides, load_config_file
  calls = []
  monkeypatch.setattr(host_memory, "keep_freed_memory",
                      lambda one_arena=False: calls.append(one_arena))
  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
  config = load_config_file(os.path.join(root, "configs", "mini", "prime.py"))  # the tiny preset
  cli._keep_host_memory(config)
  assert calls == []
  cli._keep_host_memory(apply_overrides(config, ["model.preset=mini"]))
  assert calls == [True]
