"""The reproduction report: tables, plots and the papers' claims, from a workdir's JSON files alone.

    write_report("runs/demo")   # runs/demo/report.md and runs/demo/plots/*.png

Inputs, all written by `prl-jax reproduce` (prl_jax/reproduce.py): WORKDIR/results.json (which
runs exist, their stage records and commands), each run's metrics.jsonl, each policy's
eval{,_heldout}/results.json and erprm/best_of_n.json. Nothing is sampled or trained here, so the
report regenerates byte for byte from those files (`prl-jax report WORKDIR`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from prl_jax.eval import plots
from prl_jax.reproduce.claims import (NOT_RUN, Z_THRESHOLD, erprm_table, evaluate_claims,
                                      format_spread, moving_average)
from prl_jax.reproduce.collect import (PRM_ACC_KEY, REWARD_KEY, SFT, collect, judge_claims,
                                       load_results, mean_curve)
from prl_jax.reproduce.run_files import metric_rows
from prl_jax.reproduce.lab_report import format_lab_report, make_lab_plots
from prl_jax.reproduce.presets import evaluated_splits
from prl_jax.run import paths

REPORT_FILE, PLOTS_DIR = "report.md", "plots"


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
  n, splits = agg["eval_n"], evaluated_splits(manifest["preset"]["heldout_problems"])
  head = ["policy", "seeds"] + [f"{split} {m}" for split in splits
                                for m in (f"mean@{n}", f"pass@{n}", "greedy")]
  head += ["final train reward", "steps to RLOO final"]
  lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
  for name in _policy_order(agg, manifest):
    entry = agg["policies"][name]
    cells = [name, str(len(entry["seeds"]))]
    for split in splits:
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
    rows = [row for row in metric_rows(workdir, run) if key in row]
    if len(rows) >= window:
      values = moving_average([row[key] for row in rows], window)
      by_method.setdefault(run["method"], []).append(
          ([row["step"] for row in rows][window - 1:], values))
  out = {}
  for method, curves in by_method.items():
    length = min(len(s) for s, _ in curves)
    out[method] = (curves[0][0][:length], mean_curve([v for _, v in curves]))
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
        hlines={"chance (0.5)": 0.5},
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
  for stage in manifest.get("extra_sft", {}).values():
    records += [stage["train"], *stage["evals"].values()]
  for run in manifest.get("runs", []):
    records += [run["train"], *run["evals"].values(), *([run["kl"]] if "kl" in run else [])]
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
          f"on {preset['eval_problems']} eval problems" +
          (f" and {preset['heldout_problems']} held-out longer chains (max "
           f"{preset['heldout_max_new_tokens']} new tokens)" if preset["heldout_problems"] else "")
          + ". ER-PRM: "
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
              "`prm/pairwise_accuracy`: per group of a training batch, the outcome-weighted "
              "fraction of response pairs with different outcomes that the PRM orders like "
              "their outcomes (a group without such a pair counts 0.5), averaged over groups "
              "as PRIME's `compute_dpo_accuracy`; in %, mean ± std over seeds.", "",
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
  lines += ["", *tail_sections(agg, manifest)]
  return "\n".join(lines)


def tail_sections(agg: Mapping, manifest: Mapping) -> list[str]:
  """The wall-time table and every stage's command (the last sections of every report)."""
  return ["## Wall time", "", time_table(agg, manifest), "",
          "## Commands", "",
          "Each stage alone (the overrides are the complete difference from the config file):",
          "", "<details><summary>every stage's command</summary>", "", "```",
          *_stage_commands(manifest), "```", "", "</details>", ""]


def write_report(workdir: str) -> str:
  """Writes WORKDIR/report.md and WORKDIR/plots/*.png from the workdir's JSON files; returns
  the path of report.md."""
  manifest = load_results(workdir)
  agg = collect(workdir, manifest)
  if "lab" in agg:
    made = make_lab_plots(workdir, manifest, agg, os.path.join(workdir, PLOTS_DIR))
    text = format_lab_report(manifest, agg, judge_claims(agg), made,
                             tail_sections(agg, manifest))
  else:
    text = format_report(manifest, agg, evaluate_claims(agg), make_plots(workdir, manifest, agg))
  path = paths.join(workdir, REPORT_FILE)
  paths.write_text(path, text)
  return path
