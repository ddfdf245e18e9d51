"""Best-of-N with process reward models: accuracy against N, and the ER-PRM experiment end to end.

ER-PRM (Zhang et al. 2024, arXiv 2412.11006, section 6; ALGORITHMS.md sections 5 and 7). For each
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

A constant scorer picks the subset's first candidate, a uniformly random one, so its expected
accuracy is the mean accuracy; the oracle scorer's is pass@N. Uncertainty is the standard error
over problems of the per-problem accuracies (the draws average out the subset noise; the problems
do not), and for every method the paired difference to majority vote with its standard error.

`run_erprm` is the whole experiment (`prl-jax erprm`): Monte Carlo labels from pi_0, PRMs at the
configured eta and at the hard and soft limits plus an outcome RM, then best-of-N on held-out
problems. `run_best_of_n` scores ready PRMs (`prl-jax best-of-n`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data.registry import get_task
from prl_jax.distributed import to_host
from prl_jax.eval.metrics import (AGGREGATIONS, best_of_n, best_of_n_select, majority_vote,
                                  pass_at_k)
from prl_jax.eval.plots import line_plot
from prl_jax.models.config import ModelConfig
from prl_jax.progress import progress_bar, say
from prl_jax.rewards import erprm_labels
from prl_jax.rewards.verify import extract_answer
from prl_jax.sampling import SamplingConfig
from prl_jax.train import prm as prm_lib
from prl_jax.run.batch import make_sequences
from prl_jax.run.context import build_context, initial_policy_params

ORACLE, MAJORITY = "oracle (pass@N)", "majority vote"


# ------------------------------------------------------------------------------------------------
# Candidates and their scores.


@dataclasses.dataclass
class Candidates:
  """N_max sampled solutions for each of P problems.

  Attributes:
    problems: [P] example dicts.
    texts: [P][N] solution texts (EOS removed).
    finished: [P, N] bool, the solution ended with EOS.
    correct: [P, N] float 0/1 from the task checker.
    answers: [P][N] extracted final answers (None when there is none), for majority vote.
  """

  problems: list[dict]
  texts: list[list[str]]
  finished: np.ndarray
  correct: np.ndarray
  answers: list[list[str | None]]


def sample_candidates(params: Any, model_cfg: ModelConfig, tokenizer: Any, scfg: SamplingConfig,
                      problems: Sequence[dict], n: int, key: jax.Array, check, *,
                      max_rows: int = 512, mesh=None, progress: bool = False) -> Candidates:
  """Samples `n` candidates per problem from the policy and checks them (`progress`: a bar)."""
  prompts = [tokenizer.encode(ex["prompt"]) for ex in problems]
  responses = erprm_labels.sample_responses(params, model_cfg, prompts, n, key, scfg,
                                            max_rows=max_rows, mesh=mesh, progress=progress,
                                            desc="best-of-N: candidates")
  texts = [[tokenizer.decode(ids) for ids, _ in group] for group in responses]
  finished = np.array([[done for _, done in group] for group in responses], bool)
  flat = check([ex for ex in problems for _ in range(n)], [t for group in texts for t in group])
  correct = (np.asarray(flat, np.float64).reshape(len(problems), n) > 0.5).astype(np.float64)
  answers = [[extract_answer(t) for t in group] for group in texts]
  return Candidates(list(problems), texts, finished, correct, answers)


_scores_jit = jax.jit(prm_lib.prm_step_scores, static_argnums=(0,))


def prm_step_score_lists(model_cfg: ModelConfig, params: Any, spec: prm_lib.PrmSpec,
                         tokenizer: Any, problems: Sequence[dict], texts: Sequence[Sequence[str]],
                         finished: np.ndarray, prompt_len: int, response_len: int,
                         *, rows: int = 256, place=None, progress: bool = False,
                         desc: str = "scoring") -> list[list[float]]:
  """Step scores of every candidate, [P*N][K_j], problem-major.

  `problems`, `texts` and `finished` are those of `Candidates`: [P] examples, [P][N] solution
  texts, [P, N] whether each ended with EOS.

  Candidates are split into steps as the PRM's labels were (`spec`), packed like its training
  data (`prm_lib.pack_solution`) and scored in fixed-size chunks of `rows` (the last one padded) so
  one program serves the whole set. An ORM has one "step", the last token. `progress` draws a bar
  labelled `desc` on stderr over the candidates.
  """
  plus_id = prm_lib.token_id(tokenizer, spec.plus_token, "plus_token")
  minus_id = prm_lib.token_id(tokenizer, spec.minus_token, "minus_token")
  encode = lambda text: tokenizer.encode(text)
  prompts, packed = [], []
  for ex, group, done in zip(problems, texts, finished):
    prompt = encode(ex["prompt"])
    for text, fin in zip(group, done):
      steps = erprm_labels.split_steps(text, spec.min_step_chars, spec.delimiter)
      ids, ends = prm_lib.pack_solution(encode, tokenizer.eos_id, steps, bool(fin))
      prompts.append(prompt)
      packed.append((ids, ends[-1:] if spec.kind == "orm" else ends))
  # Per-step encoding can make a response longer than sampled; grow the width once, in 8s.
  width = max([response_len] + [len(ids) for ids, _ in packed])
  width = -(-width // 8) * 8
  place = place or (lambda tree: tree)
  out: list[list[float]] = []
  bar = progress_bar(len(packed), desc, enabled=progress, unit="candidate")
  for start in range(0, len(packed), rows):
    chunk = list(range(start, min(start + rows, len(packed))))
    padded = chunk + [chunk[-1]] * (rows - len(chunk))
    seq = make_sequences([prompts[i] for i in padded], [packed[i][0] for i in padded],
                                 prompt_len, width, tokenizer.pad_id)
    step_end = np.zeros((rows, width), bool)
    for r, i in enumerate(padded):
      step_end[r, packed[i][1]] = True
    scores = to_host(_scores_jit(model_cfg, params, place(seq), place(step_end), plus_id,
                                 minus_id))
    for r, i in enumerate(chunk):
      out.append(scores[r, packed[i][1]].tolist())
    bar.update(len(chunk))
  bar.close()
  return out


def solution_scores(step_lists: Sequence[Sequence[float]], agg: str, shape: tuple[int, int]
                    ) -> np.ndarray:
  """[P, N] solution scores from per-candidate step scores with `best_of_n(agg)`."""
  longest = max(1, max(len(s) for s in step_lists))
  values = np.zeros((len(step_lists), longest), np.float32)
  valid = np.zeros((len(step_lists), longest), bool)
  for i, s in enumerate(step_lists):
    values[i, :len(s)] = s
    valid[i, :len(s)] = True
  return np.asarray(best_of_n(values, agg, valid)).reshape(shape)


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
  s, c = np.ravel(scores), np.ravel(correct) > 0.5
  pos, neg = s[c], s[~c]
  if pos.size == 0 or neg.size == 0:
    return None
  greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return float(greater / (pos.size * neg.size))


def within_problem_auc(scores: np.ndarray, correct: np.ndarray) -> float | None:
  """Mean over problems (with both correct and wrong candidates) of the per-problem ROC AUC.

  What best-of-N depends on: how a scorer ranks the candidates of one problem, not how it ranks
  easy problems above hard ones. None when no problem has both kinds of candidates.
  """
  values = [roc_auc(s, c) for s, c in zip(scores, correct)]
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _on_track_auc(items) -> float | None:
  """ROC AUC of step values against "the reference solution starts with this prefix".

  items: (reference solution, steps, values per step); the last step of each is skipped (it is
  judged by the outcome, not by a prefix).
  """
  values, on_track = [], []
  for reference, steps, step_values in items:
    for k in range(len(steps) - 1):
      values.append(step_values[k])
      on_track.append(float(reference.startswith("".join(steps[:k + 1]))))
  return roc_auc(np.array(values), np.array(on_track)) if values else None


def reference_step_auc(cands: Candidates, step_lists: Sequence[Sequence[float]],
                       spec: prm_lib.PrmSpec) -> float | None:
  """Step-level ranking quality of a PRM against exact process labels (arithmetic chains only).

  An arithmetic chain has one correct solution, the solver's one operation per line, so a
  candidate's prefix s_1..s_k (k < K) is on track iff the reference solution starts with it. This
  is the ROC AUC of the PRM's non-final step scores against that; None for other tasks (whose
  correct solutions are not unique) and for an ORM.
  """
  if spec.kind != "prm" or any(ex.get("task") != "arithmetic" for ex in cands.problems):
    return None
  texts = [(ex, t) for ex, group in zip(cands.problems, cands.texts) for t in group]
  return _on_track_auc(
      (ex["solution"], erprm_labels.split_steps(t, spec.min_step_chars, spec.delimiter), values)
      for (ex, t), values in zip(texts, step_lists))


def reference_label_auc(records: Sequence[dict], problems: Sequence[dict],
                        label: str) -> float | None:
  """The same AUC for the Monte Carlo labels themselves (arithmetic chains only).

  How well the labels at one eta separate on-track from off-track prefixes: an upper reference
  for what a PRM trained on them can learn. `problems` supply the reference solutions by question.
  """
  if any(r.get("task") != "arithmetic" for r in records):
    return None
  reference = {ex["question"]: ex["solution"] for ex in problems}
  return _on_track_auc((reference[r["question"]], r["steps"], r["labels"][label])
                       for r in records)


def accuracy_curves(scores: dict[str, np.ndarray], correct: np.ndarray,
                    answers: Sequence[Sequence[Any]], *, draws: int, seed: int,
                    ns: Sequence[int] | None = None) -> dict:
  """Accuracy against N for every scorer, majority vote and the oracle.

  Args:
    scores: name -> [P, N_max] solution scores.
    correct: [P, N_max] correctness.
    answers: [P][N_max] extracted answers (for majority vote).
    draws: random subsets per problem and budget.
    seed: seed of the subsets.
    ns: budgets (default 1, 2, 4, ..., N_max).

  Returns:
    {"budgets", "methods": {name: {"accuracy", "stderr"}}, "vs_majority": {name: {"diff",
    "stderr"}}, "pass_at_n", "mean_accuracy"}; lists are indexed like "budgets".
  """
  correct = np.asarray(correct, np.float64)
  if correct.ndim != 2:
    raise ValueError(f"correct must be [P, N_max], got shape {correct.shape}")
  p, n_max = correct.shape
  for name, s in scores.items():
    if np.shape(s) != (p, n_max):
      raise ValueError(f"scores of {name!r} have shape {np.shape(s)}, expected {(p, n_max)}")
  ns = list(ns) if ns is not None else budgets(n_max)
  per: dict[str, list[np.ndarray]] = {name: [] for name in [*scores, MAJORITY, ORACLE]}
  for n in ns:
    subsets = subset_indices(p, n_max, n, draws, seed)
    for name, s in scores.items():
      per[name].append(selection_accuracy(np.asarray(s, np.float64), correct, subsets))
    per[MAJORITY].append(majority_accuracy(answers, correct, subsets))
    per[ORACLE].append(oracle_accuracy(correct, subsets))
  methods = {name: {"accuracy": [float(a.mean()) for a in accs],
                    "stderr": [_stderr(a) for a in accs]} for name, accs in per.items()}
  vs = {name: {"diff": [float((a - m).mean()) for a, m in zip(accs, per[MAJORITY])],
               "stderr": [_stderr(a - m) for a, m in zip(accs, per[MAJORITY])]}
        for name, accs in per.items() if name != MAJORITY}
  c = correct.sum(axis=1).astype(int)
  return {"budgets": ns, "methods": methods, "vs_majority": vs,
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
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md", "png")}
  with open(paths["json"], "w") as fh:
    json.dump(results, fh, indent=2, sort_keys=True)
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
  if results.get("auc"):
    lines += ["", "Ranking quality within a problem (ROC AUC of the solution score against "
              "correctness, mean over problems with both kinds of candidates):", ""]
    lines += [f"- {name}: {auc:.3f}" if auc is not None else f"- {name}: n/a"
              for name, auc in results["auc"].items()]
  if any(v is not None for v in results.get("step_auc", {}).values()):
    lines += ["", "Step-level ranking quality (ROC AUC of non-final step scores against exact "
              "process labels: the prefix agrees with the unique correct solution):", ""]
    lines += [f"- {name}: {auc:.3f}" for name, auc in results["step_auc"].items()
              if auc is not None]
  label_auc = {k[len("step_auc_eta="):]: v for k, v in results.get("labels", {}).items()
               if k.startswith("step_auc_eta=") and v is not None}
  if label_auc:
    lines += ["", "The same AUC for the Monte Carlo training labels themselves, by eta:", ""]
    lines += [f"- eta={eta}: {auc:.3f}" for eta, auc in label_auc.items()]
  lines += ["", "Every method:", "", markdown_table(results), ""]
  with open(paths["md"], "w") as fh:
    fh.write("\n".join(lines))
  ns = results["budgets"]
  line_plot({name: (ns, [100 * a for a in results["methods"][name]["accuracy"]])
             for name in main_columns}, paths["png"], xlabel="N (candidates per problem)",
            ylabel="accuracy (%)", title=title, logx=2)
  return paths


# ------------------------------------------------------------------------------------------------
# Experiments from a config.


@dataclasses.dataclass(frozen=True)
class ErprmOptions:
  """Sizes of the ER-PRM experiment (command-line flags of `prl-jax erprm` / `best-of-n`).

  Attributes:
    label_problems: distinct training questions whose pi_0 solutions are labelled (at most all
      of them).
    solutions_per_problem: pi_0 solutions labelled per problem.
    min_step_chars: steps shorter than this merge with the next (ER-PRM: 30 for prose).
    prm_steps, prm_batch_size: PRM training (learning rate: config.optim.prm_lr, clipping
      config.optim.prm_grad_clip).
    eval_problems: held-out problems for best-of-N.
    n_max: candidates sampled per held-out problem.
    draws: random subsets per problem and budget.
    max_rows: rows per sampler call.
    keep_completions: store the completion texts in labels.jsonl.
  """

  label_problems: int = 256
  solutions_per_problem: int = 4
  min_step_chars: int = 0
  prm_steps: int = 300
  prm_batch_size: int = 32
  eval_problems: int = 128
  n_max: int = 16
  draws: int = 200
  max_rows: int = 512
  keep_completions: bool = False

  def __post_init__(self):
    for name in ("label_problems", "solutions_per_problem", "prm_steps", "prm_batch_size",
                 "eval_problems", "n_max", "draws", "max_rows"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
    if self.min_step_chars < 0:
      raise ConfigError(f"--min-step-chars must be >= 0, got {self.min_step_chars}.")


def heldout_problems(ctx: Any, count: int, exclude: set[str]) -> list[dict]:
  """`count` evaluation problems whose questions are not in `exclude` (e.g. the SFT train set).

  Synthetic tasks draw them from their own random stream (split "bestofn", same difficulty as
  training); a task from files uses its eval examples.
  """
  task = ctx.config.task
  if task.train_file:
    pool = ctx.eval_examples
  else:
    options = dict(low=1, high=task.max_operand) if task.name == "arithmetic" else {}
    pool = get_task(task.name).generate(max(20 * count, 1000), (task.min_ops, task.max_ops),
                                        task.seed, split="bestofn", **options)
  out, seen = [], set(exclude)
  for ex in pool:
    key = ex.get("question") or ex["prompt"]
    if key not in seen:
      seen.add(key)
      out.append(ex)
    if len(out) == count:
      break
  if not out:
    raise ConfigError("No held-out problems are left after excluding the training questions; "
                      "use a larger task (task.max_operand, task.max_ops) or an eval file.")
  if len(out) < count:
    say(f"best-of-N: only {len(out)} unseen problems exist; using them all.")
  return out


def _policy(ctx: Any):
  if not ctx.hf_dir:
    raise ConfigError("The ER-PRM experiment samples from an SFT policy: pass "
                      "--config.init_from=DIR (an `prl-jax sft` export, e.g. runs/sft/final_hf).")
  return ctx.place_state(initial_policy_params(ctx))


def _mesh(ctx):
  return ctx.mesh if ctx.mesh.size > 1 else None


def evaluate_prms(ctx: Any, policy_params: Any, prms: Sequence[tuple[str, Any]],
                  options: ErprmOptions, exclude: set[str], *, agg: str) -> tuple[dict, list[str]]:
  """Samples candidates for held-out problems and runs best-of-N for each PRM.

  Args:
    prms: (directory, training summary or None) per PRM.
    agg: the aggregation of the main table (every aggregation is computed).

  Returns:
    (results, the method names of the main table).
  """
  config = ctx.config
  problems = heldout_problems(ctx, options.eval_problems, exclude)
  scfg = ctx.sampling.replace(temperature=config.eval.temperature,
                              greedy=config.eval.temperature == 0)
  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  t0 = time.perf_counter()
  cands = sample_candidates(policy_params, ctx.model_cfg, ctx.tokenizer, scfg, problems,
                            options.n_max, key, ctx.verifier, max_rows=options.max_rows,
                            mesh=_mesh(ctx), progress=config.log.progress)
  say(f"best-of-N: {len(problems)} problems x {options.n_max} candidates sampled "
      f"({time.perf_counter() - t0:.0f}s), mean accuracy {cands.correct.mean():.3f}")
  shape = cands.correct.shape
  scores, main, auc, step_auc, info = {}, [], {}, {}, {}
  for directory, summary in prms:
    spec, model_cfg, params = prm_lib.load_prm(directory, dtype=config.model.dtype)
    if spec.name in info:  # two PRMs of the same name: tell them apart by directory
      spec = dataclasses.replace(spec, name=f"{spec.name} {os.path.basename(directory)}")
    steps = prm_step_score_lists(model_cfg, ctx.place_state(params), spec, ctx.tokenizer,
                                 cands.problems, cands.texts, cands.finished, ctx.prompt_len,
                                 config.rollout.max_new_tokens, place=ctx.place_batch,
                                 progress=config.log.progress, desc=f"scoring: {spec.name}")
    step_auc[spec.name] = reference_step_auc(cands, steps, spec)
    aggs = ("last",) if spec.kind == "orm" else AGGREGATIONS
    for a in aggs:
      name = spec.name if spec.kind == "orm" else f"{spec.name} [{a}]"
      scores[name] = solution_scores(steps, a, shape)
      auc[name] = within_problem_auc(scores[name], cands.correct)
      if spec.kind == "orm" or a == agg:
        main.append(name)
    info[spec.name] = {"dir": directory, **dataclasses.asdict(spec), **(summary or {})}
  results = accuracy_curves(scores, cands.correct, cands.answers, draws=options.draws,
                            seed=config.seed)
  results.update(auc=auc, step_auc=step_auc, prms=info, options=dataclasses.asdict(options),
                 examples=[{"question": ex.get("question", ex["prompt"]),
                            "answer": ex.get("answer"), "texts": t[:2]}
                           for ex, t in zip(cands.problems[:3], cands.texts[:3])])
  return results, main + [MAJORITY, ORACLE]


def _train_questions(ctx) -> set[str]:
  return {ex.get("question") or ex["prompt"] for ex in ctx.train_examples}


def run_best_of_n(config, workdir: str, prm_dirs: Sequence[str],
                  options: ErprmOptions = ErprmOptions()) -> dict:
  """`prl-jax best-of-n`: best-of-N of the policy in `init_from` with ready PRMs.

  Writes WORKDIR/best_of_n.{json,md,png}.
  """
  if not prm_dirs:
    raise ConfigError("Pass at least one --prm DIR (a PRM written by `prl-jax erprm`).")
  for d in prm_dirs:
    prm_lib.PrmSpec.load(d)  # fail before any sampling when a directory is not a PRM
  ctx = build_context(config, workdir)
  policy = _policy(ctx)
  results, main = evaluate_prms(ctx, policy, [(d, None) for d in prm_dirs], options,
                                _train_questions(ctx), agg=config.algo.erprm.agg)
  write_report(results, workdir, main, title=f"Best-of-N, aggregation {config.algo.erprm.agg}")
  return results


def run_erprm(config, workdir: str, options: ErprmOptions = ErprmOptions()) -> dict:
  """`prl-jax erprm`: labels -> PRMs (ER-PRM eta, hard, soft, outcome RM) -> best-of-N.

  Everything goes to WORKDIR/erprm: labels.jsonl, one directory per PRM (HF layout + prm.json +
  prm_metrics.jsonl) and best_of_n.{json,md,png}.
  """
  e = config.algo.erprm
  if e.agg not in AGGREGATIONS:
    raise ConfigError(f"algo.erprm.agg={e.agg!r}; choose one of {AGGREGATIONS}.")
  if not e.eta > 0:
    raise ConfigError(f"algo.erprm.eta must be > 0 (the hard and soft limits are trained too), "
                      f"got {e.eta}.")
  if e.num_completions < 1:
    raise ConfigError(f"algo.erprm.num_completions must be >= 1, got {e.num_completions}.")
  out = os.path.join(workdir, "erprm")
  ctx = build_context(config, out)
  for key in ("plus_token", "minus_token"):
    prm_lib.token_id(ctx.tokenizer, e[key], f"algo.erprm.{key}")
  policy = _policy(ctx)
  delimiter = config.algo.steps.delimiter

  # 1. Monte Carlo labels on training problems (distinct questions, in a seeded random order).
  rng = np.random.default_rng(config.seed)
  problems, seen = [], set()
  for i in rng.permutation(len(ctx.train_examples)):
    ex = ctx.train_examples[i]
    key = ex.get("question") or ex["prompt"]
    if key not in seen and len(problems) < options.label_problems:
      seen.add(key)
      problems.append(ex)
  etas = [float(e.eta), math.inf, 0.0]
  t0 = time.perf_counter()
  scfg = ctx.sampling
  records = erprm_labels.label_policy_solutions(
      policy, ctx.model_cfg, ctx.tokenizer, scfg, problems, ctx.verifier,
      solutions_per_problem=options.solutions_per_problem, num_completions=e.num_completions,
      etas=etas, key=jax.random.fold_in(jax.random.key(config.seed), 1),
      min_chars=options.min_step_chars, delimiter=delimiter, max_rows=options.max_rows,
      mesh=_mesh(ctx), keep_completions=options.keep_completions, progress=config.log.progress)
  erprm_labels.write_jsonl(records, os.path.join(out, "labels.jsonl"))
  label_stats = {"solutions": len(records),
                 "solution_accuracy": float(np.mean([r["outcome"] for r in records])),
                 "steps": int(sum(len(r["steps"]) for r in records)),
                 "completions": int(sum(sum(r["total"][:-1]) for r in records)),
                 "seconds": time.perf_counter() - t0}
  for eta in etas:
    key = erprm_labels.eta_key(eta)
    label_stats[f"mean_label_eta={key}"] = float(np.mean(
        [v for r in records for v in r["labels"][key][:-1]] or [float("nan")]))
    label_stats[f"step_auc_eta={key}"] = reference_label_auc(records, problems, key)
  say(f"labels: {label_stats}")

  # 2. PRMs at the ER-PRM eta, the hard and the soft limit, and an outcome RM.
  base = dict(plus_token=e.plus_token, minus_token=e.minus_token,
              min_step_chars=options.min_step_chars, delimiter=delimiter)
  eta_text = f"{float(e.eta):g}"
  specs = [(f"prm_eta{eta_text}", prm_lib.PrmSpec(f"ER-PRM (eta={eta_text})", "prm",
                                                  erprm_labels.eta_key(e.eta), **base)),
           ("prm_hard", prm_lib.PrmSpec("hard PRM (eta=inf)", "prm", "inf", **base)),
           ("prm_soft", prm_lib.PrmSpec("soft PRM (eta->0)", "prm", "0.0", **base)),
           ("orm", prm_lib.PrmSpec("ORM (outcome)", "orm", "", **base))]
  trained = []
  for i, (dirname, spec) in enumerate(specs):
    t0 = time.perf_counter()
    summary = prm_lib.train_prm(ctx, policy, records, spec, os.path.join(out, dirname),
                                steps=options.prm_steps, batch_size=options.prm_batch_size,
                                lr=config.optim.prm_lr, grad_clip=config.optim.prm_grad_clip,
                                seed=config.seed + i)
    summary["seconds"] = time.perf_counter() - t0
    say(f"{spec.name}: {summary}")
    trained.append((os.path.join(out, dirname), summary))

  # 3. Best-of-N on held-out problems (unseen by SFT and by the labels).
  results, main = evaluate_prms(ctx, policy, trained, options, _train_questions(ctx), agg=e.agg)
  results["labels"] = label_stats
  write_report(results, out, main, title=f"Best-of-N on held-out problems, aggregation {e.agg}")
  return results
