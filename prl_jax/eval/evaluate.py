"""Evaluating a policy: n samples and one greedy decode per problem, verified and summarised.

    results = evaluate(params, model_cfg, tokenizer, examples, verifier, n=8, temperature=1.0,
                       max_new_tokens=256, seed=0)
    write_results(results, "runs/prime/eval")  # results.json, results.md, pass_at_k.png

`results` is plain JSON: {"settings": ..., "summary": ..., "records": [...]}. A record holds what
the metrics need about one problem (its correct count c, per-sample verdicts, extracted answers,
lengths, truncation flags and the greedy verdict), and `summarize(records, n)` recomputes the whole
summary from the records alone, so every number of a run can be re-derived from its results.json.

Metrics (docs/algorithms.md: Evaluation metrics), overall and per difficulty:
  mean@n     mean over problems of c / n (PRL's average@n);
  pass@k     unbiased 1 - C(n - c, k) / C(n, k) averaged over problems, every k = 1..n
             (Chen et al. 2021, arXiv 2107.03374, section 2.1);
  maj@k      majority vote over the answers of the first k samples, k = 1, 2, 4, ... and n;
  greedy     accuracy of one greedy decode per problem;
  response_length, truncated   mean tokens per sampled response (EOS included) and the fraction
             that hit max_new_tokens without EOS;
  *_se       bootstrap standard error over problems of mean@n and pass@n.

`run_eval` is what `prl-jax eval` runs: it picks the policy (an HF directory, the run's final
export, or its latest checkpoint), the split, and writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import ConfigError
from prl_jax.data import arithmetic, countdown, register, templates
from prl_jax.data.registry import get_task
from prl_jax.eval.summary import summarize, write_results
from prl_jax.models import hf
from prl_jax.models.config import ModelConfig
from prl_jax.models.tokenizer import load_tokenizer
from prl_jax.progress import progress_bar, say
from prl_jax.rewards import math_answer, verify
from prl_jax.run import paths
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.context import build_context, render_prompts, task_options
from prl_jax.run.state import init_state
from prl_jax.sampling import SamplingConfig, sample_in_calls
from prl_jax.sharding import DEFAULT_RULES

SPLITS = ("eval", "heldout", "train")
# Verifiers return 0 or 1; a sample counts as correct when its reward reaches this.
CORRECT_THRESHOLD = 0.5

Extractor = Callable[[str, Mapping[str, Any]], "str | None"]


# ------------------------------------------------------------------------------------------------
# Final answers for majority voting.


def _arithmetic_answer(response: str, example: Mapping[str, Any]) -> str | None:
  value = arithmetic.final_answer(response)
  return None if value is None else str(value)


def _countdown_answer(response: str, example: Mapping[str, Any]) -> str | None:
  """The value of the stated answer expression, so that different expressions reaching the same
  number vote together; the raw text when it is not a legal expression for the problem."""
  stated = math_answer.extract_answer(response)
  if stated is None:
    return None
  try:
    numbers_given, _ = countdown.parse_question(example["question"])
  except (KeyError, TypeError, ValueError):
    return stated
  value = countdown.evaluate_expression(stated.partition("=")[0], numbers_given)
  return stated if value is None else str(value)


def _math_answer(response: str, example: Mapping[str, Any]) -> str | None:
  return math_answer.extract_answer(response)


ANSWER_EXTRACTORS: dict[str, Extractor] = {
    arithmetic.TASK: _arithmetic_answer,
    countdown.TASK: _countdown_answer,
    register.TASK: lambda response, example: register.final_answer(response),
    **{task: _math_answer for task in verify.MATH_TASKS},
}


def answer_extractor(task: str) -> Extractor:
  """`extract(response, example) -> answer string or None` for examples of `task`.

  The synthetic tasks use their own answer line (what their checkers read); math data uses
  `math_answer.extract_answer` (`prl_jax.rewards.verify_extract`: boxes, answer markers, the last
  math span), as the math verifier does.
  """
  try:
    return ANSWER_EXTRACTORS[task]
  except KeyError:
    raise ValueError(f"no answer extractor for task {task!r}; known tasks are "
                     f"{sorted(ANSWER_EXTRACTORS)}") from None


# ------------------------------------------------------------------------------------------------
# Sampling and verification.


def prompt_ids(tokenizer: Any, prompt: str | Sequence[Mapping[str, str]]) -> list[int]:
  """Token ids of a prompt: a plain string, or chat messages rendered by the tokenizer's template."""
  return tokenizer.encode(templates.prompt_text(tokenizer, prompt))


def _sample_responses(params: Any, model_cfg: ModelConfig, tokenizer: Any,
                      prompts: list[list[int]], key: jax.Array, scfg: SamplingConfig, chunk: int,
                      mesh: Any, rules: Any, bar: Any) -> tuple[list[str], list[int], list[bool]]:
  """(texts, token lengths, truncated flags) of scfg.n responses per prompt, contiguous per prompt.

  Prompts go through the sampler `chunk` at a time with key fold_in(key, chunk index); the last
  chunk is padded with copies of its last prompt (dropped afterwards) so every call has the same
  number of rows and reuses one compiled program. `bar` advances by the prompts of each chunk.
  """
  calls = [prompts[start:start + chunk] for start in range(0, len(prompts), chunk)]
  parts = sample_in_calls(params, model_cfg, calls, key, scfg, pad_to=[chunk] * len(calls),
                          mesh=mesh, rules=rules, on_call=bar.update)  # bar: real prompts
  texts, lengths, truncated = [], [], []
  for part in parts:
    texts += [tokenizer.decode(row[m].tolist()) for row, m in zip(part.tokens, part.mask)]
    lengths += [int(x) for x in part.lengths]
    truncated += [bool(x) for x in part.truncated]
  return texts, lengths, truncated


def _plain_difficulty(value: Any) -> int | str | None:
  """JSON-friendly difficulty: integers (NumPy ones included) stay integers, others become text."""
  if value is None:
    return None
  if isinstance(value, numbers.Integral) and not isinstance(value, bool):
    return int(value)
  return str(value)


def evaluate(params: Any, model_cfg: ModelConfig, tokenizer: Any, examples: Sequence[Mapping],
             verifier: Callable[[list, list[str]], Sequence[float]], *, n: int,
             temperature: float, max_new_tokens: int, seed: int, mesh: Any = None,
             rules: Any = DEFAULT_RULES, batch_prompts: int = 32, top_p: float = 1.0, top_k: int = 0,
             progress: bool = False, keep_responses: bool = False) -> dict:
  """Samples n responses and one greedy decode per problem, verifies them and summarises.

  Deterministic in `seed` for fixed examples and `batch_prompts`: sampled chunk i draws its
  randomness from fold_in(fold_in(key(seed), 0), i); greedy decoding uses none.

  Args:
    params: policy parameters.
    model_cfg: the policy's config.
    tokenizer: encodes prompts, decodes responses; its eos_id stops generation.
    examples: task examples with "prompt", "answer" and optionally "id", "difficulty", "task".
    verifier: verifier(texts, examples) -> rewards, one example per text (the order of
      `prl_jax.rewards.verify.Verifier` and of every task's check(response, example)).
    n: samples per problem.
    temperature: sampling temperature of the n samples (0 makes them greedy).
    max_new_tokens: response length limit.
    seed: PRNG seed of the samples.
    mesh: optional device mesh; rows are split over its batch axes.
    rules: the logical-axis rules of the mesh (the run's `mesh.rules`).
    batch_prompts: prompts per sampler call (n rows each).
    top_p, top_k: nucleus / top-k truncation of the n samples.
    progress: a bar on stderr over the problems, one for the samples and one for greedy
      (`prl_jax.progress`; off for the training loop's periodic evaluation).
    keep_responses: also keep each problem's n sampled texts in its record ("responses"), for
      diagnostics that read the responses themselves (off by default: results.json stays small).

  Returns:
    {"settings": ..., "summary": summarize(records, n), "records": [...]}, JSON-serialisable.
  """
  if not examples:
    raise ValueError("evaluate: no examples to evaluate")
  if int(n) < 1 or int(batch_prompts) < 1:
    raise ValueError(f"evaluate: n and batch_prompts must be >= 1, got n={n}, "
                     f"batch_prompts={batch_prompts}")
  n = int(n)
  examples = list(examples)
  extractors = [answer_extractor(ex.get("task", "math")) for ex in examples]
  prompts = [prompt_ids(tokenizer, ex["prompt"]) for ex in examples]
  chunk = min(int(batch_prompts), len(examples))
  mesh = mesh if mesh is not None and mesh.size > 1 else None
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  scfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        top_k=top_k, eos_id=tokenizer.eos_id, pad_id=pad_id, n=n)
  key = jax.random.key(seed)
  bar = lambda desc: progress_bar(len(prompts), desc, enabled=progress, unit="problem")
  with bar(f"eval: {n} samples") as sampled:
    texts, lengths, truncated = _sample_responses(params, model_cfg, tokenizer, prompts,
                                                  jax.random.fold_in(key, 0), scfg, chunk, mesh,
                                                  rules, sampled)
  greedy_cfg = scfg.replace(n=1, temperature=0.0, greedy=True, top_p=1.0, top_k=0)
  with bar("eval: greedy") as greedy:
    greedy_texts, _, _ = _sample_responses(params, model_cfg, tokenizer, prompts,
                                           jax.random.fold_in(key, 1), greedy_cfg, chunk, mesh,
                                           rules, greedy)
  rewards = verifier(texts, [ex for ex in examples for _ in range(n)])
  greedy_rewards = verifier(greedy_texts, examples)

  records = []
  for p, (ex, extract) in enumerate(zip(examples, extractors)):
    rows = slice(p * n, (p + 1) * n)
    correct = [float(r) >= CORRECT_THRESHOLD for r in rewards[rows]]
    records.append({
        "id": str(ex.get("id", p)),
        "difficulty": _plain_difficulty(ex.get("difficulty")),
        "reference": None if ex.get("answer") is None else str(ex["answer"]),
        "n": n,
        "c": sum(correct),
        "correct": correct,
        "answers": [extract(t, ex) for t in texts[rows]],
        "lengths": lengths[rows],
        "truncated": truncated[rows],
        "greedy_correct": float(greedy_rewards[p]) >= CORRECT_THRESHOLD,
        "greedy_answer": extract(greedy_texts[p], ex),
        "greedy_response": greedy_texts[p],
        **({"responses": list(texts[rows])} if keep_responses else {}),
    })
  settings = {"n": n, "temperature": float(temperature), "top_p": float(top_p),
              "top_k": int(top_k), "max_new_tokens": int(max_new_tokens), "seed": int(seed),
              "batch_prompts": int(batch_prompts), "num_problems": len(examples)}
  return {"settings": settings, "summary": summarize(records, n), "records": records}


# ------------------------------------------------------------------------------------------------
# `prl-jax eval`: which policy, which problems.


@dataclasses.dataclass
class Policy:
  """A policy to evaluate and where it came from."""

  source: str
  model_cfg: ModelConfig
  tokenizer: Any
  params: Any


def _has_tokenizer(directory: str) -> bool:
  return any(os.path.exists(os.path.join(directory, f))
             for f in ("char_tokenizer.json", "tokenizer_config.json", "tokenizer.json"))


def _check_model_dir(model_dir: str) -> None:
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"--model {model_dir!r} is not a directory; pass an HF-layout model "
                            "directory (config.json + model.safetensors), e.g. WORKDIR/final_hf.")


def _policy_from_hf(ctx, directory: str) -> Policy:
  config_file = os.path.join(directory, "config.json")
  if not os.path.isfile(config_file):
    raise FileNotFoundError(
        f"{directory!r} is not an HF-layout model directory (no config.json in it); pass a "
        "directory holding config.json and model.safetensors, such as WORKDIR/final_hf written "
        "by `prl-jax sft` or by training with --config.checkpoint.save_hf=True.")
  with open(config_file) as fh:
    model_cfg = hf.config_from_hf(json.load(fh), dtype=ctx.config.model.dtype)
  _, params = hf.load_hf(directory, config=model_cfg)
  # The export's own tokenizer when it has one: it is the one the model was trained with.
  tokenizer = load_tokenizer(directory) if _has_tokenizer(directory) else ctx.tokenizer
  return Policy(directory, model_cfg, tokenizer, params)


def policy_from_checkpoint(ctx, directory: str, step: int | None = None) -> Policy:
  """The policy params of checkpoint `step` (default the latest); the config must be the run's.

  The whole train state is restored (Orbax restores the pytree it was given), then all but the
  policy params are dropped: it needs the memory of the full state for a moment.
  """
  # Shapes only: a random init traced by eval_shape allocates and loads nothing.
  shell = dataclasses.replace(ctx, hf_dir="")
  abstract = jax.eval_shape(lambda: init_state(shell, get_recipe(ctx.config.method)))
  with Checkpointer(directory, read_only=True) as ckpt:  # the run may still be saving
    step = ckpt.latest_step() if step is None else step
    state, _ = ckpt.restore(ctx.abstract(abstract), step)
  params = state.policy.params
  if ctx.mesh.size == 1:
    # Uncommitted arrays, as `load_hf` returns: jit caches on committedness, so this lets both
    # policy sources share one compiled sampler (the host copy is cheap next to sampling).
    params = jax.device_put(jax.device_get(params))
  return Policy(os.path.join(directory, str(step)), ctx.model_cfg, ctx.tokenizer, params)


def load_policy(ctx, model_dir: str | None = None) -> Policy:
  """`model_dir` if given, else WORKDIR/final_hf, else the latest checkpoint in WORKDIR/checkpoints."""
  if model_dir:
    _check_model_dir(model_dir)
    # A run's WORKDIR/checkpoints[/STEP]: the config must be that run's.
    path = os.path.normpath(model_dir)
    if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
      return policy_from_checkpoint(ctx, os.path.dirname(path), int(os.path.basename(path)))
    if os.path.basename(path) == "checkpoints":
      return policy_from_checkpoint(ctx, path)
    return _policy_from_hf(ctx, model_dir)
  final = paths.join(ctx.workdir, "final_hf")
  if paths.isdir(final):  # a gs:// workdir's export is copied here first
    return _policy_from_hf(ctx, paths.local_copy(final, "--workdir", refresh=True))
  checkpoints = paths.join(ctx.workdir, "checkpoints")
  if any(name.isdigit() for name in paths.listdir(checkpoints)):
    return policy_from_checkpoint(ctx, checkpoints)
  raise FileNotFoundError(
      f"No policy to evaluate in {ctx.workdir!r}: expected {final} (the final export of "
      f"`prl-jax sft`, or of `prl-jax train` with checkpoint.save_hf=True) or a checkpoint in "
      f"{checkpoints}; train into this workdir first or pass --model HF_DIR.")


def split_examples(config: ml_collections.ConfigDict, split: str, train: list[dict],
                   evals: list[dict], tokenizer: Any = None) -> list[dict]:
  """The first eval.num_problems problems (all when <= 0) of `split`.

  "eval" and "train" are the run's own problems; "heldout" draws the synthetic task's harder
  problems (longer arithmetic chains, more countdown numbers) from their separate random stream,
  with the run's prompt template (a chat template is rendered by `tokenizer`).
  """
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  num = config.eval.num_problems
  if split == "heldout":
    if config.task.train_file:
      raise ConfigError("--split heldout exists for the synthetic tasks only; for data files, "
                        "set task.eval_file to the held-out file and use --split eval.")
    if num <= 0:
      raise ConfigError("--split heldout generates eval.num_problems problems; set it >= 1.")
    spec = get_task(config.task.name)
    # The training operand range and template (as the run's own problems): only the chain
    # length changes.
    # Disjoint from training even when task.max_ops reaches the held-out lengths.
    try:
      heldout = spec.generate_heldout(num, config.task.seed, **task_options(config),
                                      exclude={ex["question"] for ex in train})
    except ValueError as err:
      raise ConfigError(f"eval.num_problems: {err}.") from err
    return render_prompts(heldout, tokenizer)
  examples = evals if split == "eval" else train
  return examples[:num] if num > 0 else list(examples)


def split_token_budget(config: ml_collections.ConfigDict, split: str) -> int:
  """New tokens per response on `split`: eval.heldout_max_new_tokens for the held-out problems
  (their longer chains need longer solutions), rollout.max_new_tokens for the others."""
  heldout = config.eval.get("heldout_max_new_tokens", 0)
  return heldout if split == "heldout" and heldout > 0 else config.rollout.max_new_tokens


def warn_unfit_solutions(examples: Sequence[Mapping], tokenizer: Any, budget: int,
                         split: str) -> int:
  """Warns when reference solutions (plus EOS) are longer than `budget` tokens: such problems
  cannot be solved within the budget, so the split's accuracy would be capped silently.
  Returns how many do not fit."""
  lengths = [len(tokenizer.encode(ex["solution"])) + 1 for ex in examples if ex.get("solution")]
  over = [n for n in lengths if n > budget]
  if over:
    key = "eval.heldout_max_new_tokens" if split == "heldout" else "rollout.max_new_tokens"
    say(f"warning: {len(over)} of {len(lengths)} reference solutions of split {split!r} need "
        f"more than {budget} new tokens (longest {max(over)}); those problems cannot be solved "
        f"within the budget: raise {key}.")
  return len(over)


def default_out_dir(workdir: str, split: str) -> str:
  """WORKDIR/eval for the eval split, WORKDIR/eval_<split> for the others."""
  return paths.join(workdir, "eval" if split == "eval" else f"eval_{split}")


def run_eval(config: ml_collections.ConfigDict, workdir: str, *, model_dir: str | None = None,
             split: str = "eval", out_dir: str | None = None) -> dict:
  """Evaluates a run's policy on a split with the config's eval group and writes the files.

  eval.n samples at eval.temperature with rollout.max_new_tokens, seed `config.seed`; prompts
  per sampler call are chosen so a call has about as many rows as a training rollout batch.
  """
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  if config.eval.n < 1:
    raise ConfigError(f"eval.n must be >= 1 (samples per problem), got {config.eval.n}.")
  if config.eval.temperature < 0:
    raise ConfigError(f"eval.temperature must be >= 0 (0 means greedy), got "
                      f"{config.eval.temperature}.")
  if model_dir:
    _check_model_dir(model_dir)  # before building the data, so a typo fails at once
  ctx = build_context(config, workdir)
  policy = load_policy(ctx, model_dir)
  examples = split_examples(config, split, ctx.train_examples, ctx.eval_examples, ctx.tokenizer)
  if not examples:
    raise ConfigError(f"The {split!r} split has no problems (check task.eval_file or "
                      "eval.num_problems); nothing to evaluate.")
  budget = split_token_budget(config, split)
  warn_unfit_solutions(examples, policy.tokenizer, budget, split)
  rows = config.rollout.prompts_per_step * config.rollout.n
  results = evaluate(policy.params, policy.model_cfg, policy.tokenizer, examples, ctx.verifier,
                     n=config.eval.n, temperature=config.eval.temperature,
                     max_new_tokens=budget, seed=config.seed,
                     mesh=ctx.mesh, rules=ctx.rules, batch_prompts=max(1, rows // config.eval.n),
                     progress=config.log.progress)
  results["settings"].update(task=config.task.train_file or config.task.name, split=split,
                             model=policy.source)
  write_results(results, out_dir or default_out_dir(workdir, split))
  return results
