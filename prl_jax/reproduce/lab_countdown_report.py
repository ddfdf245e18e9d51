"""The countdown sub-lab's results: per-run measures, mean ± std over seeds, FRPO's paired tests.

WORKDIR/results.json holds, per arm and seed, the exploration measures of the final policy
(<run>/explore.json, `prl_jax.eval.exploration`) and the last `window` training steps' mean
`policy/entropy` and `rollout/reward`; WORKDIR/report.md tabulates them. FRPO's claim (PRL v2,
arXiv 2601.10201: pass@n up, drift and entropy collapse down) is judged per metric against GRPO
and GRPO + KL by `lab_claims.compare`: paired t-test over shared seeds (Welch's otherwise),
verdict at p < 0.05 in the claim's direction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from prl_jax.eval.exploration import EXPLORE_FILE
from prl_jax.reproduce.collect import write_json_atomic
from prl_jax.reproduce.lab_claims import compare, format_p
from prl_jax.run import paths
from prl_jax.run.metrics_file import read_metrics

RESULTS_FILE, REPORT_FILE = "results.json", "report.md"
# (key, label, scale for the table, FRPO's claim: True = higher is better for FRPO)
METRICS = (
    ("pass@1", "pass@1 (%)", 100.0, True),
    ("pass@8", "pass@8 (%)", 100.0, True),
    ("pass@64", "pass@64 (%)", 100.0, True),
    ("distinct_mean", "distinct correct solutions / problem", 1.0, True),
    ("distinct_share", "distinct / available (%)", 100.0, True),
    ("entropy_token", "token entropy, own samples (nats)", 1.0, True),
    ("kl_seq", "KL(pi || SFT) per response (nats)", 1.0, False),
    ("train_entropy", "policy/entropy, last steps", 1.0, True),
    ("train_reward", "rollout/reward, last steps (%)", 100.0, True),
)
TESTED = ("pass@1", "pass@64", "distinct_mean", "entropy_token", "kl_seq", "train_entropy")


def run_measures(explore: Mapping, metrics_rows: Sequence[Mapping], window: int) -> dict:
  """One run's flat measures: explore.json's and the training tail's (None when absent)."""
  out = {k: explore.get(k) for k in ("pass@1", "pass@8", "pass@64", "distinct_mean",
                                     "distinct_share", "greedy", "solved")}
  out.update(entropy_token=explore["kl"]["entropy_token"], kl_seq=explore["kl"]["kl_seq"],
             kl_token=explore["kl"]["kl_token"])
  tail = [r for r in metrics_rows if "rollout/reward" in r][-window:]
  for key, name in (("train_entropy", "policy/entropy"), ("train_reward", "rollout/reward")):
    values = [r[name] for r in tail if r.get(name) is not None]
    out[key] = float(np.mean(values)) if values else None
  return out


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
  """(mean, sample std with ddof 1; 0 for one value), or None without values."""
  v = [x for x in values if x is not None]
  if not v:
    return None
  return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def frpo_tests(per_seed: Mapping[str, Mapping[str, Mapping[int, float]]]) -> list[dict]:
  """FRPO against each control on every TESTED metric (arm -> metric -> seed -> value)."""
  out = []
  for control in ("grpo", "grpo_kl"):
    for key, label, scale, higher in METRICS:
      if key not in TESTED:
        continue
      get = lambda arm: {s: v for s, v in per_seed.get(arm, {}).get(key, {}).items()
                         if v is not None}
      out.append({"metric": key, "control": control,
                  **compare(f"{label}, frpo vs {control}", get("frpo"), get(control), scale=scale,
                            units="", lower_is_better=not higher)})
  return out


def collect(workdir: str, arms: Sequence[str], seeds: Sequence[int], window: int) -> dict:
  """The measures of every finished run (and of the SFT policy) under `workdir`."""
  def explore(rel: str) -> dict | None:
    path = os.path.join(workdir, rel, EXPLORE_FILE)
    return json.loads(paths.read_text(path)) if paths.exists(path) else None

  sft = explore("sft")
  per_seed: dict = {}
  curves: dict = {}
  for arm in arms:
    for seed in seeds:
      rel = os.path.join("rl", arm, f"seed{seed}")
      e = explore(rel)
      if e is None:
        continue
      rows = read_metrics(os.path.join(workdir, rel, "metrics.jsonl"))
      curves.setdefault(arm, {})[seed] = e["pass_at_k"]
      for key, value in run_measures(e, rows, window).items():
        per_seed.setdefault(arm, {}).setdefault(key, {})[seed] = value
  return {"sft": None if sft is None else run_measures(sft, [], window), "per_seed": per_seed,
          "sft_pass_at_k": None if sft is None else sft["pass_at_k"], "pass_at_k": curves}


def curve_lines(results: Mapping, ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)) -> list[str]:
  """A markdown table of mean pass@k over seeds (%) for the SFT policy and every arm."""
  rows = [("SFT", [results["sft_pass_at_k"]] if results.get("sft_pass_at_k") else [])]
  rows += [(arm, list(by_seed.values())) for arm, by_seed in results["pass_at_k"].items()]
  out = ["| policy | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
  for name, curves in rows:
    if not curves:
      continue
    cells = [f"{100 * np.mean([c[k - 1] for c in curves]):.1f}" if k <= len(curves[0]) else "-"
             for k in ks]
    out.append(f"| {name} ({len(curves)}) | " + " | ".join(cells) + " |")
  return out


def markdown(results: Mapping) -> str:
  """report.md: the SFT policy, every arm's mean ± std over seeds, FRPO's tests."""
  arms = list(results["per_seed"])
  lines = ["# Countdown sub-lab: GRPO, GRPO + KL, FRPO", "",
           f"Settings: `{json.dumps(results['options'], sort_keys=True)}`", "",
           "| measure | SFT | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
  for key, label, scale, _ in METRICS:
    sft = (results.get("sft") or {}).get(key)
    cells = ["-" if sft is None else f"{scale * sft:.3g}"]
    for arm in arms:
      values = results["per_seed"][arm].get(key, {})
      ms = mean_std(list(values.values()))
      cells.append("-" if ms is None else f"{scale * ms[0]:.3g} ± {scale * ms[1]:.2g} "
                                          f"({len(values)})")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += ["", "Mean ± std over seeds (seeds in parentheses).", "", *curve_lines(results), "",
            "Mean pass@k over seeds, % (unbiased estimator on 64 samples per problem).", "",
            "| FRPO vs | measure | diff (claim-oriented) | test | t | p | verdict |",
            "|---|---|---|---|---|---|---|"]
  for t in results["tests"]:
    diff = "-" if t.get("diff") is None else f"{t['diff']:+.3g}"
    tv = "-" if t.get("t") is None else f"{t['t']:.2f}"
    lines.append(f"| {t['control']} | {t['metric']} | {diff} | {t.get('test') or '-'} | {tv} | "
                 f"{format_p(t.get('p'))} | {t['verdict']} |")
  lines += ["", "diff: FRPO minus the control, sign flipped for KL (lower is FRPO's claim), so "
            "a positive diff always favours the claim; percentages in points."]
  return "\n".join(lines) + "\n"


def write(workdir: str, arms: Sequence[str], seeds: Sequence[int], options: Mapping) -> dict:
  """Collects, tests and writes WORKDIR/results.json and report.md; returns the results."""
  results = {**collect(workdir, arms, seeds, options.get("window", 10)), "options": dict(options)}
  results["tests"] = frpo_tests(results["per_seed"])
  write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)
  paths.write_text(os.path.join(workdir, REPORT_FILE), markdown(results))
  return results
