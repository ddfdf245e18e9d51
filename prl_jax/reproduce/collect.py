"""The numbers of a reproduction, gathered from a workdir's files into WORKDIR/results.json.

Inputs, all written by `prl-jax reproduce` (`prl_jax.reproduce.pipeline`): the manifest of runs,
each run's metrics.jsonl, each policy's eval{,_heldout}/results.json and erprm/best_of_n.json.
Aggregates are means over seeds with their spreads (`prl_jax.reproduce.claims`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from prl_jax.eval.best_of_n import MAJORITY, ORACLE
from prl_jax.reproduce.claims import (BASELINE, ERPRM_ROLES, evaluate_claims, final_reward,
                                      steps_to_reach)
from prl_jax.reproduce.lab_claims import evaluate_lab_claims
from prl_jax.reproduce.lab_collect import collect_lab
from prl_jax.reproduce.run_files import metric_rows, read_json
from prl_jax.run import paths

RESULTS_FILE = "results.json"
REWARD_KEY, PRM_ACC_KEY, STEP_TIME_KEY = "rollout/reward", "prm/pairwise_accuracy", "time/step_s"
SFT = "sft"


# ------------------------------------------------------------------------------------------------
# Gathering the numbers.


def _eval_numbers(summary: Mapping, n: int) -> dict:
  return {"mean@n": summary[f"mean@{n}"], "pass@n": summary[f"pass@{n}"],
          "greedy": summary["greedy"], "curve": [summary[f"pass@{k}"] for k in range(1, n + 1)]}


def _policy_evals(workdir: str, evals: Mapping, n: int) -> dict:
  """split -> numbers of one policy's eval results (splits not evaluated yet are left out)."""
  out = {}
  for split, record in evals.items():
    results = read_json(workdir, record.get("results"))
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


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
  """Mean over curves, truncated to the shortest (runs of a partial reproduction may differ)."""
  length = min(len(c) for c in curves)
  return [float(v) for v in np.mean([c[:length] for c in curves], axis=0)]


def _baseline_target(runs: Sequence[dict], window: int) -> dict | None:
  """RLOO's final reward (mean over its seeds of the last `window` steps' mean) and where its
  runs started (mean over its seeds of the first step's reward: the SFT policy's)."""
  baseline = [r["rewards"] for r in runs if r["method"] == BASELINE and r["rewards"]]
  if not baseline:
    return None
  finals = [final_reward(rewards, window) for rewards in baseline]
  return {"method": BASELINE, "value": float(np.mean(finals)), "per_seed": finals,
          "start": float(np.mean([rewards[0] for rewards in baseline]))}


def _load_runs(workdir: str, manifest: Mapping) -> list[dict]:
  """The manifest's runs with their metric rows and `rollout/reward` series attached."""
  loaded = []
  for run in manifest.get("runs", []):
    rows = metric_rows(workdir, run)
    loaded.append({**run, "rows": rows, "rewards": [row[REWARD_KEY] for row in rows]})
  return loaded


def saved_configs(workdir: str, runs: Sequence[Mapping]) -> list[dict]:
  """Each run's saved config.json (what it was configured with, whatever the preset's
  overrides were); a run not started yet has none and is skipped."""
  configs = (read_json(workdir, paths.join(run["dir"], "config.json")) for run in runs)
  return [c for c in configs if c is not None]


def run_budgets(configs: Iterable[Mapping]) -> list[list[int]]:
  """The distinct [prompts per step, responses per prompt] of runs' saved configs."""
  budgets = {(c["rollout"]["prompts_per_step"], c["rollout"]["n"]) for c in configs}
  return [list(b) for b in sorted(budgets)]


def run_schedules(configs: Iterable[Mapping]) -> list[str]:
  """The distinct learning-rate schedules (optim.schedule) of runs' saved configs."""
  return sorted({c["optim"]["schedule"] for c in configs if "schedule" in c.get("optim", {})})


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


def _train_seconds(run: Mapping) -> float:
  """A run's training time: its stage's wall time, or the sum of its steps' logged times when
  that is larger, i.e. when an earlier call trained the steps (a lab gate's run, continued by
  the arm's stage, or a resumed run) and the stage only timed the rest."""
  logged = sum(float(row.get(STEP_TIME_KEY, 0.0)) for row in run["rows"])
  return max(float(run["train"]["seconds"]), logged)


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
  for name, stage in manifest.get("extra_sft", {}).items():  # e.g. the lab's sft_demos
    entry = policies.setdefault(name, _new_policy())
    entry["seeds"].append(None)
    _add_evals(entry, _policy_evals(workdir, stage["evals"], n))
  prm_accuracy: dict[str, dict] = {}
  for run in loaded:
    entry = policies.setdefault(run["method"], _new_policy())
    entry["seeds"].append(run["seed"])
    _add_evals(entry, _policy_evals(workdir, run["evals"], n))
    entry["train_seconds"].append(_train_seconds(run))
    entry["eval_seconds"].append(sum(e["seconds"] for e in run["evals"].values()))
    if run["rewards"]:
      _add_training(entry, run, window, target)
      _add_prm_accuracy(prm_accuracy, run, window)
  for entry in policies.values():
    for bucket in entry["eval"].values():
      bucket["curve"] = mean_curve(bucket["curve"])
  configs = saved_configs(workdir, loaded)
  agg = {"eval_n": n, "window": window, "rl_steps": preset["rl_steps"], "target": target,
         "policies": policies, "prm_accuracy": prm_accuracy,
         "budgets": run_budgets(configs), "schedules": run_schedules(configs),
         "erprm": collect_erprm(workdir, manifest.get("erprm")), "times": _times(manifest)}
  if preset.get("claims") == "lab":
    agg["lab"] = collect_lab(workdir, manifest, n, window, target)
  return agg


def judge_claims(agg: Mapping) -> list[dict]:
  """The preset's claims: the lab's t-tests when the aggregate holds the lab's numbers, else the
  mini presets' z-test (`prl_jax.reproduce.claims`)."""
  return evaluate_lab_claims(agg["lab"]) if "lab" in agg else evaluate_claims(agg)


def _erprm_columns(results: Mapping, agg: str) -> dict[str, str]:
  """Role (ER-PRM, hard, soft, ORM, majority, oracle) -> method name in best_of_n.json: each
  label type's mean over PRM seeds when it has several (`seed_groups`), else its one PRM."""
  groups = results.get("seed_groups")
  if groups:
    scorers = [(name, g["kind"], g["label"]) for name, g in groups.items()]
  else:
    scorers = [(name if info["kind"] == "orm" else f"{name} [{agg}]", info["kind"], info["label"])
               for name, info in sorted(results.get("prms", {}).items())]
  roles = {}
  for method, kind, label in scorers:
    role = "ORM" if kind == "orm" else {"inf": "hard", "0.0": "soft"}.get(label, "ER-PRM")
    roles.setdefault(role, method)
  roles.update(majority=MAJORITY, oracle=ORACLE)
  return {role: roles[role] for role in ERPRM_ROLES
          if role in roles and roles[role] in results["methods"]}


def collect_erprm(workdir: str, erprm: Mapping | None) -> dict | None:
  """Accuracy ± standard error over problems against N for each role, from best_of_n.json."""
  results = read_json(workdir, erprm["results"]) if erprm else None
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
  out = dict(manifest.get("gate_seconds", {}))  # the lab gates' stages no arm shares
  sft = manifest.get("sft")
  if sft:
    out["SFT"] = sft["train"]["seconds"]
    out["SFT evaluation"] = sum(e["seconds"] for e in sft["evals"].values())
  for name, stage in manifest.get("extra_sft", {}).items():
    out[name] = stage["train"]["seconds"]
    out[f"{name} evaluation"] = sum(e["seconds"] for e in stage["evals"].values())
  if manifest.get("erprm"):
    out["ER-PRM experiment"] = manifest["erprm"]["stage"]["seconds"]
  return out


# ------------------------------------------------------------------------------------------------
# results.json.


def write_json_atomic(path: str, value) -> None:
  """Writes JSON whole (prl_jax.run.paths.write_text), so a kill never leaves half a file."""
  paths.write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def save_results(workdir: str, manifest: Mapping) -> dict:
  """Writes WORKDIR/results.json: the manifest, every aggregate number and the claims."""
  agg = collect(workdir, manifest)
  results = {**manifest, "aggregates": agg, "claims": judge_claims(agg)}
  write_json_atomic(paths.join(workdir, RESULTS_FILE), results)
  return results


def load_results(workdir: str) -> dict:
  path = paths.join(workdir, RESULTS_FILE)
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} does not exist: run `prl-jax reproduce --workdir {workdir}` "
                            "first (it writes results.json after every stage).")
  return json.loads(paths.read_text(path))


