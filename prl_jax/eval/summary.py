"""Summary metrics of evaluation records (mean@n, pass@k, maj@k, greedy, by difficulty, with
bootstrap standard errors over problems) and the files they are written to.

Records are those of `prl_jax.eval.evaluate.evaluate`: one per problem with its n sample
rewards, answers and lengths and its greedy reward.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prl_jax.eval import metrics, plots
from prl_jax.run import paths as run_paths

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
RESULTS_JSON, RESULTS_MD, PASS_AT_K_PNG = "results.json", "results.md", "pass_at_k.png"


# ------------------------------------------------------------------------------------------------
# Summary metrics from records.


def maj_ks(n: int) -> list[int]:
  """The k of maj@k (and of the table's pass@k columns): powers of two below n, and n."""
  return sorted({1 << i for i in range(int(n).bit_length()) if 1 << i <= n} | {int(n)})


def bootstrap_se(values: np.ndarray, *, num_samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> np.ndarray:
  """Bootstrap standard error of the mean over problems (Efron & Tibshirani 1993, chapter 6).

      se = std_b( mean_i values[idx_b[i]] ),  idx_b ~ Uniform{0..P-1}^P,  b = 1..B

  with the sample standard deviation (ddof=1) over B resamples drawn from a fixed seed, so the
  same values always give the same standard error. For large P it approaches std(values)/sqrt(P).

  Args:
    values: [P] or [P, M] per-problem values (M metrics resampled together).

  Returns:
    [M] float64 (a float for [P] input).
  """
  v = np.asarray(values, np.float64)
  flat = v.reshape(v.shape[0], -1)
  if flat.shape[0] == 0:
    raise ValueError("bootstrap_se: no problems")
  idx = np.random.default_rng(seed).integers(0, flat.shape[0], size=(num_samples, flat.shape[0]))
  se = flat[idx].mean(axis=1).std(axis=0, ddof=1)
  return float(se[0]) if v.ndim == 1 else se


def _check_records(records: Sequence[Mapping], n: int) -> None:
  if not records:
    raise ValueError("summarize: no records")
  for r in records:
    flags = (r["correct"], r["answers"], r["lengths"], r["truncated"])
    if r["n"] != n or any(len(f) != n for f in flags) or r["c"] != sum(map(bool, r["correct"])):
      raise ValueError(f"summarize: record {r.get('id')!r} is inconsistent with n={n}: it needs "
                       f"n == {n}, {n} entries in correct/answers/lengths/truncated and "
                       f"c == sum(correct)")


def _summary(records: Sequence[Mapping], n: int) -> dict:
  c = np.array([r["c"] for r in records], np.int64)
  correct = np.array([r["correct"] for r in records], bool)
  answers = [r["answers"] for r in records]
  curve = metrics.pass_at_k_curve(n, c)
  se = bootstrap_se(np.stack([c / n, (c > 0).astype(np.float64)], axis=1))
  out: dict[str, Any] = {"problems": len(records), f"mean@{n}": metrics.mean_at_n(correct)}
  out.update({f"pass@{k}": float(curve[k - 1]) for k in range(1, n + 1)})
  out.update({f"maj@{k}": metrics.maj_at_k(answers, correct=correct, k=k) for k in maj_ks(n)})
  out["greedy"] = float(np.mean([bool(r["greedy_correct"]) for r in records]))
  out["response_length"] = float(np.mean([r["lengths"] for r in records]))
  out["truncated"] = float(np.mean([r["truncated"] for r in records]))
  out[f"mean@{n}_se"], out[f"pass@{n}_se"] = float(se[0]), float(se[1])
  return out


def _difficulty_order(key: str) -> tuple:
  """Numeric difficulties in numeric order, then named ones, "unknown" last."""
  if key.lstrip("-").isdigit():
    return (0, int(key), "")
  return (2 if key == "unknown" else 1, 0, key)


def summarize(records: Sequence[Mapping], n: int) -> dict:
  """Every summary metric from per-problem records alone (see the module docstring).

  Returns the overall metrics with "by_difficulty": {difficulty: the same metrics} added
  (records without a difficulty are grouped as "unknown").
  """
  n = int(n)
  _check_records(records, n)
  groups: dict[str, list] = {}
  for r in records:
    d = r.get("difficulty")
    groups.setdefault("unknown" if d is None else str(d), []).append(r)
  out = _summary(records, n)
  out["by_difficulty"] = {k: _summary(groups[k], n) for k in sorted(groups, key=_difficulty_order)}
  return out


# ------------------------------------------------------------------------------------------------
# Files: JSON, markdown table, plot.


def _pct(x: float) -> str:
  return f"{100 * x:.1f}"


def markdown_table(summary: Mapping, n: int) -> str:
  """Overall and per-difficulty rows: accuracies in %, ± one bootstrap standard error."""
  ks = maj_ks(n)
  header = (["", "problems", f"mean@{n}"] + [f"pass@{k}" for k in ks]
            + [f"maj@{n}", "greedy", "length", "truncated"])
  rows = [("all", summary)] + [(f"difficulty {d}", s)
                               for d, s in summary.get("by_difficulty", {}).items()]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, s in rows:
    cells = [name, str(s["problems"]), f"{_pct(s[f'mean@{n}'])} ± {_pct(s[f'mean@{n}_se'])}"]
    for k in ks:
      value = _pct(s[f"pass@{k}"])
      cells.append(f"{value} ± {_pct(s[f'pass@{n}_se'])}" if k == n else value)
    cells += [_pct(s[f"maj@{n}"]), _pct(s["greedy"]), f"{s['response_length']:.1f}",
              _pct(s["truncated"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def format_markdown(results: Mapping) -> str:
  """results.md: the settings in one line, then `markdown_table`."""
  settings, n = results["settings"], results["settings"]["n"]
  where = ", ".join(f"{k} {settings[k]}" for k in ("task", "split", "model") if k in settings)
  return "\n".join([
      "# Evaluation", "",
      (f"{n} samples per problem at temperature {settings['temperature']} (max "
       f"{settings['max_new_tokens']} new tokens, seed {settings['seed']}), plus one greedy "
       f"decode" + (f"; {where}" if where else "") + "."),
      "Accuracies in %; ± is one bootstrap standard error over problems; length is tokens per "
      "sampled response.", "",
      markdown_table(results["summary"], n), ""])


def results_json(results: Mapping) -> str:
  """The text of results.json: settings and summary indented, then one line per record."""
  parts = [f"{json.dumps(k)}: {json.dumps(v, indent=1)}" for k, v in results.items()
           if k != "records"]
  records = ",\n ".join(json.dumps(r) for r in results.get("records", []))
  parts.append(f'"records": [\n {records}\n]')
  return "{\n" + ",\n".join(parts) + "\n}\n"


def write_results(results: Mapping, out_dir: str) -> dict[str, str]:
  """Writes results.json, results.md and pass_at_k.png (overall and per difficulty) to `out_dir`.

  Returns the three paths by file name. `out_dir` may be a URL (a gs:// workdir's eval).
  """
  names = (RESULTS_JSON, RESULTS_MD, PASS_AT_K_PNG)
  with run_paths.local_dir(out_dir) as local:
    files = {name: os.path.join(local, name) for name in names}
    with open(files[RESULTS_JSON], "w") as fh:
      fh.write(results_json(results))
    with open(files[RESULTS_MD], "w") as fh:
      fh.write(format_markdown(results))
    n, summary = results["settings"]["n"], results["summary"]
    curve = lambda s: [s[f"pass@{k}"] for k in range(1, n + 1)]
    curves = {"all": curve(summary)}
    curves.update({f"difficulty {d}": curve(s) for d, s in summary["by_difficulty"].items()})
    plots.pass_at_k_plot(curves, files[PASS_AT_K_PNG], title=f"pass@k ({n} samples per problem)")
  return {name: run_paths.join(out_dir, name) for name in names}


