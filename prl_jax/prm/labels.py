"""ER-PRM step labels from Monte Carlo completions of the initial policy (docs/algorithms.md: ER-PRM).

Zhang et al. 2024, "Entropy-Regularized Process Reward Model", arXiv 2412.11006, section 5 (the
labels) with the data recipe of the official code. For a problem x and a solution y = s_1 ... s_K
sampled from pi_0, step k < K is labelled from N completions of the prefix (x, s_1 .. s_k), sampled
from pi_0 and checked by the task's outcome checker, l_{k,i} in {0, 1}:

    r_k(eta) = (1/eta) log( (1/N) sum_i exp(eta * l_{k,i}) )          (`er_prm_label`)

eta -> inf gives the hard label 1[any completion correct], eta -> 0 the soft label c_k / N. The last
step is labelled with the hard correctness of y itself: its prefix is the whole solution, so no
completion is drawn for it (it is stored as 1 "completion", the solution, with outcome l_K).

Steps are the pieces of the solution text closed by a delimiter (a newline for the synthetic tasks,
one operation per line); a step shorter than `min_chars` is merged with the next one, as ER-PRM does
with 30 characters for natural-language math. Every step keeps its delimiter, so the steps
concatenate back to the solution exactly.

A record (one per solution, JSON-serialisable, written one per line by `write_jsonl`):

    {"id", "prompt", "question", "answer", "task",       # the problem
     "solution", "finished", "outcome",                  # y, whether it ended with EOS, its check
     "steps": [s_1, ..., s_K],
     "correct": [c_1, ..., c_K], "total": [N, ..., N, 1],  # Monte Carlo counts per step
     "labels": {"inf": [...], "2.0": [...], "0.0": [...]},  # r_k at each eta (see `eta_key`)
     "completions": [[text, ...], ...]}                  # optional, per non-final step

Everything is deterministic given the seed: problems, solutions and completions are drawn in a
fixed order from keys folded out of one root key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from prl_jax.models.config import ModelConfig
from prl_jax.progress import progress_bar
from prl_jax.rewards.er_prm import er_prm_label
from prl_jax.rewards.plugins import check_unit_outcome
from prl_jax.sampling import SamplingConfig, bucket_length, sample_in_calls
from prl_jax.sharding import DEFAULT_RULES

# (prompt token lists, completions per prompt, key) -> per prompt, that many completion texts.
Completer = Callable[[Sequence[Sequence[int]], int, jax.Array], list[list[str]]]
# (response texts, examples) -> outcome of each response in [0, 1] (the verifier's signature).
Checker = Callable[[Sequence[str], Sequence[dict]], Sequence[float]]

# er_prm_label falls back to the plain mean below eta = 1e-6 (log_mean_exp); an eta of 0 in a label
# list means that limit, the soft label, and is evaluated there.
_SOFT_ETA = 1e-9


# ------------------------------------------------------------------------------------------------
# Steps.


def split_steps(text: str, min_chars: int = 0, delimiter: str = "\n") -> list[str]:
  """Steps of a solution: pieces closed by `delimiter`, short ones merged with the next.

  Each piece keeps its delimiter, so "".join(steps) == text. A step whose length (without its
  closing delimiter) is below `min_chars` absorbs the next piece, and so on until the merged step
  is long enough (ER-PRM merges steps under 30 characters). A short remainder at the end stays a
  step of its own: the last step is the one labelled by the outcome.

  Args:
    text: the solution.
    min_chars: minimum step length in characters (0: every piece is a step).
    delimiter: the string that closes a step (non-empty).

  Returns:
    The steps; [] for an empty text.
  """
  if not delimiter:
    raise ValueError("split_steps: delimiter must be a non-empty string, e.g. '\\n'")
  if isinstance(min_chars, bool) or not isinstance(min_chars, (int, np.integer)) or min_chars < 0:
    raise ValueError(f"split_steps: min_chars must be an int >= 0, got {min_chars!r}")
  parts = text.split(delimiter)
  pieces = [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
  steps, pending = [], ""
  for piece in pieces:
    pending += piece
    body = len(pending) - (len(delimiter) if pending.endswith(delimiter) else 0)
    if body >= min_chars:
      steps.append(pending)
      pending = ""
  if pending:
    steps.append(pending)
  return steps


def encode_steps(encode: Callable[[str], list[int]], steps: Sequence[str]) -> tuple[list[int],
                                                                                  list[int]]:
  """Token ids of the steps, encoded one step at a time, and the index of each step's last token.

      ids = encode(s_1) + ... + encode(s_K),   end_k = len(encode(s_1) + ... + encode(s_k)) - 1

  Encoding per step keeps step boundaries on token boundaries for any tokenizer (a BPE merge
  across a newline would blur them); for the character tokenizer it equals encode("".join(steps)).
  """
  ids, ends = [], []
  for step in steps:
    ids.extend(encode(step))
    ends.append(len(ids) - 1)
  return ids, ends


# ------------------------------------------------------------------------------------------------
# Sampling many short continuations through the bucketed sampler.


def sample_responses(params: Any, model_cfg: ModelConfig, prompts: Sequence[Sequence[int]], n: int,
                     key: jax.Array, scfg: SamplingConfig, *, max_rows: int = 512,
                     mesh: jax.sharding.Mesh | None = None, rules: Any = DEFAULT_RULES,
                     progress: bool = False, desc: str = "sampling") -> list[list[tuple[list[int], bool]]]:
  """`n` sampled responses for each prompt: (token ids without EOS or padding, finished).

  Prompts of very different lengths (a question plus a solution prefix of any length) would each
  compile a new sampler program. They are grouped by the sampler's power-of-two prompt bucket, and
  each call takes at most max_rows // n prompts, padded (by repeating the last prompt, whose samples
  are dropped) to that size or to the next power of two for a short last call: a handful of shapes
  in all. Calls run in a fixed order with keys fold_in(key, call), so the result depends only on
  the key and the arguments.

  Args:
    params, model_cfg: the policy.
    prompts: token-id lists (no padding).
    n: samples per prompt.
    key: PRNG key.
    scfg: sampling options; its `n` is replaced by `n`.
    max_rows: rows (prompts x n) per sampler call.
    mesh, rules: passed on to `prl_jax.sampling.sample`.
    progress: a bar labelled `desc` on stderr over the prompts (`prl_jax.progress`).

  Returns:
    One list per prompt of n (ids, finished) pairs, in the order of `prompts`.
  """
  if n < 1:
    raise ValueError(f"sample_responses: n must be >= 1, got {n}")
  scfg = scfg.replace(n=int(n))
  per_call = max(1, int(max_rows) // int(n))
  groups: dict[int, list[int]] = {}
  for i, p in enumerate(prompts):
    groups.setdefault(bucket_length(len(p), scfg.min_prompt_bucket), []).append(i)
  calls, owners, sizes = [], [], []
  for width in sorted(groups):
    members = groups[width]
    for start in range(0, len(members), per_call):
      chunk = members[start:start + per_call]
      owners.append(chunk)
      calls.append([prompts[i] for i in chunk])
      sizes.append(per_call if len(chunk) == per_call
                   else min(per_call, bucket_length(len(chunk), 1)))
  out: list[list[tuple[list[int], bool]]] = [[] for _ in prompts]
  with progress_bar(len(prompts), desc, enabled=progress, unit="prompt") as bar:
    parts = sample_in_calls(params, model_cfg, calls, key, scfg, pad_to=sizes, mesh=mesh,
                            rules=rules, on_call=bar.update)
  for chunk, part in zip(owners, parts):
    for j, i in enumerate(chunk):
      for r in range(j * n, (j + 1) * n):
        ids = part.tokens[r][part.mask[r]].tolist()
        finished = not bool(part.truncated[r])
        out[i].append((ids[:-1] if finished else ids, finished))
  return out


def policy_completer(params: Any, model_cfg: ModelConfig, decode: Callable[[list[int]], str],
                     scfg: SamplingConfig, *, max_rows: int = 512,
                     mesh: jax.sharding.Mesh | None = None, rules: Any = DEFAULT_RULES,
                     progress: bool = False) -> Completer:
  """A `Completer` that samples from the policy `params` and decodes the continuations."""

  def complete(prompts, n, key):
    responses = sample_responses(params, model_cfg, prompts, n, key, scfg, max_rows=max_rows,
                                 mesh=mesh, rules=rules, progress=progress,
                                 desc="labels: completions")
    return [[decode(ids) for ids, _ in group] for group in responses]

  return complete


# ------------------------------------------------------------------------------------------------
# Counts and labels.


def monte_carlo_counts(problems: Sequence[dict], solutions: Sequence[str],
                       finished: Sequence[bool], *, encode: Callable[[str], list[int]],
                       complete: Completer, check: Checker, num_completions: int,
                       key: jax.Array, min_chars: int = 0, delimiter: str = "\n",
                       keep_completions: bool = False) -> list[dict]:
  """Records with the Monte Carlo outcome counts of every step (labels are added by `add_labels`).

  For solution j with steps s_1..s_K: the outcome l_K = check(y_j); for each k < K, N completions
  z of the prompt encode(x) + encode_steps(s_1..s_k), each checked as the response s_1..s_k z.
  All prefixes of all solutions go to `complete` in one call, so the sampler batches them.

  Args:
    problems: one example dict per solution (with "prompt" and what `check` needs).
    solutions: solution texts y_j (EOS and padding removed).
    finished: whether each solution ended with EOS (rather than hitting the length limit).
    encode: text -> token ids (no BOS/EOS).
    complete: samples the completions (`policy_completer`, or a stub in tests).
    check: the outcome checker.
    num_completions: N per prefix.
    key: PRNG key handed to `complete`.
    min_chars, delimiter: step splitting (`split_steps`).
    keep_completions: store the completion texts in the records.

  Returns:
    One record per solution, without "labels".
  """
  if not len(problems) == len(solutions) == len(finished):
    raise ValueError(f"monte_carlo_counts: {len(problems)} problems, {len(solutions)} solutions "
                     f"and {len(finished)} finished flags; pass one of each per solution")
  if num_completions < 1:
    raise ValueError(f"monte_carlo_counts: num_completions must be >= 1, got {num_completions}")
  outcomes = [float(v) for v in check(list(solutions), list(problems))]
  check_unit_outcome(np.asarray(outcomes), "erprm")  # labels count outcomes as right or wrong
  records, prompts, owners = [], [], []
  for j, (ex, text, done) in enumerate(zip(problems, solutions, finished)):
    steps = split_steps(text, min_chars, delimiter) or [""]
    prompt_ids = list(encode(ex["prompt"]))
    prefix_ids, ends = encode_steps(encode, steps)
    for k in range(len(steps) - 1):
      prompts.append(prompt_ids + prefix_ids[:ends[k] + 1])
      owners.append((j, k))
    records.append({
        "id": ex.get("id", str(j)), "prompt": ex["prompt"], "question": ex.get("question", ""),
        "answer": ex.get("answer", ""), "task": ex.get("task", ""), "solution": text,
        "finished": bool(done), "outcome": outcomes[j], "steps": steps,
        "correct": [0] * (len(steps) - 1) + [int(outcomes[j] > 0.5)],
        "total": [num_completions] * (len(steps) - 1) + [1]})
  if prompts:
    texts = complete(prompts, num_completions, key)
    if len(texts) != len(prompts) or any(len(t) != num_completions for t in texts):
      raise ValueError("monte_carlo_counts: the completer must return num_completions texts "
                       "for every prompt")
    flat_examples, flat_texts = [], []
    for (j, k), group in zip(owners, texts):
      prefix = "".join(records[j]["steps"][:k + 1])
      flat_examples += [problems[j]] * num_completions
      flat_texts += [prefix + t for t in group]
    verdicts = np.asarray(check(flat_texts, flat_examples), np.float64).reshape(len(prompts), -1)
    for (j, k), group, row in zip(owners, texts, verdicts):
      records[j]["correct"][k] = int(np.sum(row > 0.5))
      if keep_completions:
        slots = records[j].setdefault("completions", [[] for _ in records[j]["steps"][:-1]])
        slots[k] = list(group)
  return records


def eta_key(eta: float) -> str:
  """The name of the labels at `eta` in a record: "inf" (hard), "0.0" (soft) or repr(float)."""
  eta = float(eta)
  if math.isnan(eta) or eta < 0:
    raise ValueError(f"eta must be >= 0 (0: soft labels, inf: hard labels), got {eta}")
  return "inf" if math.isinf(eta) else repr(eta)


def add_labels(records: list[dict], etas: Sequence[float]) -> list[dict]:
  """Adds record["labels"][eta_key(eta)] = [r_1, ..., r_K] for every eta (in place; returned).

  r_k = er_prm_label(l_k, eta) over the step's outcomes, rebuilt from its counts as c_k ones and
  N - c_k zeros (the label depends on the outcomes only through c_k / N). eta = 0 means the soft
  limit c_k / N, eta = inf the hard label. The final step (1 outcome: the solution itself) gets
  its correctness at every eta. Steps with the same N are labelled in one vectorised call.
  """
  keys = [eta_key(e) for e in etas]
  by_total: dict[int, list[tuple[int, int]]] = {}
  for j, rec in enumerate(records):
    if len(rec["correct"]) != len(rec["steps"]) or len(rec["total"]) != len(rec["steps"]):
      raise ValueError(f"add_labels: record {j} needs one count per step")
    rec["labels"] = {key: [0.0] * len(rec["steps"]) for key in keys}
    for k, n in enumerate(rec["total"]):
      by_total.setdefault(int(n), []).append((j, k))
  for n, slots in by_total.items():
    correct = np.array([records[j]["correct"][k] for j, k in slots])
    if np.any((correct < 0) | (correct > n)):
      raise ValueError(f"add_labels: counts must lie in [0, {n}]")
    outcomes = (np.arange(n)[None, :] < correct[:, None]).astype(np.float32)  # [M, N]
    for eta, key in zip(etas, keys):
      eta = float(eta)
      values = np.asarray(er_prm_label(outcomes, eta if eta > 0 else _SOFT_ETA))
      for (j, k), v in zip(slots, values):
        records[j]["labels"][key][k] = float(v)
  return records


def label_policy_solutions(params: Any, model_cfg: ModelConfig, tokenizer: Any,
                           scfg: SamplingConfig, problems: Sequence[dict], check: Checker, *,
                           solutions_per_problem: int, num_completions: int,
                           etas: Sequence[float], key: jax.Array, min_chars: int = 0,
                           delimiter: str = "\n", max_rows: int = 512,
                           mesh: jax.sharding.Mesh | None = None, rules: Any = DEFAULT_RULES,
                           keep_completions: bool = False, progress: bool = False) -> list[dict]:
  """The whole labelling recipe with pi_0 = `params`: solutions, completions, counts, labels.

  Samples `solutions_per_problem` solutions per problem (key fold_in(key, 0)), then
  `num_completions` completions of every non-final step prefix (key fold_in(key, 1)), both with
  `scfg` (temperature 1 in ER-PRM). Completions get the full `scfg.max_new_tokens` budget and
  prompts of any length up to the model's context. `progress` draws a bar on stderr over the
  problems, then one over the step prefixes.

  Returns:
    One labelled record per solution, problem-major (the solutions of problem 0 first).
  """
  encode = lambda text: tokenizer.encode(text)
  prompts = [encode(ex["prompt"]) for ex in problems]
  responses = sample_responses(params, model_cfg, prompts, solutions_per_problem,
                               jax.random.fold_in(key, 0), scfg, max_rows=max_rows, mesh=mesh,
                               rules=rules, progress=progress, desc="labels: solutions")
  flat = [(ex, tokenizer.decode(ids), done)
          for ex, group in zip(problems, responses) for ids, done in group]
  complete = policy_completer(params, model_cfg, tokenizer.decode,
                              scfg.replace(max_prompt_len=None), max_rows=max_rows, mesh=mesh,
                              rules=rules, progress=progress)
  records = monte_carlo_counts([f[0] for f in flat], [f[1] for f in flat], [f[2] for f in flat],
                               encode=encode, complete=complete, check=check,
                               num_completions=num_completions, key=jax.random.fold_in(key, 1),
                               min_chars=min_chars, delimiter=delimiter,
                               keep_completions=keep_completions)
  return add_labels(records, etas)


# ------------------------------------------------------------------------------------------------
# Files.


def write_jsonl(records: Sequence[dict], path: str) -> str:
  """One JSON object per line (written to a temporary file, then renamed)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    for rec in records:
      fh.write(json.dumps(rec, sort_keys=True) + "\n")
  os.replace(tmp, path)
  return path
