"""Best-of-N candidates: N_max sampled solutions per problem, checked, with the final answers
majority vote compares (`prl_jax.eval.prm_experiment` scores them with every PRM)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from prl_jax.eval.evaluate import answer_extractor
from prl_jax.models.config import ModelConfig
from prl_jax.prm import labels
from prl_jax.sampling import SamplingConfig
from prl_jax.sharding import DEFAULT_RULES


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
                      max_rows: int = 512, mesh=None, rules=DEFAULT_RULES,
                      progress: bool = False) -> Candidates:
  """Samples `n` candidates per problem from the policy and checks them (`progress`: a bar)."""
  prompts = [tokenizer.encode(ex["prompt"]) for ex in problems]
  responses = labels.sample_responses(params, model_cfg, prompts, n, key, scfg,
                                      max_rows=max_rows, mesh=mesh, rules=rules,
                                      progress=progress, desc="best-of-N: candidates")
  texts = [[tokenizer.decode(ids) for ids, _ in group] for group in responses]
  finished = np.array([[done for _, done in group] for group in responses], bool)
  flat = check([t for group in texts for t in group], [ex for ex in problems for _ in range(n)])
  correct = (np.asarray(flat, np.float64).reshape(len(problems), n) > 0.5).astype(np.float64)
  return Candidates(list(problems), texts, finished, correct, candidate_answers(problems, texts))


def candidate_answers(problems: Sequence[dict], texts: Sequence[Sequence[str]]) -> list[list]:
  """[P][N] final answers for majority and weighted votes: each task's own (what its checker
  reads: the register's last two values, countdown's value, a math answer), so that agreeing
  solutions vote together."""
  return [[answer_extractor(ex.get("task", "math"))(t, ex) for t in group]
          for ex, group in zip(problems, texts)]
