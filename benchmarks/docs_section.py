"""The machine a benchmark ran on, and its section of docs/benchmarks.md (replaced in place)."""

from __future__ import annotations

import os
import platform
import re

import jax

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def machine() -> dict:
  """CPU model, core count, JAX backend and versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = re.findall(r"model name\s*:\s*(.*)", f.read())
    cpu = names[0].strip() if names else cpu
  except OSError:
    pass
  return {"platform": jax.default_backend(), "devices": jax.device_count(),
          "cpus": os.cpu_count(), "cpu": cpu, "jax": jax.__version__,
          "python": platform.python_version()}


def write_section(title: str, paragraphs: list[str], info: dict, command: str) -> None:
  """Writes `## title` (the paragraphs, the machine, the command) into docs/benchmarks.md,
  replacing the section of that title if there is one."""
  devices = f"{info['devices']} device{'s' if info['devices'] != 1 else ''}"
  section = "\n\n".join([
      f"## {title}", *paragraphs,
      f"Machine: {info['cpu']}, {info['cpus']} CPUs; JAX {info['jax']} on {info['platform']} "
      f"({devices}); Python {info['python']}. Shared machine: expect about 10% run-to-run noise.",
      f"Command: `{command}`"]) + "\n"
  text = open(DOCS).read() if os.path.exists(DOCS) else "# Benchmarks\n\n"
  pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
  if pattern.search(text):
    text = pattern.sub(lambda _: section + "\n", text, count=1)
  else:
    text = text.rstrip("\n") + "\n\n" + section
  os.makedirs(os.path.dirname(DOCS), exist_ok=True)
  with open(DOCS, "w") as f:
    f.write(text)
  print(f"wrote the '{title}' section of {os.path.normpath(DOCS)}")
