"""The reproduction report: tables, plots and the papers' claims, from a workdir's JSON files alone.

    write_report("runs/demo")   # runs/demo/report.md and runs/demo/plots/*.png

Inputs, all written by `prl-jax reproduce` (prl_jax/reproduce.py): WORKDIR/results.json (which
runs exist, their stage records and commands), each run's metrics.jsonl, each policy's
eval{,_heldout}/results.json and erprm/best_of_n.json. Nothing is sampled or trained here, so the
report regenerates byte for byte from those files (`prl-jax report WORKDIR`).

Statistics. Per policy, a number is the mean over seeds ± the sample standard deviation over
seeds (ddof = 1), with the number of seeds beside it. A claim compares two means: the difference
d = mean_a - mean_b against the Welch standard error se = sqrt(s_a^2 / n_a + s_b^2 / n_b) over
seeds (for best-of-N, one experiment: the standard errors over problems, combined the same way).
With z = d / se (oriented so that z > 0 favours the claim), a comparison is

    reproduced       z >= 2
    reversed         z <= -2
    not reproduced   |z| < 2 (the spreads overlap)
    undetermined     a side has fewer than 2 seeds: no spread to judge by

and a claim is reproduced only when all its comparisons are.

Sample efficiency (PRIME section 4.2, "2.5x"): the training reward of a step is `rollout/reward`,
the mean outcome of every response sampled that step (before any filter). It is smoothed by a
trailing moving average over `window` steps (defined from step `window` on). The target is RLOO's
final training reward: the mean over its seeds of the mean of its last `window` steps. A run's
steps-to-target is the first step at which its smoothed reward reaches the target; a run that
never does counts as rl_steps + 1 in the claim (a lower bound).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from prl_jax.eval import plots
from prl_jax.eval.best_of_n import MAJORITY, ORACLE
from prl_jax.run.metrics_file import read_metrics

RESULTS_FILE, REPORT_FILE, PLOTS_DIR = "results.json", "report.md", "plots"
Z_THRESHOLD = 2.0
REWARD_KEY, PRM_ACC_KEY, STEP_TIME_KEY = "rollout/reward", "prm/pairwise_accuracy", "time/step_s"
SFT = "sft"
ERPRM_ROLES = ("ER-PRM", "hard", "soft", "ORM", "majority", "oracle")
BASELINE = "rloo"  # the outcome-only baseline of PRIME's sample-efficiency claim
REPRODUCED, REVERSED, NOT_REPRODUCED = "reproduced", "reversed", "not reproduced"
UNDETERMINED, NOT_RUN = "undetermined", "not run"


# ------------------------------------------------------------------------------------------------
# Small statistics.


class Spread(NamedTuple):
  """Mean and sample standard deviation (ddof = 1; None for fewer than 2 values) of n values."""

  mean: float
  std: float | None
  n: int


def mean_std(values: Sequence[float]) -> Spread:
  """Spread of `values` (at least one)."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("mean_std: no values")
  std = float(np.std(x, ddof=1)) if x.size > 1 else None
  return Spread(float(np.mean(x)), std, int(x.size))


def format_spread(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
  """"mean ± std" of `values` times `scale` ("mean" alone for one value; "-" for none)."""
  if not len(values):
    return "-"
  s = mean_std(values)
  text = f"{scale * s.mean:.{digits}f}"
  return text if s.std is None else f"{text} ± {scale * s.std:.{digits}f}"


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
  """(mean(a) - mean(b), Welch standard error sqrt(s_a^2/n_a + s_b^2/n_b)); None with < 2 seeds."""
  sa, sb = mean_std(a), mean_std(b)
  if sa.std is None or sb.std is None:
    return sa.mean - sb.mean, None
  return sa.mean - sb.mean, math.sqrt(sa.std ** 2 / sa.n + sb.std ** 2 / sb.n)


def verdict(diff: float, se: float | None, z: float = Z_THRESHOLD) -> str:
  """Whether a difference oriented in the claim's favour (> 0 supports it) is clear of its noise."""
  if se is None:
    return UNDETERMINED
  if se == 0:
    score = 0.0 if diff == 0 else math.copysign(math.inf, diff)
  else:
    score = diff / se
  if score >= z:
    return REPRODUCED
  if score <= -z:
    return REVERSED
  return NOT_REPRODUCED


def combine_verdicts(verdicts: Sequence[str]) -> str:
  """A claim's verdict from its comparisons': reproduced only when every comparison is."""
  if not verdicts or NOT_RUN in verdicts:
    return NOT_RUN
  if all(v == REPRODUCED for v in verdicts):
    return REPRODUCED
  for v in (REVERSED, UNDETERMINED):
    if v in verdicts:
      return v
  return NOT_REPRODUCED


# ------------------------------------------------------------------------------------------------
# Training curves.


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing mean over `window` values: out[i] = mean(values[i : i + window]), len - window + 1."""
  x = np.asarray(values, np.float64)
  if window < 1 or window > x.size:
    raise ValueError(f"moving_average: window must lie in [1, {x.size}], got {window}")
  sums = np.cumsum(np.concatenate([[0.0], x]))
  return (sums[window:] - sums[:-window]) / window


def final_reward(rewards: Sequence[float], window: int) -> float:
  """Mean of the last `window` values (all of them when there are fewer)."""
  x = np.asarray(rewards, np.float64)
  return float(x[-window:].mean())


def steps_to_reach(steps: Sequence[int], rewards: Sequence[float], target: float,
                   window: int) -> int | None:
  """First step whose trailing `window`-step mean reward reaches `target`; None if none does."""
  if len(rewards) < window:
    return None
  smooth = moving_average(rewards, window)
  hits = np.nonzero(smooth >= target - 1e-12)[0]
  return None if hits.size == 0 else int(steps[hits[0] + window - 1])


# ------------------------------------------------------------------------------------------------
# Gathering the numbers.


def _read_json(workdir: str, rel: str | None) -> dict | None:
  path = os.path.join(workdir, rel) if rel else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as fh:
    return json.load(fh)


def _metric_rows(workdir: str, run: Mapping) -> list[dict]:
  path = os.path.join(workdir, run["metrics"])
  return read_metrics(path) if os.path.exists(path) else []


def _eval_numbers(summary: Mapping, n: int) -> dict:
  return {"mean@n": summary[f"mean@{n}"], "pass@n": summary[f"pass@{n}"],
          "greedy": summary["greedy"], "curve": [summary[f"pass@{k}"] for k in range(1, n + 1)]}


def _policy_evals(workdir: str, evals: Mapping, n: int) -> dict:
  """split -> numbers of one policy's eval results (splits not evaluated yet are left out)."""
  out = {}
  for split, record in evals.items():
    results = _read_json(workdir, record.get("results"))
    if results is not None:
      out[split] = _eval_numbers(results["summary"], n)
  return out


def _new_policy() -> dict:
  return {"seeds": [], "eval": {}, "final_reward": [], "steps_to_target": [], "rl_steps": [],
          "step_seconds": [], "train_seconds": [], "eval_seconds": []}


def _add_evals(entry: dict, evals: Mapping) -> None:
  for split, numbers in evals.items():
    bucket = entry["eval"].setdefault(split, {"mean@n": [], "pass@n": [], "greedy": [],
                                              "curve": []})
    for key, value in numbers.items():
      bucket[key].append(value)


def _mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
  """Mean over curves, truncated to the shortest (runs of a partial reproduction may differ)."""
  length = min(len(c) for c in curves)
  return [float(v) for v in np.mean([c[:length] for c in curves], axis=0)]


def _baseline_target(runs: Sequence[dict], window: int) -> dict | None:
  finals = [final_reward(r["rewards"], window) for r in runs
            if r["method"] == BASELINE and r["rewards"]]
  if not finals:
    return None
  return {"method": BASELINE, "value": float(np.mean(finals)), "per_seed": finals}


def _load_runs(workdir: str, manifest: Mapping) -> list[dict]:
  """The manifest's runs with their metric rows and `rollout/reward` series attached."""
  loaded = []
  for run in manifest.get("runs", []):
    rows = _metric_rows(workdir, run)
    loaded.append({**run, "rows": rows, "rewards": [row[REWARD_KEY] for row in rows]})
  return loaded


def _add_training(entry: dict, run: Mapping, window: int, target: Mapping | None) -> None:
  """A run's final reward, steps to the target and median step time, appended to its policy."""
  steps = [row["step"] for row in run["rows"]]
  entry["rl_steps"].append(steps[-1])
  entry["final_reward"].append(final_reward(run["rewards"], window))
  # The median: the first step of a run also compiles.
  entry["step_seconds"].append(float(np.median([row[STEP_TIME_KEY] for row in run["rows"]])))
  if target is not None:
    entry["steps_to_target"].append(steps_to_reach(steps, run["rewards"], target["value"],
                                                   window))


def _add_prm_accuracy(out: dict, run: Mapping, window: int) -> None:
  """Mean PRM pairwise accuracy of a run's first and last `window` steps and of the whole run."""
  accuracy = [row[PRM_ACC_KEY] for row in run["rows"] if PRM_ACC_KEY in row]
  if accuracy:
    acc = out.setdefault(run["method"], {"first": [], "last": [], "mean": []})
    acc["first"].append(float(np.mean(accuracy[:window])))
    acc["last"].append(float(np.mean(accuracy[-window:])))
    acc["mean"].append(float(np.mean(accuracy)))


def collect(workdir: str, manifest: Mapping) -> dict:
  """Every number of the report, from the files the manifest (results.json) points at."""
  preset = manifest["preset"]
  n = preset["eval_n"]
  loaded = _load_runs(workdir, manifest)
  lengths = [len(r["rewards"]) for r in loaded if r["rewards"]]
  window = min([preset["window"], *lengths]) if lengths else preset["window"]
  target = _baseline_target(loaded, window)
  policies: dict[str, dict] = {}
  if manifest.get("sft"):
    entry = policies.setdefault(SFT, _new_policy())
    entry["seeds"].append(None)
    _add_evals(entry, _policy_evals(workdir, manifest["sft"]["evals"], n))
  prm_accuracy: dict[str, dict] = {}
  for run in loaded:
    entry = policies.setdefault(run["method"], _new_policy())
    entry["seeds"].append(run["seed"])
    _add_evals(entry, _policy_evals(workdir, run["evals"], n))
    entry["train_seconds"].append(run["train"]["seconds"])
    entry["eval_seconds"].append(sum(e["seconds"] for e in run["evals"].values()))
    if run["rewards"]:
      _add_training(entry, run, window, target)
      _add_prm_accuracy(prm_accuracy, run, window)
  for entry in policies.values():
    for bucket in entry["eval"].values():
      bucket["curve"] = _mean_curve(bucket["curve"])
  return {"eval_n": n, "window": window, "rl_steps": preset["rl_steps"], "target": target,
          "policies": policies, "prm_accuracy": prm_accuracy,
          "erprm": collect_erprm(workdir, manifest.get("erprm")), "times": _times(manifest)}


def _erprm_columns(results: Mapping, agg: str) -> dict[str, str]:
  """Role (ER-PRM, hard, soft, ORM, majority, oracle) -> method name in best_of_n.json."""
  roles = {}
  for name, info in sorted(results.get("prms", {}).items()):
    if info["kind"] == "orm":
      roles["ORM"] = name
      continue
    role = {"inf": "hard", "0.0": "soft"}.get(info["label"], "ER-PRM")
    roles[role] = f"{name} [{agg}]"
  roles.update(majority=MAJORITY, oracle=ORACLE)
  return {role: roles[role] for role in ERPRM_ROLES
          if role in roles and roles[role] in results["methods"]}


def collect_erprm(workdir: str, erprm: Mapping | None) -> dict | None:
  """Accuracy ± standard error over problems against N for each role, from best_of_n.json."""
  results = _read_json(workdir, erprm["results"]) if erprm else None
  if results is None:
    return None
  columns = _erprm_columns(results, erprm["agg"])
  methods = results["methods"]
  return {"budgets": results["budgets"], "num_problems": results["num_problems"],
          "n_max": results["n_max"], "draws": results["draws"], "agg": erprm["agg"],
          "mean_accuracy": results["mean_accuracy"], "columns": columns,
          "accuracy": {role: methods[col]["accuracy"] for role, col in columns.items()},
          "stderr": {role: methods[col]["stderr"] for role, col in columns.items()},
          "seconds": erprm["stage"]["seconds"]}


def _times(manifest: Mapping) -> dict:
  """Wall seconds of the stages outside the RL runs (those are per policy)."""
  out = {}
  sft = manifest.get("sft")
  if sft:
    out["SFT"] = sft["train"]["seconds"]
    out["SFT evaluation"] = sum(e["seconds"] for e in sft["evals"].values())
  if manifest.get("erprm"):
    out["ER-PRM experiment"] = manifest["erprm"]["stage"]["seconds"]
  return out


# ------------------------------------------------------------------------------------------------
# Claims (ALGORITHMS.md section 8).


def compare(label: str, favoured: Sequence[float] | None, other: Sequence[float] | None, *,
            scale: float = 100.0, units: str = "points") -> dict:
  """One comparison: favoured - other over seeds, with its verdict (see the module docstring)."""
  if not favoured or not other:
    return {"label": label, "verdict": NOT_RUN}
  diff, se = difference(favoured, other)
  return {"label": label, "diff": scale * diff, "se": None if se is None else scale * se,
          "n": [len(favoured), len(other)], "units": units, "spread": "seeds",
          "verdict": verdict(diff, se)}


def compare_stats(label: str, a: tuple[float, float], b: tuple[float, float], *,
                  scale: float = 100.0, units: str = "points") -> dict:
  """favoured (mean, se) - other (mean, se) with se = sqrt(se_a^2 + se_b^2) (one experiment)."""
  diff, se = a[0] - b[0], math.sqrt(a[1] ** 2 + b[1] ** 2)
  return {"label": label, "diff": scale * diff, "se": scale * se, "units": units,
          "spread": "problems", "verdict": verdict(diff, se)}


def _metric(agg: Mapping, policy: str, split: str, key: str) -> list[float] | None:
  entry = agg["policies"].get(policy)
  return entry["eval"].get(split, {}).get(key) if entry else None


def _censored_steps(agg: Mapping, method: str) -> list[float] | None:
  """Steps to the target per seed, a run that never reached it counted as rl_steps + 1."""
  entry = agg["policies"].get(method)
  if not entry or not entry["steps_to_target"]:
    return None
  return [float(agg["rl_steps"] + 1 if s is None else s) for s in entry["steps_to_target"]]


def _claim(key: str, claim: str, paper: str, comparisons: list[dict]) -> dict:
  return {"key": key, "claim": claim, "paper": paper, "comparisons": comparisons,
          "verdict": combine_verdicts([c["verdict"] for c in comparisons])}


def _accuracy_claim(agg: Mapping, key: str, claim: str, paper: str, method: str, baseline: str,
                    metrics: Sequence[str]) -> dict:
  n = agg["eval_n"]
  comparisons = [compare(f"{name.replace('@n', f'@{n}')} (eval split), {method} - {baseline}",
                         _metric(agg, method, "eval", name), _metric(agg, baseline, "eval", name))
                 for name in metrics]
  return _claim(key, claim, paper, comparisons)


def _erprm_claim(agg: Mapping) -> dict:
  claim = "ER-PRM best-of-N beats PRMs trained on hard and on soft labels"
  paper = ("ER-PRM: +1% on GSM8K and +2-3% on MATH500 best-of-N over other PRMs")
  e = agg.get("erprm")
  if not e or not {"ER-PRM", "hard", "soft"} <= set(e["accuracy"]):
    return _claim("erprm", claim, paper, [{"label": "ER-PRM best-of-N", "verdict": NOT_RUN}])
  i = len(e["budgets"]) - 1
  stat = lambda role: (e["accuracy"][role][i], e["stderr"][role][i])
  comparisons = [compare_stats(f"best-of-{e['budgets'][i]} accuracy ({e['agg']}), ER-PRM - "
                               f"{role}-label PRM", stat("ER-PRM"), stat(role))
                 for role in ("hard", "soft")]
  return _claim("erprm", claim, paper, comparisons)


def evaluate_claims(agg: Mapping) -> list[dict]:
  """The papers' headline claims (ALGORITHMS.md section 8) checked against these numbers."""
  steps = compare("steps to RLOO's final training reward, RLOO - PRIME",
                  _censored_steps(agg, BASELINE), _censored_steps(agg, "prime"), scale=1.0,
                  units="steps")
  return [
      _claim("prime", "PRIME reaches RLOO's final training reward in fewer steps",
             "PRIME: RLOO's training reward in 40% of the steps (2.5x sample efficiency)",
             [steps]),
      _accuracy_claim(agg, "prl", "PRL improves pass@n as well as mean@n over GRPO",
                      "PRL/FRPO: pass@16 on MATH500 78.62 (GRPO) -> 85.30 (FRPO)", "prl", "grpo",
                      ("pass@n", "mean@n")),
      _accuracy_claim(agg, "frpo", "FRPO improves pass@n as well as mean@n over GRPO",
                      "PRL/FRPO: pass@16 on MATH500 78.62 (GRPO) -> 85.30 (FRPO)", "frpo", "grpo",
                      ("pass@n", "mean@n")),
      _erprm_claim(agg),
      _accuracy_claim(agg, "repirl", "rePIRL beats RLOO",
                      "rePIRL: math average 33.5 vs 31.7 for RLOO (Qwen2.5-3B-Instruct)",
                      "repirl", "rloo", ("mean@n",)),
  ]


# ------------------------------------------------------------------------------------------------
# results.json.


def write_json_atomic(path: str, value) -> None:
  """Writes JSON through a temporary file and a rename, so a kill never leaves half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as fh:
    json.dump(value, fh, indent=1, sort_keys=True)
    fh.write("\n")
  os.replace(tmp, path)


def save_results(workdir: str, manifest: Mapping) -> dict:
  """Writes WORKDIR/results.json: the manifest, every aggregate number and the claims."""
  agg = collect(workdir, manifest)
  results = {**manifest, "aggregates": agg, "claims": evaluate_claims(agg)}
  write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)
  return results


def load_results(workdir: str) -> dict:
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: run `prl-jax reproduce --workdir {workdir}` "
                            "first (it writes results.json after every stage).")
  with open(path) as fh:
    return json.load(fh)


# ------------------------------------------------------------------------------------------------
# Tables.


def _policy_order(agg: Mapping, manifest: Mapping) -> list[str]:
  order = [SFT, *manifest["preset"]["methods"]]
  return [p for p in order if p in agg["policies"]]


def _steps_cell(entry: Mapping) -> str:
  values = entry["steps_to_target"]
  if not values:
    return "-"
  reached = [v for v in values if v is not None]
  if not reached:
    return f"not reached (0/{len(values)})"
  return f"{format_spread(reached, 1.0, 0)} ({len(reached)}/{len(values)})"


def main_table(agg: Mapping, manifest: Mapping) -> str:
  """Final policies: accuracies (%) and training outcome, mean ± std over seeds."""
  n = agg["eval_n"]
  head = ["policy", "seeds"] + [f"{split} {m}" for split in ("eval", "heldout")
                                for m in (f"mean@{n}", f"pass@{n}", "greedy")]
  head += ["final train reward", "steps to RLOO final"]
  lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
  for name in _policy_order(agg, manifest):
    entry = agg["policies"][name]
    cells = [name, str(len(entry["seeds"]))]
    for split in ("eval", "heldout"):
      bucket = entry["eval"].get(split, {})
      cells += [format_spread(bucket.get(m, [])) for m in ("mean@n", "pass@n", "greedy")]
    cells += [format_spread(entry["final_reward"], 1.0, 3), _steps_cell(entry)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sample_efficiency_table(agg: Mapping, manifest: Mapping) -> str:
  lines = ["| method | seeds | final train reward | steps to target | per seed |",
           "|---|---:|---:|---:|---|"]
  for name in _policy_order(agg, manifest):
    entry = agg["policies"][name]
    if not entry["final_reward"]:
      continue
    per_seed = ", ".join("not reached" if s is None else str(s) for s in entry["steps_to_target"])
    lines.append(f"| {name} | {len(entry['final_reward'])} | "
                 f"{format_spread(entry['final_reward'], 1.0, 3)} | {_steps_cell(entry)} | "
                 f"{per_seed or '-'} |")
  return "\n".join(lines)


def prm_table(agg: Mapping) -> str:
  w = agg["window"]
  lines = [f"| method | seeds | first {w} steps | last {w} steps | whole run |",
           "|---|---:|---:|---:|---:|"]
  for name, acc in sorted(agg["prm_accuracy"].items()):
    lines.append(f"| {name} | {len(acc['mean'])} | {format_spread(acc['first'])} | "
                 f"{format_spread(acc['last'])} | {format_spread(acc['mean'])} |")
  return "\n".join(lines)


def erprm_table(e: Mapping) -> str:
  roles = list(e["columns"])
  lines = ["| N | " + " | ".join(e["columns"][r] for r in roles) + " |",
           "|---:|" + "---:|" * len(roles)]
  for i, n in enumerate(e["budgets"]):
    cells = [f"{100 * e['accuracy'][r][i]:.1f} ± {100 * e['stderr'][r][i]:.1f}" for r in roles]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def time_table(agg: Mapping, manifest: Mapping) -> str:
  lines = ["| stage | seeds | wall seconds (sum) | median s per RL step |", "|---|---:|---:|---:|"]
  total = 0.0
  for name, seconds in agg["times"].items():
    lines.append(f"| {name} | | {seconds:.0f} | |")
    total += seconds
  for name in _policy_order(agg, manifest):
    entry = agg["policies"][name]
    if name == SFT or not entry["train_seconds"]:
      continue
    train, evals = sum(entry["train_seconds"]), sum(entry["eval_seconds"])
    step = format_spread(entry["step_seconds"], 1.0, 2)
    lines.append(f"| {name}: RL training | {len(entry['train_seconds'])} | {train:.0f} | {step} |")
    lines.append(f"| {name}: evaluation | {len(entry['eval_seconds'])} | {evals:.0f} | |")
    total += train + evals
  lines.append(f"| **total** | | **{total:.0f}** | |")
  return "\n".join(lines)


def _comparison_text(c: Mapping) -> str:
  if c["verdict"] == NOT_RUN:
    return f"{c['label']}: not run"
  digits = 0 if c["units"] == "steps" else 1
  if c["se"] is None:
    return (f"{c['label']}: {c['diff']:+.{digits}f} {c['units']} with {c['n'][0]} vs "
            f"{c['n'][1]} seeds, no spread to judge by -> {c['verdict']}")
  z = c["diff"] / c["se"] if c["se"] else math.copysign(math.inf, c["diff"]) if c["diff"] else 0.0
  over = (f"{c['n'][0]} vs {c['n'][1]} seeds, Welch standard error" if c["spread"] == "seeds"
          else "standard errors over problems combined")
  return (f"{c['label']}: {c['diff']:+.{digits}f} ± {c['se']:.{digits}f} {c['units']} "
          f"({over}; z = {z:+.1f}) -> {c['verdict']}")


def claims_section(claims: Sequence[Mapping]) -> list[str]:
  lines = ["| claim | paper | verdict |", "|---|---|---|"]
  lines += [f"| {c['claim']} | {c['paper']} | **{c['verdict']}** |" for c in claims]
  lines.append("")
  for c in claims:
    lines.append(f"- {c['claim']}: **{c['verdict']}**")
    lines += [f"  - {_comparison_text(comp)}" for comp in c["comparisons"]]
  return lines


# ------------------------------------------------------------------------------------------------
# Plots.


def _run_curves(workdir: str, manifest: Mapping, key: str, window: int) -> dict:
  """method -> (steps, mean over seeds of the `window`-smoothed metric) for runs that logged it."""
  by_method: dict[str, list] = {}
  for run in manifest.get("runs", []):
    rows = [row for row in _metric_rows(workdir, run) if key in row]
    if len(rows) >= window:
      values = moving_average([row[key] for row in rows], window)
      by_method.setdefault(run["method"], []).append(
          ([row["step"] for row in rows][window - 1:], values))
  out = {}
  for method, curves in by_method.items():
    length = min(len(s) for s, _ in curves)
    out[method] = (curves[0][0][:length], _mean_curve([v for _, v in curves]))
  return out


def make_plots(workdir: str, manifest: Mapping, agg: Mapping) -> dict[str, str]:
  """Writes WORKDIR/plots/*.png; returns {name: path relative to WORKDIR}."""
  out_dir = os.path.join(workdir, PLOTS_DIR)
  made = {}
  w = agg["window"]
  rewards = _run_curves(workdir, manifest, REWARD_KEY, w)
  if rewards:
    series = dict(rewards)
    if agg["target"]:
      steps = [s for x, _ in rewards.values() for s in x]
      series["RLOO final (target)"] = ([min(steps), max(steps)], [agg["target"]["value"]] * 2)
    made["train_reward"] = plots.line_plot(
        series, os.path.join(out_dir, "train_reward.png"), xlabel="step",
        ylabel=f"rollout/reward ({w}-step moving average)", markers=False,
        title="Training reward (mean over seeds)")
  accuracy = _run_curves(workdir, manifest, PRM_ACC_KEY, w)
  if accuracy:
    made["prm_accuracy"] = plots.line_plot(
        accuracy, os.path.join(out_dir, "prm_accuracy.png"), xlabel="step", markers=False,
        ylabel=f"PRM pairwise accuracy ({w}-step moving average)", ylim=(0.0, 1.02),
        title="Implicit PRM: correct above wrong responses")
  for split in ("eval", "heldout"):
    curves = {name: agg["policies"][name]["eval"][split]["curve"]
              for name in _policy_order(agg, manifest) if split in agg["policies"][name]["eval"]}
    if curves:
      made[f"pass_at_k_{split}"] = plots.pass_at_k_plot(
          curves, os.path.join(out_dir, f"pass_at_k_{split}.png"),
          title=f"pass@k, {split} split (mean over seeds)")
  e = agg.get("erprm")
  if e:
    made["best_of_n"] = plots.line_plot(
        {e["columns"][role]: (e["budgets"], [100 * a for a in e["accuracy"][role]])
         for role in e["columns"]},
        os.path.join(out_dir, "best_of_n.png"), xlabel="N (candidates per problem)",
        ylabel="accuracy (%)", logx=2, title=f"Best-of-N, PRM aggregation {e['agg']}")
  return {name: os.path.relpath(path, workdir) for name, path in made.items()}


# ------------------------------------------------------------------------------------------------
# report.md


def _stage_commands(manifest: Mapping) -> list[str]:
  records = []
  sft = manifest.get("sft")
  if sft:
    records += [sft["train"], *sft["evals"].values()]
  for run in manifest.get("runs", []):
    records += [run["train"], *run["evals"].values()]
  if manifest.get("erprm"):
    records.append(manifest["erprm"]["stage"])
  return [f"# {r['stage']} ({r['seconds']:.0f}s)\n{r['command']}" for r in records]


def _preset_line(preset: Mapping) -> str:
  e = preset["erprm"]
  changed = ", ".join(preset.get("overrides", ()))
  budget = (f"the configs/mini budget changed for every stage alike by {changed}" if changed
            else "the configs/mini budget unchanged")
  return (f"Methods {', '.join(preset['methods'])}; seeds {', '.join(map(str, preset['seeds']))}; "
          f"{preset['rl_steps']} RL steps each from one SFT policy with {budget}; "
          f"final policies evaluated with {preset['eval_n']} samples + 1 greedy decode "
          f"on {preset['eval_problems']} eval problems and {preset['heldout_problems']} held-out "
          f"longer chains (max {preset['heldout_max_new_tokens']} new tokens). ER-PRM: "
          f"{e['label_problems']} x {e['solutions_per_problem']} labelled solutions, "
          f"{e['prm_steps']} PRM steps, best-of-N on {e['eval_problems']} held-out problems "
          f"with N up to {e['n_max']}.")


def _image(plots_made: Mapping, name: str, alt: str) -> list[str]:
  return [f"![{alt}]({plots_made[name]})", ""] if name in plots_made else []


def format_report(manifest: Mapping, agg: Mapping, claims: Sequence[Mapping],
                  plots_made: Mapping) -> str:
  """The text of report.md."""
  preset, n, w = manifest["preset"], agg["eval_n"], agg["window"]
  target = agg["target"]
  lines = [f"# Reproduction: preset `{preset['name']}`", "", f"    {manifest['command']}", "",
           _preset_line(preset), "",
           "## Final policies", "",
           f"Accuracy in % (mean ± standard deviation over seeds; one value: one seed). mean@{n}: "
           f"mean fraction of {n} samples correct; pass@{n}: unbiased pass@k at k = {n}; greedy: "
           "one greedy decode. Final train reward: mean `rollout/reward` of the last "
           f"{w} steps. Steps to RLOO final: first step at which the {w}-step moving average of "
           "`rollout/reward` reaches RLOO's final train reward (mean over the seeds that reach it; "
           "reached/total).", "",
           main_table(agg, manifest), ""]
  lines += ["## Training reward and sample efficiency", ""]
  lines += _image(plots_made, "train_reward", "training reward")
  if target:
    lines += [f"Target: RLOO's final training reward {target['value']:.3f} (mean over "
              f"{len(target['per_seed'])} seed(s) of the mean of the last {w} steps).", ""]
  else:
    lines += ["No RLOO run: no sample-efficiency target.", ""]
  lines += [sample_efficiency_table(agg, manifest), ""]
  if agg["prm_accuracy"]:
    lines += ["## Implicit PRM pairwise accuracy", "",
              "`prm/pairwise_accuracy`: the fraction of (correct, wrong) response pairs of a "
              "training batch that the PRM orders correctly; in %, mean ± std over seeds.", "",
              prm_table(agg), ""]
    lines += _image(plots_made, "prm_accuracy", "PRM pairwise accuracy")
  lines += ["## pass@k", ""]
  lines += _image(plots_made, "pass_at_k_eval", "pass@k, eval split")
  lines += _image(plots_made, "pass_at_k_heldout", "pass@k, held-out split")
  e = agg.get("erprm")
  lines += ["## ER-PRM best-of-N", ""]
  if e:
    lines += [f"From the SFT policy: {e['num_problems']} held-out problems, {e['n_max']} "
              f"candidates each, {e['draws']} random subsets per problem and N; PRM step scores "
              f"aggregated by {e['agg']}. Accuracy in % ± standard error over problems; mean "
              f"candidate accuracy {100 * e['mean_accuracy']:.1f}%.", "", erprm_table(e), ""]
    lines += _image(plots_made, "best_of_n", "best-of-N")
  else:
    lines += ["Not run yet.", ""]
  lines += ["## The papers' claims", "",
            "Each claim is checked by the difference of means in its favour against its standard "
            f"error: reproduced when z >= {Z_THRESHOLD:g}, reversed when z <= -{Z_THRESHOLD:g}, "
            "not reproduced in between, undetermined with fewer than two seeds on a side. The "
            "papers' numbers come from 1.5B-8B models on competition math; these runs use a "
            "~100k-parameter policy on arithmetic chains, so only the direction of each claim is "
            "tested.", ""]
  lines += claims_section(claims)
  lines += ["", "## Wall time", "", time_table(agg, manifest), "",
            "## Commands", "",
            "Each stage alone (the overrides are the complete difference from the config file):",
            "", "<details><summary>every stage's command</summary>", "", "```",
            *_stage_commands(manifest), "```", "", "</details>", ""]
  return "\n".join(lines)


def write_report(workdir: str) -> str:
  """Writes WORKDIR/report.md and WORKDIR/plots/*.png from the workdir's JSON files; returns
  the path of report.md."""
  manifest = load_results(workdir)
  agg = collect(workdir, manifest)
  made = make_plots(workdir, manifest, agg)
  text = format_report(manifest, agg, evaluate_claims(agg), made)
  path = os.path.join(workdir, REPORT_FILE)
  with open(path, "w") as fh:
    fh.write(text)
  return path
