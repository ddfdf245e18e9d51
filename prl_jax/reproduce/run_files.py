"""Reading a reproduction's files: the JSON a stage wrote and a run's metrics.jsonl, each relative
to the reproduction's WORKDIR and absent until its stage has run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from prl_jax.run.metrics_file import read_metrics


def read_json(workdir: str, rel: str | None) -> dict | None:
  """WORKDIR/rel parsed, or None when rel is empty or the file does not exist (yet)."""
  path = os.path.join(workdir, rel) if rel else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as fh:
    return json.load(fh)


def metric_rows(workdir: str, run: Mapping) -> list[dict]:
  path = os.path.join(workdir, run["metrics"])
  return read_metrics(path) if os.path.exists(path) else []
