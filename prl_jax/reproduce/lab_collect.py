"""The lab's numbers per arm and seed, gathered into results.json["lab"] (`--preset lab`).

    per_seed[arm][metric][seed] = value

metrics: "<split> mean@n" / "pass@n" / "greedy" for split eval (K = 8) and heldout (K = 12) from
the final evaluations; "steps" and "rollouts" to RLOO's final training reward and "censored"
(`lab_metrics.cost_to_target`; a censored run counts its run's length, a lower bound), and the
same to 90% of RLOO's gain ("steps@90", "rollouts@90", "censored@90"; `lab_metrics.gain_level`);
"final_reward", "entropy" (`policy/entropy`) and "auroc" (`prm/step_auroc`) as means over the
last `window` steps; "kl" (nats per sequence) and "kl_token" to the policy the run started from
(`prl_jax.eval.policy_kl`); "hacked" (the reward-hacking monitor flagged the run). Plus the
gates (WORKDIR/gates.json) and each run's monitor windows.
"""

from __future__ import annotations

from collections.abc import Mapping

from prl_jax.reproduce import lab_metrics
from prl_jax.reproduce.run_files import metric_rows, read_json

GATES_FILE = "gates.json"
SPLITS = ("eval", "heldout")
EVAL_METRICS = ("mean@n", "pass@n", "greedy")


def eval_values(workdir: str, run: Mapping, n: int) -> dict[str, float]:
  """"<split> <metric>" -> value of one run's final evaluations (those that exist)."""
  out = {}
  for split, record in run.get("evals", {}).items():
    results = read_json(workdir, record.get("results"))
    if results is None:
      continue
    summary = results["summary"]
    out.update({f"{split} mean@n": summary[f"mean@{n}"], f"{split} pass@n": summary[f"pass@{n}"],
                f"{split} greedy": summary["greedy"]})
  return out


def cost_values(cost: Mapping, suffix: str = "") -> dict:
  """A `lab_metrics.cost_to_target` result as per-seed values: a censored run at its length."""
  censored = cost["censored"]
  return {f"censored{suffix}": censored,
          f"steps{suffix}": cost["steps_run"] if censored else cost["steps"],
          f"rollouts{suffix}": cost["rollouts_run"] if censored else cost["rollouts"]}


def run_values(workdir: str, run: Mapping, n: int, target: float | None, window: int,
               level: float | None = None) -> dict:
  """Every per-seed metric of one run (module docstring) and its monitor's windows; `target`
  is RLOO's final reward, `level` 90% of its gain."""
  rows = metric_rows(workdir, run)
  summary = lab_metrics.run_summary(rows, target, window, hack_window=2 * window)
  values = {**eval_values(workdir, run, n), "final_reward": summary["final_reward"],
            "entropy": summary["entropy"], "auroc": summary["auroc"],
            "hacked": summary["hacking"]["flagged"]}
  if "cost" in summary:
    values.update(cost_values(summary["cost"]))
  if level is not None:
    values.update(cost_values(lab_metrics.cost_to_target(rows, level, window),
                              lab_metrics.LEVEL))
  kl = read_json(workdir, run.get("kl", {}).get("results"))
  if kl is not None:
    values.update(kl=kl["kl_seq"], kl_token=kl["kl_token"])
  return {"values": values, "hacking": summary["hacking"]}


def collect_lab(workdir: str, manifest: Mapping, n: int, window: int,
                target: Mapping | None) -> dict:
  """results.json["lab"]: per_seed numbers, monitor windows, gates."""
  per_seed: dict[str, dict[str, dict[int, object]]] = {}
  monitor: dict[str, dict[int, dict]] = {}
  value = None if target is None else target["value"]
  level = None if target is None else lab_metrics.gain_level(target["start"], value)
  for run in manifest.get("runs", []):
    got = run_values(workdir, run, n, value, window, level)
    arm, seed = run["method"], int(run["seed"])
    for metric, v in got["values"].items():
      per_seed.setdefault(arm, {}).setdefault(metric, {})[seed] = v
    monitor.setdefault(arm, {})[seed] = got["hacking"]
  gates = read_json(workdir, GATES_FILE)
  return {"eval_n": n, "window": window, "hack_window": 2 * window, "per_seed": per_seed,
          "monitor": monitor, "gates": gates["gates"] if gates else [],
          "target": value, "level": level,
          "start": None if target is None else target["start"]}
