"""The lab's report.md (`prl-jax reproduce --preset lab`), from results.json's numbers alone.

Sections: the gates, the final policies (mean ± std over seeds), sample efficiency to RLOO's
final reward (steps and rollouts, censored runs counted), the step AUROC of every process
reward, the reward-hacking monitor, the claims with their t-tests, the curves with their spread
over seeds, and what differs from the papers. `prl_jax.reproduce.report` adds the wall times and
the commands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from prl_jax.reproduce.claims import erprm_table, format_spread
from prl_jax.reproduce.lab_claims import ALPHA, MIN_COST_SHARE, MIN_POINTS, claims_lines
from prl_jax.reproduce.run_files import metric_rows
from prl_jax.reproduce.lab_metrics import AUROC_KEY, ENTROPY_KEY, GAIN_SHARE, LEVEL, REWARD_KEY
from prl_jax.reproduce.lab_plots import arm_curves, band_plot
from prl_jax.reproduce.presets import evaluated_splits

SPLIT_NAMES = {"eval": "eval K=8", "heldout": "held-out K=12"}  # the table's column headings

# What the lab changes from the papers' setups, whatever the numbers (docs/lab.md); {n} and
# {heldout} are the preset's samples per problem and held-out clause, {budget} and {schedule}
# what the runs spent and how their learning rate moved.
DEVIATIONS = (
    "Task: register chains (K = 8 single-digit mod-10 operations, K = 12 held out) with a buggy "
    "demonstrator, not competition math; policy: the ~0.8M-parameter `lab` model from an SFT on "
    "the buggy demonstrator, not a 1.5B-8B LLM.",
    "Budget: every arm {budget} per step (configs/lab/budget.py; a preset's overrides change it "
    "for every arm alike) for the preset's RL steps (the papers run 240+ steps of 256 prompts); "
    "one shared optimizer, its learning rate {schedule}; no per-arm tuning.",
    "The accuracy filter [0.2, 0.8] with refills (PRIME's) is used by RLOO, the oracle and "
    "PRIME alike; rollouts to the target count the refills.",
    "pass@{n} and mean@{n} are measured with {n} samples per problem at temperature 1 on the eval "
    "split{heldout}; greedy is one greedy decode.",
    "KL to the SFT policy is estimated after training on the final policy's own samples "
    "(eval split), not logged during training.",
    "Claims are judged by two-sided t-tests over seeds (paired when seeds are paired) at "
    f"p < {ALPHA} with a minimum effect ({MIN_POINTS:g} point of accuracy, "
    f"{MIN_COST_SHARE:.0%} of the steps or rollouts to the target); the papers report single "
    "runs on large benchmarks.",
)

# optim.schedule in words, beside the papers' constant rate.
SCHEDULES = {
    "constant": "constant, as the papers'",
    "cosine": ("decaying to 0 over the run by a cosine (the papers keep it constant; at a constant "
               "rate the lab's runs could collapse once the task was solved, docs/lab.md, \"Late "
               "collapses\")"),
    "linear": "decaying linearly to 0 over the run (the papers keep it constant)",
}


def _arms(lab: Mapping, manifest: Mapping) -> list[str]:
  return [a for a in manifest["preset"]["methods"] if a in lab["per_seed"]]


def _values(lab: Mapping, arm: str, metric: str) -> list[float]:
  return [v for v in lab["per_seed"].get(arm, {}).get(metric, {}).values() if v is not None]


def gates_table(lab: Mapping) -> str:
  lines = ["| gate | value | threshold | result |", "|---|---|---|---|"]
  for g in lab["gates"]:
    value = g["value"]
    if isinstance(value, dict):
      value = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in value.items())
    elif isinstance(value, float):
      value = f"{value:.3f}"
    lines.append(f"| {g['name']} | {value} | {g['threshold']} | "
                 f"{'passed' if g['passed'] else '**FAILED**: ' + g['knob']} |")
  return "\n".join(lines) if lab["gates"] else "No gate measured (gates.json absent)."


def main_table(agg: Mapping, manifest: Mapping) -> str:
  """Accuracies (%), entropy and KL per policy, mean ± std over seeds."""
  lab, n = agg["lab"], agg["eval_n"]
  splits = evaluated_splits(manifest["preset"]["heldout_problems"])
  head = ["policy", "seeds"] + [f"{SPLIT_NAMES[s]} {m}" for s in splits
                                for m in (f"mean@{n}", f"pass@{n}", "greedy")]
  head += ["entropy (nats/token)", "KL to SFT (nats/seq)"]
  lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
  for name in ["sft", *manifest.get("extra_sft", {})]:  # the starting policies: one run each
    evals = agg["policies"].get(name, {}).get("eval", {})
    cells = [name, "1"]
    for split in splits:
      cells += [format_spread(evals.get(split, {}).get(m, [])) for m in ("mean@n", "pass@n",
                                                                         "greedy")]
    lines.append("| " + " | ".join(cells + ["-", "0"]) + " |")
  for arm in _arms(lab, manifest):
    cells = [arm, str(len(_values(lab, arm, "final_reward")))]
    for split in splits:
      cells += [format_spread(_values(lab, arm, f"{split} {m}")) for m in ("mean@n", "pass@n",
                                                                           "greedy")]
    cells += [format_spread(_values(lab, arm, "entropy"), 1.0, 3),
              format_spread(_values(lab, arm, "kl"), 1.0, 2)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cost_cell(lab: Mapping, arm: str, metric: str, digits: int, suffix: str = "") -> str:
  values = lab["per_seed"][arm].get(metric + suffix, {})
  censored = lab["per_seed"][arm].get("censored" + suffix, {})
  reached = [v for s, v in values.items() if not censored.get(s)]
  if not values:
    return "-"
  cell = format_spread(reached, 1.0, digits) if reached else "never"
  gone = len(values) - len(reached)
  return cell + (f" ({gone} of {len(values)} censored)" if gone else "")


def _per_seed_steps(p: Mapping, suffix: str = "") -> str:
  return ", ".join(f"{'>' if p.get('censored' + suffix, {}).get(s) else ''}{v:.0f}"
                   for s, v in sorted(p.get("steps" + suffix, {}).items())) or "-"


def efficiency_table(lab: Mapping, manifest: Mapping) -> str:
  """Steps and rollouts to RLOO's final reward and to 90% of its gain, per arm."""
  lines = ["| arm | final train reward | steps to target | rollouts to target | per seed "
           "(steps; > = censored at run length) | steps to 90% of the gain | rollouts to 90% of "
           "the gain | per seed |", "|---|---:|---:|---:|---|---:|---:|---|"]
  for arm in _arms(lab, manifest):
    p = lab["per_seed"][arm]
    lines.append(f"| {arm} | {format_spread(_values(lab, arm, 'final_reward'), 1.0, 3)} | "
                 f"{_cost_cell(lab, arm, 'steps', 0)} | {_cost_cell(lab, arm, 'rollouts', 0)} | "
                 f"{_per_seed_steps(p)} | {_cost_cell(lab, arm, 'steps', 0, LEVEL)} | "
                 f"{_cost_cell(lab, arm, 'rollouts', 0, LEVEL)} | "
                 f"{_per_seed_steps(p, LEVEL)} |")
  return "\n".join(lines)


def auroc_table(lab: Mapping, manifest: Mapping) -> str:
  lines = [f"| arm | seeds | step AUROC (last {lab['window']} steps) |", "|---|---:|---:|"]
  rows = [(arm, _values(lab, arm, "auroc")) for arm in _arms(lab, manifest)]
  lines += [f"| {arm} | {len(v)} | {format_spread(v, 1.0, 3)} |" for arm, v in rows if v]
  return "\n".join(lines) if len(lines) > 2 else "No arm logged `prm/step_auroc`."


def hacking_table(lab: Mapping, manifest: Mapping) -> str:
  lines = ["| arm | process return | runs flagged | flagged windows (steps) |",
           "|---|---|---:|---|"]
  for arm in _arms(lab, manifest):
    runs = lab["monitor"].get(arm, {})
    keys = {m["key"] for m in runs.values()}
    if keys == {None}:
      lines.append(f"| {arm} | not logged: not monitored | - | - |")
      continue
    flagged = [s for s, m in runs.items() if m["flagged"]]
    spans = "; ".join(f"seed {s}: " + ", ".join(f"{w['from']}-{w['to']}"
                                                 for w in runs[s]["windows"]) for s in flagged)
    lines.append(f"| {arm} | `{', '.join(sorted(k for k in keys if k))}` | "
                 f"{len(flagged)} of {len(runs)} | {spans or '-'} |")
  return "\n".join(lines)


def make_lab_plots(workdir: str, manifest: Mapping, agg: Mapping, out_dir: str) -> dict[str, str]:
  """Band plots of reward, step AUROC and entropy; {name: path relative to WORKDIR}."""
  rows = [(run["method"], metric_rows(workdir, run)) for run in manifest.get("runs", [])]
  lab, w = agg["lab"], agg["window"]
  made = {}
  specs = [("lab_reward", REWARD_KEY, "training reward (outcome)"),
           ("lab_auroc", AUROC_KEY, "step AUROC at the first wrong line"),
           ("lab_entropy", ENTROPY_KEY, "policy entropy (nats/token)")]
  for name, key, what in specs:
    series = arm_curves(rows, key, w)
    if not series:
      continue
    if key == REWARD_KEY and lab["target"] is not None:  # the level exists with the target
      hlines = {"RLOO final (target)": lab["target"], "90% of RLOO's gain": lab["level"]}
    else:
      hlines = {"chance": 0.5} if key == AUROC_KEY else None
    path = band_plot(series, os.path.join(out_dir, f"{name}.png"), xlabel="step",
                     ylabel=f"{key} ({w}-step moving average)", hlines=hlines,
                     title=f"{what}: mean over seeds ± std")
    made[name] = os.path.relpath(path, workdir)
  return made


def failed_gates_caveat(lab: Mapping) -> list[str]:
  """The paragraph for arms run past failed gates (`--past-failed-gates`); [] when all passed."""
  failed = [g["name"] for g in lab["gates"] if not g["passed"]]
  if not failed:
    return []
  past = "it" if len(failed) == 1 else "them"
  return [f"**{' and '.join(failed)} failed, and the arms ran past {past} "
          "(`--past-failed-gates`).** A failed G2 means the oracle control was not clearly "
          "faster than RLOO, so the task left a process reward little room; a failed G3, that "
          "PRIME's PRM did not rank the lines. A claim not reproduced below is then no evidence "
          "against its method, and one reproduced says less than on a task that passes.", ""]


def format_lab_report(manifest: Mapping, agg: Mapping, claims: Sequence[Mapping],
                      plots_made: Mapping, tail: Sequence[str]) -> str:
  """The text of the lab's report.md; `tail`: the wall-time and command sections."""
  preset, lab, w = manifest["preset"], agg["lab"], agg["window"]
  image = lambda name, alt: [f"![{alt}]({plots_made[name]})", ""] if name in plots_made else []
  target = lab["target"]
  lines = [f"# The process-reward lab: preset `{preset['name']}`", "",
           f"    {manifest['command']}", "",
           f"Arms {', '.join(preset['methods'])}; paired seeds "
           f"{', '.join(map(str, preset['seeds']))} (every arm of a seed starts from the same "
           f"SFT policy and draws its prompts in the same order); {preset['rl_steps']} RL steps "
           f"each; final policies evaluated with {preset['eval_n']} samples + 1 greedy decode on "
           f"{preset['eval_problems']} eval problems (K = 8)" +
           (f" and {preset['heldout_problems']} held-out problems (K = 12)."
            if preset["heldout_problems"] else "; no held-out split."), "",
           "## Gates", "", gates_table(lab), "", *failed_gates_caveat(lab),
           "## Final policies", "",
           f"Accuracy in % (mean ± std over seeds). Entropy: `policy/entropy` over the last {w} "
           "training steps. KL to SFT: KL(pi || pi_start) per response on the final policy's "
           "own samples (`prl_jax.eval.policy_kl`; sft_demos_rloo against sft_demos).", "",
           main_table(agg, manifest), "",
           "## Sample efficiency", ""]
  lines += image("lab_reward", "training reward")
  lines += [("Target: RLOO's final training reward "
             f"{target:.3f} (mean over its seeds of its last {w} steps). " if target is not None
             else "No RLOO run: no target. ") +
            f"Steps / rollouts: the first step whose {w}-step moving average of `rollout/reward` "
            "reaches it, and the responses sampled up to then (filter refills included); mean ± "
            "std over the seeds that reach it. A censored run never reached it: it counts at its "
            "run's length in the claims (a lower bound)." +
            (f" The same to {GAIN_SHARE:.0%} of RLOO's gain, {lab['level']:.3f} (its "
             f"first step's reward {lab['start']:.3f} + {GAIN_SHARE:g} x (final - "
             "first)): with a learning rate that decays to 0 "
             "RLOO's own smoothed reward reaches its final value only at its last steps."
             if lab["level"] is not None else ""), "", efficiency_table(lab, manifest), "",
            "## Step AUROC of the process rewards", "",
            "`prm/step_auroc`: right lines before a response's first wrong line against that line, "
            "each scored by the arm's process reward summed over its tokens (0.5 is chance).", "",
            auroc_table(lab, manifest), ""]
  lines += image("lab_auroc", "step AUROC")
  lines += ["## Reward-hacking monitor", "",
            f"Windows of {lab['hack_window']} steps (stride {lab['hack_window'] // 2}) where the "
            "least-squares slope of the process return is positive while the outcome reward "
            "falls by more than 0.02 over the window (`prl_jax.reproduce.lab_metrics`).", "",
            hacking_table(lab, manifest), ""]
  lines += image("lab_entropy", "policy entropy")
  e = agg.get("erprm")
  lines += ["## ER-PRM best-of-N", ""]
  lines += ([f"From the lab SFT policy (needs no RL run): {e['num_problems']} held-out problems, "
             f"{e['n_max']} candidates each, {e['draws']} random subsets per problem and N; PRM "
             f"step scores aggregated by {e['agg']}; each PRM column is the mean over its PRM "
             "seeds. Accuracy in % ± standard error over problems; mean candidate accuracy "
             f"{100 * e['mean_accuracy']:.1f}%.", "", erprm_table(e), "",
             "The weighted votes, the std over PRM seeds, the paired bootstrap comparisons and the "
             "step-level AUROCs are in erprm/best_of_n.md.", ""]
            if e else ["Not run yet.", ""])
  lines += ["## The papers' claims", "",
            f"Two-sided t-tests over seeds: paired when both arms ran the same seeds, Welch's "
            f"otherwise; reproduced when p < {ALPHA} in the claim's direction, reversed when "
            f"p < {ALPHA} against it, each only when the difference reaches the minimum effect "
            f"({MIN_POINTS:g} point of accuracy, {MIN_COST_SHARE:.0%} of the slower arm's steps or "
            "rollouts to the target; none for entropy and KL) "
            "(`prl_jax.reproduce.lab_claims`).", ""]
  lines += failed_gates_caveat(lab)
  lines += claims_lines(claims)
  heldout = " and on the K = 12 held-out split" if preset["heldout_problems"] else ""
  budget = " or ".join(f"{p} prompts x {r} responses" for p, r in agg.get("budgets", [])) or (
      "the same prompts x responses")
  schedule = " or ".join(SCHEDULES.get(s, s) for s in agg.get("schedules", [])) or "shared"
  lines += ["", "## Deviations from the papers", ""]
  lines += [f"- {d.format(n=preset['eval_n'], heldout=heldout, budget=budget, schedule=schedule)}"
            for d in DEVIATIONS] + [""]
  return "\n".join([*lines, *tail])
