"""Reading a reproduction's files: the JSON a stage wrote and a run's metrics.jsonl, each relative
to the reproduction's WORKDIR and absent until its stage has run."""

from __future__ import annotations

import json
from collections.abc import Mapping

from prl_jax.run import paths
from prl_jax.run.metrics_file import read_metrics


def read_json(workdir: str, rel: str | None) -> dict | None:
  """WORKDIR/rel parsed, or None when rel is empty or the file does not exist (yet)."""
  path = paths.join(workdir, rel) if rel else None
  if not path or not paths.exists(path):
    return None
  return json.loads(paths.read_text(path))


def metric_rows(workdir: str, run: Mapping) -> list[dict]:
  path = paths.join(workdir, run["metrics"])
  return read_metrics(path) if paths.exists(path) else []
