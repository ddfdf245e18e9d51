"""The machine a benchmark ran on, its section of docs/benchmarks.md (replaced in place), and the
arguments of a benchmark that times cases."""

from __future__ import annotations

import argparse
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


def cases_parser(description: str, cases, warmup: int = 2) -> argparse.ArgumentParser:
  """--quick (2 timed runs after 1 warm-up, no docs), --repeats, --warmup, --cases, --no-docs."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true", help="2 timed runs after 1 warm-up; no docs")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=warmup)
  parser.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
  parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
  return parser
