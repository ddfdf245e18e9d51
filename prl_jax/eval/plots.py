"""Figures of evaluation and training runs, written as PNG files.

    pass_at_k_plot({"all": curve, "difficulty 3": curve3}, "eval/pass_at_k.png")
    line_plot({"prime": (steps, reward), "rloo": (steps2, reward2)}, "reward.png",
              xlabel="step", ylabel="train/reward")

matplotlib runs with the Agg backend (files only, no display), so plots work on headless
machines and inside tests. The backend is chosen on the figure object, never globally, so a
notebook that imports this module keeps its own backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prl_jax.run import paths


def _check_series(label: str, x: np.ndarray, y: np.ndarray) -> None:
  if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape or x.size == 0:
    raise ValueError(f"line_plot: series {label!r} needs non-empty 1-D x and y of equal length, "
                     f"got shapes {x.shape} and {y.shape}")


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str,
              **options) -> str:
  """`line_figure(series, **options)` saved to `path` (PNG; its folder is created); returns it."""
  fig = line_figure(series, **options)
  paths.makedirs(paths.parent(path))
  with paths.open(path, "wb") as fh:  # a local file or a URL (prl_jax.run.paths)
    fig.savefig(fh, format="png")
  return path


def line_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                xlabel: str = "", ylabel: str = "", title: str = "", logx: int | None = None,
                ylim: tuple[float, float] | None = None, markers: bool = True,
                hlines: Mapping[str, float] | None = None) -> Figure:
  """One line per labelled (x, y) series.

  Reused for pass@k vs k, accuracy vs N (best-of-N) and training curves (reward vs step).

  Args:
    series: label -> (x, y), two equal-length 1-D sequences. Order is the legend order.
    xlabel, ylabel, title: axis labels and title.
    logx: a log base for the x axis (2 for k = 1, 2, 4, ...), or None for a linear axis.
    ylim: fixed y limits, e.g. (0, 1) for accuracies.
    markers: draw a dot at every point (useful for short curves).
    hlines: label -> y of dashed reference lines (e.g. {"chance": 0.5} on an accuracy).

  With more than one line the legend sits to the right of the axes, never over a curve.
  """
  if not series:
    raise ValueError("line_plot: no series to draw")
  lines = len(series) + len(hlines or {})
  fig = Figure(figsize=(8.5 if lines > 1 else 6.0, 4.0), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for label, (x, y) in series.items():
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _check_series(label, x, y)
    ax.plot(x, y, marker="o" if markers else None, markersize=3, label=str(label))
  for label, y in (hlines or {}).items():
    ax.axhline(y, color="gray", linestyle="--", linewidth=1, label=str(label))
  if logx:
    ax.set_xscale("log", base=logx)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=logx))
    # Plain numbers (1 2 4 8), not 2^0 2^1 ... or 1.0 2.0 ...
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(True, alpha=0.3)
  if lines > 1:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  fig.tight_layout()
  return fig


def pass_at_k_plot(curves: Mapping[str, Sequence[float]], path: str, *,
                   title: str = "pass@k") -> str:
  """pass@k in % (the tables' unit) against k = 1..n on a log2 k axis, one line per label.

  Args:
    curves: label -> [n] fractions, entry k-1 being pass@k (e.g. `metrics.pass_at_k_curve`).
      Curves may have different n.
    path: output PNG file.
    title: figure title.
  """
  series = {}
  for label, curve in curves.items():
    curve = np.asarray(curve, np.float64)
    if curve.ndim != 1 or curve.size == 0:
      raise ValueError(f"pass_at_k_plot: curve {label!r} must be a non-empty [n] array, "
                       f"got shape {curve.shape}")
    series[label] = (np.arange(1, curve.size + 1), 100.0 * curve)
  return line_plot(series, path, xlabel="k (samples)", ylabel="pass@k (%)", title=title, logx=2,
                   ylim=(0.0, 102.0))
