"""Best-of-N with process reward models: accuracy against N, and the ER-PRM experiment end to end.

ER-PRM (Zhang et al. 2024, arXiv 2412.11006, section 6; docs/algorithms.md: ER-PRM, Evaluation metrics). For each
held-out problem the policy samples N_max candidates once. A scorer gives every candidate a
solution score: a PRM's step scores aggregated by min (the paper's default), product, last or mean
(`prl_jax.eval.metrics.best_of_n`). Accuracy at a budget N <= N_max is estimated by drawing, per
problem, `draws` random subsets of N of the N_max candidates (each subset in random order; a fixed
seed per N, so a curve never depends on which other budgets are computed) and averaging
the correctness of the candidate each method picks:

    scorer:   argmax of the scores in the subset, ties to the first in subset order
    majority: the most frequent extracted answer, ties to the answer first to reach the winning
              count (`majority_vote`); correct iff its first candidate is correct
    oracle:   1 iff any candidate of the subset is correct: pass@N (equal in expectation to the
              unbiased estimator `pass_at_k`, which is reported beside it)
    weighted: the answer with the largest sum of its candidates' scores (ER-PRM's weighted
              vote), correct iff its first candidate in the subset is

A constant scorer picks the subset's first candidate, a uniformly random one, so its expected
accuracy is the mean accuracy; the oracle scorer's is pass@N. Uncertainty is the standard error
over problems of the per-problem accuracies (the draws average out the subset noise; the problems
do not), and for every method the paired difference to majority vote with its standard error;
chosen pairs of methods get a paired bootstrap over problems (interval and p).

Only selection and its metrics live here; sampling candidates and scoring them with PRMs is the
experiment of `prl_jax.eval.prm_experiment`, the PRMs themselves are `prl_jax.prm`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prl_jax.eval.metrics import best_of_n_select, majority_vote, pass_at_k
from prl_jax.eval.plots import line_plot
from prl_jax.run import paths as run_paths

ORACLE, MAJORITY = "oracle (pass@N)", "majority vote"


# ------------------------------------------------------------------------------------------------
# Accuracy against N.


def budgets(n_max: int) -> list[int]:
  """1, 2, 4, ... up to n_max (n_max itself included when it is not a power of two)."""
  if n_max < 1:
    raise ValueError(f"n_max must be >= 1, got {n_max}")
  out = [1 << i for i in range(int(math.log2(n_max)) + 1)]
  return out if out[-1] == n_max else out + [n_max]


def subset_indices(num_problems: int, n_max: int, n: int, draws: int, seed: int) -> np.ndarray:
  """[draws, P, n] candidate indices: per draw and problem, the first n of a random permutation.

  Seeded by (seed, n) alone, so the subsets of a budget do not depend on the other budgets.
  """
  if not 1 <= n <= n_max:
    raise ValueError(f"subset size must lie in [1, {n_max}], got {n}")
  if draws < 1:
    raise ValueError(f"draws must be >= 1, got {draws}")
  rng = np.random.default_rng([int(seed), int(n)])
  return np.argsort(rng.random((draws, num_problems, n_max)), axis=-1)[..., :n]


def _pick(values: np.ndarray, subsets: np.ndarray) -> np.ndarray:
  """values[p, subsets[d, p, :]] for every draw: [D, P, n]."""
  return np.take_along_axis(values[None], subsets, axis=-1)


def selection_accuracy(scores: np.ndarray, correct: np.ndarray, subsets: np.ndarray) -> np.ndarray:
  """Per-problem accuracy [P] of picking each subset's best-scored candidate (mean over draws)."""
  d, p, n = subsets.shape
  picked = np.asarray(best_of_n_select(_pick(scores, subsets).reshape(d * p, n)))
  hit = np.take_along_axis(_pick(correct, subsets).reshape(d * p, n), picked[:, None], axis=-1)
  return hit.reshape(d, p).mean(axis=0)


def majority_accuracy(answers: Sequence[Sequence[Any]], correct: np.ndarray,
                      subsets: np.ndarray) -> np.ndarray:
  """Per-problem accuracy [P] of majority vote over each subset (no answer anywhere: wrong)."""
  d, p, _ = subsets.shape
  hits = np.zeros((d, p))
  for i in range(d):
    for j in range(p):
      order = subsets[i, j]
      _, first = majority_vote([answers[j][c] for c in order])
      hits[i, j] = correct[j, order[first]] if first >= 0 else 0.0
  return hits.mean(axis=0)


def answer_ids(answers: Sequence[Sequence[Any]]) -> np.ndarray:
  """[P, N] integer answer ids, numbered per problem in order of first appearance; -1: no answer."""
  out = np.full((len(answers), max((len(a) for a in answers), default=0)), -1, np.int64)
  for p, row in enumerate(answers):
    ids: dict[Any, int] = {}
    for i, ans in enumerate(row):
      if ans is not None:
        out[p, i] = ids.setdefault(ans, len(ids))
  return out


def weighted_vote_accuracy(scores: np.ndarray, ids: np.ndarray, correct: np.ndarray,
                           subsets: np.ndarray) -> np.ndarray:
  """Per-problem accuracy [P] of the score-weighted vote over each subset S:

      a* = argmax_a  sum_{i in S, answer_i = a} score_i

  (ER-PRM's "weighted" selection: every candidate votes for its answer with its solution score).
  Ties go to the answer first among all candidates; the pick is correct iff the subset's first
  candidate with answer a* is; a subset without any answer is wrong. Scores must be >= 0 (the
  PRMs' probabilities), or a vote would count against its answer.
  """
  scores = np.asarray(scores, np.float64)
  if np.any(scores < 0) or not np.all(np.isfinite(scores)):
    raise ValueError("a weighted vote needs finite scores >= 0 (probabilities)")
  d, p, _ = subsets.shape
  num_answers = max(int(ids.max()) + 1, 1)
  hits = np.zeros((d, p))
  rows = np.arange(p)
  for i in range(d):
    sub = subsets[i]
    a = np.take_along_axis(ids, sub, axis=-1)
    votes = a[..., None] == np.arange(num_answers)  # [P, n, A]
    totals = np.einsum("pna,pn->pa", votes, np.take_along_axis(scores, sub, axis=-1))
    present = votes.any(axis=1)
    winner = np.where(present, totals, -np.inf).argmax(axis=-1)
    first = (a == winner[:, None]).argmax(axis=-1)
    hits[i] = np.take_along_axis(correct, sub, axis=-1)[rows, first] * present.any(axis=-1)
  return hits.mean(axis=0)


def paired_bootstrap(diff: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
  """The mean of per-problem paired differences, a 95% percentile interval and a two-sided p.

  Problems are resampled with replacement `resamples` times; with m*_b the resampled means,
  p = min(1, 2 (min(#{m*_b <= 0}, #{m*_b >= 0}) + 1) / (resamples + 1)), so p is never below
  2 / (resamples + 1) and is 1 when the two methods agree on every problem.
  """
  diff = np.asarray(diff, np.float64)
  rng = np.random.default_rng(seed)
  means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
  tail = min(int((means <= 0).sum()), int((means >= 0).sum()))
  lo, hi = np.percentile(means, [2.5, 97.5])
  return {"diff": float(diff.mean()), "lo": float(lo), "hi": float(hi),
          "p": float(min(1.0, 2 * (tail + 1) / (resamples + 1)))}


def oracle_accuracy(correct: np.ndarray, subsets: np.ndarray) -> np.ndarray:
  """Per-problem accuracy [P] of an oracle: any candidate of the subset correct."""
  return _pick(correct, subsets).max(axis=-1).mean(axis=0)


def _stderr(per_problem: np.ndarray) -> float:
  p = per_problem.shape[0]
  return float(np.std(per_problem, ddof=1) / math.sqrt(p)) if p > 1 else 0.0


def roc_auc(scores: np.ndarray, correct: np.ndarray) -> float | None:
  """P(score of a correct candidate > score of a wrong one), ties counted 1/2 (Mann-Whitney).

  How well a scorer ranks candidates regardless of the problem; None without both classes.
  """
  s, c = np.ravel(np.asarray(scores, np.float64)), np.ravel(correct) > 0.5
  num_pos, num_neg = int(c.sum()), int((~c).sum())
  if num_pos == 0 or num_neg == 0:
    return None
  # Mann-Whitney through mid-ranks (ties share their average rank), O(n log n): the pairwise
  # comparison it replaces needed num_pos x num_neg bytes, tens of GB for a best-of-N run's lines.
  order = np.argsort(s, kind="stable")
  _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
  mid_rank = first + (counts + 1) / 2.0  # 1-based average rank of each distinct value
  ranks = np.empty(s.size)
  ranks[order] = np.repeat(mid_rank, counts)
  u = ranks[c].sum() - num_pos * (num_pos + 1) / 2.0
  return float(u / (num_pos * num_neg))


def within_problem_auc(scores: np.ndarray, correct: np.ndarray) -> float | None:
  """Mean over problems (with both correct and wrong candidates) of the per-problem ROC AUC.

  What best-of-N depends on: how a scorer ranks the candidates of one problem, not how it ranks
  easy problems above hard ones. None when no problem has both kinds of candidates.
  """
  values = [roc_auc(s, c) for s, c in zip(scores, correct)]
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def weighted_name(scorer: str) -> str:
  """The method name of `scorer`'s weighted vote."""
  return f"{scorer} weighted vote"


def accuracy_curves(scores: dict[str, np.ndarray], correct: np.ndarray,
                    answers: Sequence[Sequence[Any]], *, draws: int, seed: int,
                    ns: Sequence[int] | None = None, weighted: Sequence[str] = (),
                    groups: Mapping[str, Sequence[str]] | None = None,
                    comparisons: Sequence[tuple[str, str]] = (),
                    resamples: int = 2000) -> dict:
  """Accuracy against N for every scorer, majority vote and the oracle.

  Args:
    scores: name -> [P, N_max] solution scores.
    correct: [P, N_max] correctness.
    answers: [P][N_max] extracted answers (for majority vote).
    draws: random subsets per problem and budget.
    seed: seed of the subsets.
    ns: budgets (default 1, 2, 4, ..., N_max).
    weighted: scorers that also vote, weighted by their scores (`weighted_name(scorer)`).
    groups: name -> member methods (e.g. one PRM per training seed): a method whose per-problem
      accuracy is the members' mean, with "seed_std", the std over members of their accuracy.
    comparisons: (a, b) method pairs: `paired_bootstrap` of a - b over problems at every budget.
    resamples: bootstrap resamples.

  Returns:
    {"budgets", "methods": {name: {"accuracy", "stderr"[, "seed_std"]}}, "vs_majority": {name:
    {"diff", "stderr"}}, "paired": {"a - b": {"diff", "lo", "hi", "p"}}, "pass_at_n",
    "mean_accuracy"}; lists are indexed like "budgets".
  """
  correct = np.asarray(correct, np.float64)
  if correct.ndim != 2:
    raise ValueError(f"correct must be [P, N_max], got shape {correct.shape}")
  p, n_max = correct.shape
  for name, s in scores.items():
    if np.shape(s) != (p, n_max):
      raise ValueError(f"scores of {name!r} have shape {np.shape(s)}, expected {(p, n_max)}")
  ns = list(ns) if ns is not None else budgets(n_max)
  ids = answer_ids(answers) if weighted else None
  per: dict[str, list[np.ndarray]] = {
      name: [] for name in [*scores, *map(weighted_name, weighted), MAJORITY, ORACLE]}
  for n in ns:
    subsets = subset_indices(p, n_max, n, draws, seed)
    for name, s in scores.items():
      per[name].append(selection_accuracy(np.asarray(s, np.float64), correct, subsets))
    for name in weighted:
      per[weighted_name(name)].append(weighted_vote_accuracy(scores[name], ids, correct, subsets))
    per[MAJORITY].append(majority_accuracy(answers, correct, subsets))
    per[ORACLE].append(oracle_accuracy(correct, subsets))
  seed_std = {}
  for name, members in (groups or {}).items():
    per[name] = [np.mean([per[m][i] for m in members], axis=0) for i in range(len(ns))]
    seed_std[name] = [float(np.std([per[m][i].mean() for m in members], ddof=1))
                      if len(members) > 1 else 0.0 for i in range(len(ns))]
  methods = {name: {"accuracy": [float(a.mean()) for a in accs],
                    "stderr": [_stderr(a) for a in accs],
                    **({"seed_std": seed_std[name]} if name in seed_std else {})}
             for name, accs in per.items()}
  vs = {name: {"diff": [float((a - m).mean()) for a, m in zip(accs, per[MAJORITY])],
               "stderr": [_stderr(a - m) for a, m in zip(accs, per[MAJORITY])]}
        for name, accs in per.items() if name != MAJORITY}
  paired = {}
  for a, b in comparisons:
    tests = [paired_bootstrap(x - y, resamples, seed) for x, y in zip(per[a], per[b])]
    paired[f"{a} - {b}"] = {k: [t[k] for t in tests] for k in ("diff", "lo", "hi", "p")}
  c = correct.sum(axis=1).astype(int)
  return {"budgets": ns, "methods": methods, "vs_majority": vs, "paired": paired,
          "resamples": resamples,
          "pass_at_n": [float(np.mean(pass_at_k(n_max, c, n))) for n in ns],
          "mean_accuracy": float(correct.mean()), "num_problems": p, "n_max": n_max,
          "draws": draws, "seed": seed}


# ------------------------------------------------------------------------------------------------
# Report: JSON, markdown, plot.


def markdown_table(results: dict, columns: Sequence[str] | None = None) -> str:
  """Accuracy (± standard error over problems) of the chosen methods at every budget."""
  methods = results["methods"]
  columns = list(columns or methods)
  head = "| N | " + " | ".join(columns) + " |"
  rule = "|---:|" + "---:|" * len(columns)
  rows = []
  for i, n in enumerate(results["budgets"]):
    cells = [f"{100 * methods[c]['accuracy'][i]:.1f} ± {100 * methods[c]['stderr'][i]:.1f}"
             for c in columns]
    rows.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join([head, rule, *rows])


def write_report(results: dict, out_dir: str, main_columns: Sequence[str], *,
                 stem: str = "best_of_n", title: str = "Best-of-N") -> dict[str, str]:
  """Writes {stem}.json, {stem}.md (main table, then every method) and {stem}.png."""
  paths = {ext: run_paths.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md", "png")}
  run_paths.write_text(paths["json"], json.dumps(results, indent=2, sort_keys=True))
  i_max = len(results["budgets"]) - 1
  lines = [f"# {title}", "",
           f"{results['num_problems']} problems, {results['n_max']} candidates each, "
           f"{results['draws']} random subsets per problem and N (seed {results['seed']}); "
           f"accuracy in % ± standard error over problems. Mean candidate accuracy "
           f"{100 * results['mean_accuracy']:.1f}%.", "",
           markdown_table(results, main_columns), "",
           f"Paired difference to majority vote at N={results['budgets'][i_max]} "
           "(percentage points ± standard error):", ""]
  for name, d in results["vs_majority"].items():
    lines.append(f"- {name}: {100 * d['diff'][i_max]:+.1f} ± {100 * d['stderr'][i_max]:.1f}")
  seeds = {name: m["seed_std"] for name, m in results["methods"].items() if "seed_std" in m}
  if seeds:
    lines += ["", "Standard deviation over PRM seeds of the accuracy (percentage points), by N:",
              "", "| method | " + " | ".join(map(str, results["budgets"])) + " |",
              "|---|" + "---:|" * len(results["budgets"])]
    lines += [f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in std) + " |"
              for name, std in seeds.items()]
  if results.get("paired"):
    lines += ["", "Paired comparisons over problems (bootstrap, "
              f"{results.get('resamples', 'n/a')} resamples): difference in percentage points, "
              "95% interval, two-sided p:", "",
              "| comparison | " + " | ".join(f"N={n}" for n in results["budgets"]) + " |",
              "|---|" + "---|" * len(results["budgets"])]
    for name, t in results["paired"].items():
      cells = [f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] p={p:.3g}"
               for d, lo, hi, p in zip(t["diff"], t["lo"], t["hi"], t["p"])]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if results.get("auc"):
    lines += ["", "Ranking quality within a problem (ROC AUC of the solution score against "
              "correctness, mean over problems with both kinds of candidates):", ""]
    lines += [f"- {name}: {auc:.3f}" if auc is not None else f"- {name}: n/a"
              for name, auc in results["auc"].items()]
  if any(v is not None for v in results.get("step_auc", {}).values()):
    lines += ["", "Step-level ranking quality (ROC AUC of step scores against exact process "
              "labels; arithmetic chains: non-final steps, on track iff the prefix agrees with "
              "the unique correct solution; tasks with a step checker: the lines before a "
              "candidate's first wrong line against that line):", ""]
    lines += [f"- {name}: {auc:.3f}" for name, auc in results["step_auc"].items()
              if auc is not None]
  label_auc = {k[len("step_auc_eta="):]: v for k, v in results.get("labels", {}).items()
               if k.startswith("step_auc_eta=") and v is not None}
  if label_auc:
    lines += ["", "The same AUC for the Monte Carlo training labels themselves, by eta:", ""]
    lines += [f"- eta={eta}: {auc:.3f}" for eta, auc in label_auc.items()]
  lines += ["", "Every method:", "", markdown_table(results), ""]
  run_paths.write_text(paths["md"], "\n".join(lines))
  ns = results["budgets"]
  line_plot({name: (ns, [100 * a for a in results["methods"][name]["accuracy"]])
             for name in main_columns}, paths["png"], xlabel="N (candidates per problem)",
            ylabel="accuracy (%)", title=title, logx=2)
  return paths
