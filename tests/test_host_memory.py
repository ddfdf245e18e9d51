"""prl_jax.host_memory: freed host memory stays mapped, so repeated XLA calls stop page-faulting."""

import json
import os
import platform
import subprocess
import sys

import pytest

from prl_jax import host_memory

# A jitted program with three 16 MB temporaries, called repeatedly; prints the median number of
# page faults (minor: fresh pages the kernel maps and zero-fills) per call after warm-up (a median,
# as threads that XLA's pools start or retire now and then fault in their stacks once), and what
# the import did.
_CHILD = """
import json, resource, statistics
import prl_jax
import jax, jax.numpy as jnp
from prl_jax import host_memory
x = jnp.ones((4096, 256)); a = jnp.ones((256, 1024)) * 1e-3; d = jnp.ones((1024, 256)) * 1e-3
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


def _child(**env) -> dict:
  environ = {k: v for k, v in os.environ.items() if k != host_memory.ENV_OPT_OUT}
  environ.update(env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _CHILD], env=environ, capture_output=True,
                       text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the settings are glibc's")
def test_repeated_calls_stop_faulting_in_fresh_pages():
  kept, system = _child(), _child(**{host_memory.ENV_OPT_OUT: "system"})
  assert kept["status"] == "applied"
  assert system["status"].startswith("skipped")
  # Without the settings each call maps its temporaries afresh: at least one 16 MB buffer's
  # 4,096 pages. With them, the pages are reused.
  assert system["faults"] > 4096, system
  assert kept["faults"] < 0.1 * system["faults"], (kept, system)


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
