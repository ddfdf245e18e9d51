"""The ER-PRM experiment end to end (`prl-jax erprm`) and best-of-N with ready PRMs (`prl-jax best-of-n`).

ER-PRM (Zhang et al. 2024, arXiv 2412.11006, sections 5 and 6; docs/algorithms.md: ER-PRM, Evaluation metrics).
`run_erprm`: Monte Carlo labels from pi_0, PRMs at the configured eta and at the hard and soft
limits plus an outcome RM, then best-of-N on held-out problems. `run_best_of_n` scores ready PRMs.
For each held-out problem the policy samples N_max candidates once; every PRM scores them and
`prl_jax.eval.best_of_n` estimates accuracy against N.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from prl_jax.config import ConfigError
from prl_jax.data.registry import get_task
from prl_jax.eval.best_of_n import (MAJORITY, ORACLE, accuracy_curves, roc_auc, weighted_name,
                                    within_problem_auc, write_report)
# Candidates and candidate_answers are re-exported: they were defined here first.
from prl_jax.eval.candidates import Candidates, candidate_answers, sample_candidates  # noqa: F401
from prl_jax.eval.metrics import AGGREGATIONS
from prl_jax.eval.step_auc import first_error_auc
from prl_jax.data.math_files import resolve_files
from prl_jax.data.rows import DataFileError, RowScreen
from prl_jax.prm import imports, labels
from prl_jax.prm import model as prm_model
from prl_jax.prm.scoring import prm_step_score_lists, solution_scores
from prl_jax.progress import say
from prl_jax.run import paths
from prl_jax.run.context import (build_context, initial_policy_params, render_prompts,
                                  task_options)


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


def _one_line_steps(min_step_chars: int, delimiter: str) -> bool:
  """Whether steps are exactly lines, the unit a task's step checker judges."""
  return min_step_chars == 0 and delimiter == "\n"


def reference_step_auc(cands: Candidates, step_lists: Sequence[Sequence[float]],
                       spec: prm_model.PrmSpec) -> float | None:
  """Step-level ranking quality of a PRM against exact process labels; None for an ORM.

  Arithmetic chains have one correct solution, the solver's one operation per line, so a
  candidate's prefix s_1..s_k (k < K) is on track iff the reference solution starts with it: the
  ROC AUC of the PRM's non-final step scores against that. Tasks with a step checker (register
  chains), one line per step: the first-error AUROC (`prl_jax.eval.step_auc`), the measure of
  `prm/step_auroc` in training. None for other tasks (whose correct solutions are not unique).
  """
  if spec.kind != "prm":
    return None
  flat = [(ex, t) for ex, group in zip(cands.problems, cands.texts) for t in group]
  if all(ex.get("task") == "arithmetic" for ex in cands.problems):
    return _on_track_auc(
        (ex["solution"], labels.split_steps(t, spec.min_step_chars, spec.delimiter), values)
        for (ex, t), values in zip(flat, step_lists))
  if not _one_line_steps(spec.min_step_chars, spec.delimiter):
    return None
  return first_error_auc(step_lists, [t for _, t in flat], [ex for ex, _ in flat])


def reference_label_auc(records: Sequence[dict], problems: Sequence[dict], label: str, *,
                        one_line_steps: bool = True) -> float | None:
  """The same AUC for the Monte Carlo labels themselves.

  How well the labels at one eta separate right prefixes from wrong ones: an upper reference for
  what a PRM trained on them can learn. `problems` supply the reference solutions (arithmetic)
  or the examples the step checker reads, by question.
  """
  by_question = {ex["question"]: ex for ex in problems}
  if all(r.get("task") == "arithmetic" for r in records):
    return _on_track_auc((by_question[r["question"]]["solution"], r["steps"], r["labels"][label])
                         for r in records)
  if not one_line_steps:
    return None
  return first_error_auc([r["labels"][label] for r in records],
                         [r["solution"] for r in records],
                         [by_question[r["question"]] for r in records])


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
    prm_seeds: PRMs trained per label type (and outcome RM), each from its own seed (batch
      order); best-of-N reports each and their mean, with the std over seeds.
    resamples: bootstrap resamples of the paired comparisons.
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
  prm_seeds: int = 1
  resamples: int = 2000

  def __post_init__(self):
    for name in ("label_problems", "solutions_per_problem", "prm_steps", "prm_batch_size",
                 "eval_problems", "n_max", "draws", "max_rows", "prm_seeds", "resamples"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
    if self.min_step_chars < 0:
      raise ConfigError(f"--min-step-chars must be >= 0, got {self.min_step_chars}.")


def heldout_problems(ctx: Any, count: int, exclude: set[str]) -> list[dict]:
  """`count` evaluation problems whose questions are not in `exclude` (e.g. the SFT train set).

  Synthetic tasks draw them from their own random stream (split "bestofn", the training
  distribution: difficulty, template and task options such as the register's bug design); a task
  from files uses its eval examples.
  """
  task = ctx.config.task
  if task.train_file:
    pool = ctx.eval_examples
  else:
    pool = render_prompts(
        get_task(task.name).generate(max(20 * count, 1000), (task.min_ops, task.max_ops),
                                     task.seed, split="bestofn", **task_options(ctx.config)),
        ctx.tokenizer)
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
                  options: ErprmOptions, exclude: set[str], *, agg: str,
                  seed_groups: Mapping[str, Sequence[str]] | None = None
                  ) -> tuple[dict, list[str]]:
  """Samples candidates for held-out problems and runs best-of-N for each PRM.

  Every PRM also votes, weighted by its solution scores (`best_of_n.weighted_vote_accuracy`).

  Args:
    prms: (directory, training summary or None) per PRM.
    agg: the aggregation of the main table (every aggregation is computed).
    seed_groups: title -> directories of the same PRM trained from different seeds: reported as
      one method (the mean over seeds, with their std), compared in the main table and, paired
      over problems (bootstrap), with majority vote, the outcome RM and each other.

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
                            mesh=_mesh(ctx), rules=ctx.rules, progress=config.log.progress)
  say(f"best-of-N: {len(problems)} problems x {options.n_max} candidates sampled "
      f"({time.perf_counter() - t0:.0f}s), mean accuracy {cands.correct.mean():.3f}")
  shape = cands.correct.shape
  scores, main, auc, step_auc, info = {}, [], {}, {}, {}
  by_dir: dict[str, tuple[str, str, str]] = {}  # directory -> (main-table name, kind, label)
  for directory, summary in prms:
    spec, model_cfg, params = prm_model.load_prm(directory, dtype=config.model.dtype)
    if spec.name in info:  # two PRMs of the same name: tell them apart by directory
      spec = dataclasses.replace(spec, name=f"{spec.name} {os.path.basename(directory)}")
    steps = prm_step_score_lists(model_cfg, ctx.place_state(params, model_cfg), spec,
                                 ctx.tokenizer, cands.problems, cands.texts, cands.finished,
                                 ctx.prompt_len, config.rollout.max_new_tokens,
                                 place=ctx.place_batch, progress=config.log.progress,
                                 desc=f"scoring: {spec.name}")
    step_auc[spec.name] = reference_step_auc(cands, steps, spec)
    aggs = ("last",) if spec.kind == "orm" else AGGREGATIONS
    for a in aggs:
      name = spec.name if spec.kind == "orm" else f"{spec.name} [{a}]"
      scores[name] = solution_scores(steps, a, shape)
      auc[name] = within_problem_auc(scores[name], cands.correct)
      if spec.kind == "orm" or a == agg:
        main.append(name)
        by_dir[directory] = (name, spec.kind, spec.label)
    info[spec.name] = {"dir": directory, **dataclasses.asdict(spec), **(summary or {})}
  groups, comparisons = _seed_groups(seed_groups or {}, by_dir, agg)
  if groups:
    main = list(groups)
  results = accuracy_curves(scores, cands.correct, cands.answers, draws=options.draws,
                            seed=config.seed, weighted=[m for m, *_ in by_dir.values()],
                            groups=groups, comparisons=comparisons, resamples=options.resamples)
  kind_label = {name: (kind, label) for name, kind, label in by_dir.values()}
  results["seed_groups"] = {
      name: {"kind": kind_label[members[0]][0], "label": kind_label[members[0]][1],
             "members": members}
      for name, members in groups.items() if members[0] in kind_label}
  results.update(auc=auc, step_auc=step_auc, prms=info, options=dataclasses.asdict(options),
                 examples=[{"question": ex.get("question", ex["prompt"]),
                            "answer": ex.get("answer"), "texts": t[:2]}
                           for ex, t in zip(cands.problems[:3], cands.texts[:3])])
  return results, main + [MAJORITY, ORACLE]


def _seed_groups(seed_groups: Mapping[str, Sequence[str]],
                 by_dir: Mapping[str, tuple[str, str, str]],
                 agg: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
  """The seed groups as methods (their selection and their weighted vote) and the comparisons:
  each group and its vote against majority vote, each PRM group against the outcome RM groups
  and against the other PRM groups."""
  groups, kinds = {}, {}
  for title, dirs in seed_groups.items():
    kind = by_dir[dirs[0]][1]
    name = f"{title}{'' if kind == 'orm' else f' [{agg}]'}, {len(dirs)} seeds"
    groups[name] = [by_dir[d][0] for d in dirs]
    groups[weighted_name(name)] = [weighted_name(by_dir[d][0]) for d in dirs]
    kinds[name] = kind
  prm = [g for g, k in kinds.items() if k == "prm"]
  orm = [g for g, k in kinds.items() if k == "orm"]
  comparisons = [(g, MAJORITY) for g in groups]
  comparisons += [(g, o) for g in prm for o in orm]
  comparisons += [(a, b) for i, a in enumerate(prm) for b in prm[i + 1:]]
  return groups, comparisons


def _train_questions(ctx) -> set[str]:
  return {ex.get("question") or ex["prompt"] for ex in ctx.train_examples}


def seed_groups_of(prm_dirs: Sequence[str]) -> dict[str, list[str]] | None:
  """PRMs that `prl-jax erprm --prm-seeds` trained from one label type (directories named X,
  X_seed1, X_seed2, ...) as seed groups, titled by the first one's name; None without any."""
  groups: dict[str, list[str]] = {}
  for d in prm_dirs:
    base = re.sub(r"_seed\d+$", "", os.path.basename(os.path.normpath(d)))
    groups.setdefault(os.path.join(os.path.dirname(os.path.normpath(d)), base), []).append(d)
  groups = {prm_model.PrmSpec.load(dirs[0]).name: dirs for dirs in groups.values()}
  return groups if any(len(dirs) > 1 for dirs in groups.values()) else None


def run_best_of_n(config, workdir: str, prm_dirs: Sequence[str],
                  options: ErprmOptions = ErprmOptions()) -> dict:
  """`prl-jax best-of-n`: best-of-N of the policy in `init_from` with ready PRMs.

  Writes WORKDIR/best_of_n.{json,md,png}.
  """
  if not prm_dirs:
    raise ConfigError("Pass at least one --prm DIR (a PRM written by `prl-jax erprm`).")
  for d in prm_dirs:
    prm_model.PrmSpec.load(d)  # fail before any sampling when a directory is not a PRM
  ctx = build_context(config, workdir, reads_prm=False)
  policy = _policy(ctx)
  results, main = evaluate_prms(ctx, policy, [(d, None) for d in prm_dirs], options,
                                _train_questions(ctx), agg=config.algo.erprm.agg,
                                seed_groups=seed_groups_of(prm_dirs))
  write_report(results, workdir, main, title=f"Best-of-N, aggregation {config.algo.erprm.agg}")
  return results


def label_problems(examples: Sequence[dict], count: int, seed: int) -> list[dict]:
  """The first `count` examples with distinct questions, in a random order seeded by `seed`."""
  problems, seen = [], set()
  for i in np.random.default_rng(seed).permutation(len(examples)):
    key = examples[i].get("question") or examples[i]["prompt"]
    if key not in seen and len(problems) < count:
      seen.add(key)
      problems.append(examples[i])
  return problems


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
  if paths.is_url(workdir):
    # The labels and PRMs are written with local file calls (and the PRMs as HF directories that
    # best-of-N reloads): a URL would become a local directory named after its scheme.
    raise ConfigError(f"prl-jax erprm writes to a local --workdir, got {workdir!r}; run it on a "
                      "local directory and copy WORKDIR/erprm to the bucket afterwards.")
  out = os.path.join(workdir, "erprm")
  ctx = build_context(config, out, reads_prm=False)
  for key in ("plus_token", "minus_token"):
    prm_model.token_id(ctx.tokenizer, e[key], f"algo.erprm.{key}")
  _check_step_tag(ctx.tokenizer, e.step_tag)
  policy = _policy(ctx)
  delimiter = config.algo.steps.delimiter
  base = dict(plus_token=e.plus_token, minus_token=e.minus_token,
              min_step_chars=options.min_step_chars, delimiter=delimiter, step_tag=e.step_tag)
  if e.prm_data:  # step labels from a data set instead of Monte Carlo rollouts
    return _run_on_prm_data(ctx, policy, out, options, base)

  # 1. Monte Carlo labels on training problems (distinct questions, in a seeded random order).
  problems = label_problems(ctx.train_examples, options.label_problems, config.seed)
  etas = [float(e.eta), math.inf, 0.0]
  t0 = time.perf_counter()
  scfg = ctx.sampling
  records = labels.label_policy_solutions(
      policy, ctx.model_cfg, ctx.tokenizer, scfg, problems, ctx.verifier,
      solutions_per_problem=options.solutions_per_problem, num_completions=e.num_completions,
      etas=etas, key=jax.random.fold_in(jax.random.key(config.seed), 1),
      min_chars=options.min_step_chars, delimiter=delimiter, max_rows=options.max_rows,
      mesh=_mesh(ctx), rules=ctx.rules, keep_completions=options.keep_completions,
      progress=config.log.progress)
  labels.write_jsonl(records, os.path.join(out, "labels.jsonl"))
  label_stats = {"solutions": len(records),
                 "solution_accuracy": float(np.mean([r["outcome"] for r in records])),
                 "steps": int(sum(len(r["steps"]) for r in records)),
                 "completions": int(sum(sum(r["total"][:-1]) for r in records)),
                 "seconds": time.perf_counter() - t0}
  for eta in etas:
    key = labels.eta_key(eta)
    label_stats[f"mean_label_eta={key}"] = float(np.mean(
        [v for r in records for v in r["labels"][key][:-1]] or [float("nan")]))
    label_stats[f"step_auc_eta={key}"] = reference_label_auc(
        records, problems, key,
        one_line_steps=_one_line_steps(options.min_step_chars, delimiter))
  say(f"labels: {label_stats}")

  # 2. PRMs at the ER-PRM eta, the hard and the soft limit, and an outcome RM.
  eta_text = f"{float(e.eta):g}"
  specs = [(f"prm_eta{eta_text}", prm_model.PrmSpec(f"ER-PRM (eta={eta_text})", "prm",
                                                  labels.eta_key(e.eta), **base)),
           ("prm_hard", prm_model.PrmSpec("hard PRM (eta=inf)", "prm", "inf", **base)),
           ("prm_soft", prm_model.PrmSpec("soft PRM (eta->0)", "prm", "0.0", **base)),
           ("orm", prm_model.PrmSpec("ORM (outcome)", "orm", "", **base))]
  trained, start = [], prm_model.prm_start(ctx, policy)
  for s in range(options.prm_seeds):  # seed 0 keeps the plain names (the lab configs read them)
    for i, (dirname, spec) in enumerate(specs):
      if s:
        dirname = f"{dirname}_seed{s}"
        spec = dataclasses.replace(spec, name=f"{spec.name} seed {s}")
      t0 = time.perf_counter()
      summary = prm_model.train_prm(ctx, start, records, spec, os.path.join(out, dirname),
                                    steps=options.prm_steps, batch_size=options.prm_batch_size,
                                    lr=config.optim.prm_lr,
                                    grad_clip=config.optim.prm_grad_clip,
                                    seed=config.seed + i + len(specs) * s)
      summary["seconds"] = time.perf_counter() - t0
      say(f"{spec.name}: {summary}")
      trained.append((os.path.join(out, dirname), summary))

  # 3. Best-of-N on held-out problems (unseen by SFT and by the labels).
  seed_groups = None
  if options.prm_seeds > 1:
    seed_groups = {spec.name: [d for d, _ in trained[i::len(specs)]]
                   for i, (_, spec) in enumerate(specs)}
  results, main = evaluate_prms(ctx, policy, trained, options, _train_questions(ctx), agg=e.agg,
                                seed_groups=seed_groups)
  results["labels"], results["prm_init"] = label_stats, e.prm_init or config.init_from
  write_report(results, out, main, title=f"Best-of-N on held-out problems, aggregation {e.agg}")
  return results


def _check_step_tag(tokenizer, tag: str) -> None:
  """A step tag the tokenizer cannot encode is a config error naming algo.erprm.step_tag."""
  try:
    ids = tokenizer.encode(tag) if tag else [0]
  except (ValueError, KeyError) as err:
    raise ConfigError(f"algo.erprm.step_tag={tag!r} cannot be encoded by the tokenizer ({err}); "
                      "choose a tag in its vocabulary, or '' to read each step's last token.")
  if not ids:
    raise ConfigError(f"algo.erprm.step_tag={tag!r} encodes to no tokens; choose a visible tag.")


def _run_on_prm_data(ctx: Any, policy: Any, out: str, options: ErprmOptions, base: dict) -> dict:
  """`prl-jax erprm` on step labels from files (algo.erprm.prm_data): one PRM trained on them
  (WORKDIR/erprm/prm_data), then best-of-N as after Monte Carlo labelling."""
  config, e = ctx.config, ctx.config.algo.erprm
  screen = RowScreen(skip=config.task.skip_bad_rows)
  try:
    records = imports.load_prm_rows(resolve_files(e.prm_data, "prm"), e.prm_data_format,
                                    tag=e.data_tag, delimiter=base["delimiter"], screen=screen)
  except (DataFileError, FileNotFoundError, ValueError) as err:
    raise ConfigError(f"algo.erprm.prm_data: {err}") from err
  if screen.total:
    say(screen.warning())
  if not records:
    raise ConfigError(f"algo.erprm.prm_data={e.prm_data!r} holds no usable rows.")
  stats = {"solutions": len(records), "steps": int(sum(len(r["steps"]) for r in records)),
           "mean_label": float(np.mean([v for r in records for v in r["labels"]["data"]])),
           **screen.metrics()}
  say(f"PRM data: {stats}")
  spec = prm_model.PrmSpec("PRM (data labels)", "prm", imports.DATA_LABEL, **base)
  t0 = time.perf_counter()
  summary = prm_model.train_prm(ctx, prm_model.prm_start(ctx, policy), records, spec,
                                os.path.join(out, "prm_data"),
                                steps=options.prm_steps, batch_size=options.prm_batch_size,
                                lr=config.optim.prm_lr, grad_clip=config.optim.prm_grad_clip,
                                seed=config.seed)
  summary["seconds"] = time.perf_counter() - t0
  say(f"{spec.name}: {summary}")
  exclude = _train_questions(ctx) | {r["question"] for r in records}
  results, main = evaluate_prms(ctx, policy, [(os.path.join(out, "prm_data"), summary)], options,
                                exclude, agg=e.agg)
  results["labels"] = stats
  write_report(results, out, main, title=f"Best-of-N on held-out problems, aggregation {e.agg}")
  return results
