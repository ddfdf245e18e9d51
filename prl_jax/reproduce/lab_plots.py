"""The lab report's curves: the mean over seeds with a band of ± one standard deviation.

    band_plot({"rloo": (steps, [[seed0...], [seed1...]])}, "plots/lab_reward.png", ...)

Curves of one arm are cut to its shortest seed (a partial reproduction may differ in length).
Matplotlib runs with the Agg canvas on the figure only, as `prl_jax.eval.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prl_jax.reproduce.lab_metrics import smoothed
from prl_jax.run import paths

Curves = tuple[Sequence[int], Sequence[Sequence[float]]]


def mean_band(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) over curves at each point, cut to the shortest; std = 0 for one curve."""
  length = min(len(c) for c in curves)
  x = np.asarray([c[:length] for c in curves], np.float64)
  std = x.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
  return x.mean(axis=0), std


def band_plot(series: Mapping[str, Curves], path: str, *, xlabel: str, ylabel: str, title: str,
              hlines: Mapping[str, float] | None = None) -> str:
  """One mean line and a shaded ± std band per arm; writes `path` (PNG) and returns it."""
  fig = Figure(figsize=(9.0, 4.2), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for label, (steps, curves) in series.items():
    mean, std = mean_band(curves)
    x = np.asarray(steps[:mean.size], np.float64)
    (line,) = ax.plot(x, mean, label=f"{label} (n={len(curves)})")
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
  for label, y in (hlines or {}).items():
    ax.axhline(y, color="gray", linestyle="--", linewidth=1, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  fig.tight_layout()
  paths.makedirs(paths.parent(path))
  with paths.open(path, "wb") as fh:  # a local file or a URL (prl_jax.run.paths)
    fig.savefig(fh, format="png")
  return path


def arm_curves(rows_by_run: Sequence[tuple[str, list[dict]]], key: str, window: int
               ) -> dict[str, Curves]:
  """arm -> (steps, per-seed `window`-smoothed curves of `key`) for the runs that logged it."""
  out: dict[str, tuple[list[int], list[list[float]]]] = {}
  for arm, rows in rows_by_run:
    steps, values = smoothed(rows, key, window)
    if values:
      have = out.setdefault(arm, (steps, []))
      if len(steps) < len(have[0]):
        out[arm] = (steps, have[1])
      out[arm][1].append(values)
  return out
