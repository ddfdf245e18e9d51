"""How much a countdown policy explores: pass@k for k = 1..n, distinct correct solutions per
problem, and its entropy and KL to a reference policy, on the held-out eval problems.

FRPO (PRL v2, arXiv 2601.10201) claims its KL-to-go term keeps pass@n up and drift and entropy
collapse down against GRPO and GRPO + KL loss; on countdown, where problems have many solutions,
a policy that collapses onto one way per problem keeps pass@1 but loses distinct solutions.

    run_exploration(config, "runs/x", model_dir="runs/x/final_hf", reference_dir="runs/sft/final_hf",
                    num_problems=64, n=64, kl_problems=32, kl_n=16, out_path="runs/x/explore.json")

- pass@k: the unbiased estimator of `metrics.pass_at_k_curve` over n samples (temperature 1).
- distinct: per problem, the number of distinct solutions among its correct samples
  (`countdown_solutions.distinct_correct`: same multiset of canonical lines = same solution);
  also as a share of the solutions the problem has (`countdown.count_solutions`).
- entropy and KL: `policy_kl.policy_kl` on kl_n fresh samples of kl_problems problems (token
  entropy of the policy on its own samples; KL(pi || pi_ref) per sequence and per token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from prl_jax.data import countdown, countdown_solutions
from prl_jax.eval.evaluate import evaluate, load_policy
from prl_jax.eval.metrics import pass_at_k_curve
from prl_jax.eval.policy_kl import policy_kl
from prl_jax.run import paths
from prl_jax.run.context import build_context

EXPLORE_FILE = "explore.json"
REPORTED_K = (1, 4, 8, 16, 32, 64)


def exploration_summary(correct: Sequence[int], distinct: Sequence[int], available: Sequence[int],
                        n: int) -> dict:
  """pass@k for k = 1..n and distinct-solution statistics over P problems.

  Args:
    correct: [P] correct samples per problem (of n).
    distinct: [P] distinct solutions among them (<= correct).
    available: [P] distinct solutions each problem has.
    n: samples per problem.

  Returns:
    {"pass_at_k": [n] mean pass@k, "pass@k" for k in REPORTED_K (<= n), "distinct_mean": mean
    distinct, "distinct_share": mean of distinct / available, "distinct_per_correct": sum
    distinct / sum correct (how rarely a correct sample repeats a solution; None without any
    correct sample), "solved": share of problems with a correct sample, "problems": P}.
  """
  c, d, a = (np.asarray(x, dtype=np.int64) for x in (correct, distinct, available))
  if not c.shape == d.shape == a.shape or c.ndim != 1:
    raise ValueError(f"exploration_summary: need three [P] arrays, got {c.shape}, {d.shape}, "
                     f"{a.shape}")
  if np.any(d > c) or np.any(a < 1):
    raise ValueError("exploration_summary: need distinct <= correct and available >= 1")
  curve = pass_at_k_curve(n, c)
  # A share is capped at 1: the enumeration behind `available` may stop at a limit.
  out = {"pass_at_k": [float(v) for v in curve], "distinct_mean": float(d.mean()),
         "distinct_share": float(np.mean(np.minimum(d, a) / a)),
         "distinct_per_correct": float(d.sum() / c.sum()) if c.sum() else None,
         "solved": float(np.mean(c > 0)), "problems": int(c.size)}
  out.update({f"pass@{k}": float(curve[k - 1]) for k in REPORTED_K if k <= n})
  return out


def distinct_counts(records: Sequence[Mapping], examples: Sequence[Mapping]) -> list[int]:
  """Per problem, the distinct solutions among the sampled responses `evaluate` kept."""
  return [countdown_solutions.distinct_correct(r["responses"], ex)
          for r, ex in zip(records, examples)]


def run_exploration(config, workdir: str, *, model_dir: str, reference_dir: str,
                    num_problems: int, n: int, kl_problems: int, kl_n: int, out_path: str) -> dict:
  """The module docstring's measures of `model_dir` on the first `num_problems` eval problems
  (seed config.seed, rollout.max_new_tokens), written to `out_path`."""
  ctx = build_context(config, workdir)
  policy = load_policy(ctx, model_dir)
  reference = load_policy(ctx, reference_dir)
  examples = ctx.eval_examples[:num_problems]
  results = evaluate(policy.params, policy.model_cfg, policy.tokenizer, examples, ctx.verifier,
                     n=n, temperature=1.0, max_new_tokens=config.rollout.max_new_tokens,
                     seed=config.seed, keep_responses=True)
  records = results["records"]
  out = exploration_summary([r["c"] for r in records], distinct_counts(records, examples),
                            [countdown.count_solutions(ex["question"]) for ex in examples], n)
  out["greedy"] = float(np.mean([r["greedy_correct"] for r in records]))
  out["mean_length"] = float(np.mean([x for r in records for x in r["lengths"]]))
  out["kl"] = policy_kl(policy, reference, examples[:kl_problems], policy.tokenizer, n=kl_n,
                        max_new_tokens=config.rollout.max_new_tokens, seed=config.seed)
  out.update(model=model_dir, reference=reference_dir, n=n)
  paths.write_text(out_path, json.dumps(out, indent=1, sort_keys=True))
  if hasattr(ctx.verifier, "close"):
    ctx.verifier.close()
  return out
