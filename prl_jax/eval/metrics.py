"""Evaluation metrics: pass@k, mean@n, maj@k and best-of-N with a PRM.

pass@k follows Chen et al. 2021 (arXiv 2107.03374, section 2.1); mean@n is PRL's average@n;
majority vote and PRM best-of-N follow the ER-PRM evaluation (arXiv 2412.11006, section 6).
pass@k and maj@k run on the host (NumPy, Python strings); best-of-N is jnp so it can run on device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np

# The solution score is ER-PRM math (rewards/er_prm.py); re-exported as part of the evaluation API.
from prl_jax.rewards.er_prm import AGGREGATIONS, best_of_n  # noqa: F401


def _pass_at_k_one(n: int, c: int, k: int) -> float:
  if n - c < k:
    return 1.0
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k(n, c, k):
  """Unbiased pass@k from n samples with c correct (Chen et al. 2021, section 2.1).

      pass@k = 1 - C(n - c, k) / C(n, k)
             = 1                                     if n - c < k
               1 - prod_{i=n-c+1}^{n} (1 - k / i)    otherwise

  The product form avoids huge binomials. pass@n is 1 iff any sample is correct; pass@1 = c / n.

  Args:
    n: samples per problem (int or integer array).
    c: correct samples, 0 <= c <= n (int or integer array).
    k: budget, 1 <= k <= n (int or integer array).
    All three broadcast together.

  Returns:
    A float for scalar inputs, else a float64 array of the broadcast shape.

  Raises:
    ValueError: k > n, k < 1, c outside [0, n], or non-integer inputs.
  """
  arrays = [np.asarray(v) for v in (n, c, k)]
  for name, a in zip(("n", "c", "k"), arrays):
    if a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
      raise ValueError(f"pass_at_k: {name} must be integers, got {a!r}")
  n_b, c_b, k_b = np.broadcast_arrays(*[a.astype(np.int64) for a in arrays])
  if np.any(k_b > n_b):
    raise ValueError(f"pass_at_k: k must be <= n, got k={k} with n={n}")
  if np.any(k_b < 1):
    raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
  if np.any((c_b < 0) | (c_b > n_b)):
    raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c} with n={n}")
  out = np.array([_pass_at_k_one(int(a), int(b), int(d))
                  for a, b, d in zip(n_b.ravel(), c_b.ravel(), k_b.ravel())], dtype=np.float64)
  out = out.reshape(n_b.shape)
  return float(out) if out.ndim == 0 else out


def pass_at_k_curve(n: int, c) -> np.ndarray:
  """Mean pass@k over problems for every k = 1..n (Chen et al. 2021, section 2.1).

  Args:
    n: samples per problem (the same for all problems).
    c: [P] (or scalar) correct samples per problem.

  Returns:
    [n] float64 array; entry k-1 is the mean over problems of pass@k. Non-decreasing in k,
    starts at mean(c / n) and ends at the fraction of problems with any correct sample.
  """
  n = int(n)
  if n < 1:
    raise ValueError(f"pass_at_k_curve: n must be >= 1, got {n}")
  c = np.atleast_1d(np.asarray(c))
  if c.ndim != 1 or c.size == 0:
    raise ValueError(f"pass_at_k_curve: c must be a non-empty [P] array, got shape {c.shape}")
  ks = np.arange(1, n + 1)
  return np.asarray(pass_at_k(n, c[None, :], ks[:, None])).mean(axis=1)


def mean_at_n(correct) -> float:
  """mean@n (average@n): mean over problems of c / n = mean of all [P, n] correctness flags.

  Args:
    correct: [P, n] booleans (or 0/1), n samples for each of P problems.

  Returns:
    A float in [0, 1].
  """
  a = np.asarray(correct)
  if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
    raise ValueError(f"mean_at_n: correct must be a non-empty [P, n] array, got shape {a.shape}")
  return float(np.mean(a.astype(np.float64)))


def majority_vote(answers: Sequence[Any]) -> tuple[Any, int]:
  """Most frequent answer of one problem and the index of its first occurrence.

  None (no answer extracted) does not vote. Ties go to the answer that reached the winning count
  first while scanning in sample order: for [a, b, b, a] the winner is b (count 2 at index 2, a only
  at index 3). Answers are compared with ==, so normalise them (e.g. with the verifier) first.

  Returns:
    (answer, first index), or (None, -1) when no sample has an answer.
  """
  counts: dict[Any, int] = {}
  first: dict[Any, int] = {}
  best, best_count = None, 0
  for i, ans in enumerate(answers):
    if ans is None:
      continue
    counts[ans] = counts.get(ans, 0) + 1
    first.setdefault(ans, i)
    if counts[ans] > best_count:
      best, best_count = ans, counts[ans]
  return (best, first[best]) if best_count else (None, -1)


def maj_at_k(answers: Sequence[Sequence[Any]], *, reference: Sequence[Any] | None = None,
             correct=None, k: int | None = None) -> float:
  """maj@k: fraction of problems whose majority answer over the first k samples is correct.

  The majority is taken with `majority_vote` (None does not vote; ties go to the answer first to
  reach the winning count). Correctness comes from exactly one of:
    reference: [P] reference answers; the majority answer is correct iff it == the reference.
    correct: [P, n] per-sample flags; the majority answer is correct iff the flag of its first
      occurrence is set (all samples with the same answer string share one verdict).
  A problem with no extracted answer counts as wrong.

  Args:
    answers: P lists of n extracted answers (strings or None).
    reference: see above.
    correct: see above.
    k: samples used per problem (default n); 1 <= k <= n.

  Returns:
    A float in [0, 1].
  """
  if (reference is None) == (correct is None):
    raise ValueError("maj_at_k: pass exactly one of reference= or correct=")
  if len(answers) == 0:
    raise ValueError("maj_at_k: no problems")
  n = len(answers[0])
  if any(len(a) != n for a in answers):
    raise ValueError("maj_at_k: every problem needs the same number of samples")
  k = n if k is None else int(k)
  if not 1 <= k <= n:
    raise ValueError(f"maj_at_k: need 1 <= k <= n = {n}, got k={k}")
  if reference is not None and len(reference) != len(answers):
    raise ValueError(f"maj_at_k: {len(reference)} references for {len(answers)} problems")
  if correct is not None:
    correct = np.asarray(correct)
    if correct.shape != (len(answers), n):
      raise ValueError(f"maj_at_k: correct must have shape {(len(answers), n)}, "
                       f"got {correct.shape}")
  hits = 0
  for p, sample_answers in enumerate(answers):
    winner, idx = majority_vote(list(sample_answers)[:k])
    if idx < 0:
      continue
    if reference is not None:
      hits += int(winner == reference[p])
    else:
      hits += int(bool(correct[p, idx]))
  return hits / len(answers)


def best_of_n_select(solution_scores: chex.Array, n: int | None = None) -> chex.Array:
  """Index of the best of the first n candidates, argmax with ties to the first (ER-PRM section 6).

  Args:
    solution_scores: [..., N] candidate scores (e.g. from `best_of_n`).
    n: candidates considered, 1 <= n <= N (default N), for best-of-n curves.

  Returns:
    [...] int32 indices into the candidate axis.
  """
  s = jnp.asarray(solution_scores)
  if s.ndim < 1:
    raise ValueError("best_of_n_select: solution_scores needs a candidate axis")
  total = s.shape[-1]
  n = total if n is None else int(n)
  if not 1 <= n <= total:
    raise ValueError(f"best_of_n_select: need 1 <= n <= {total}, got n={n}")
  return jnp.argmax(s[..., :n], axis=-1).astype(jnp.int32)
