"""A PRM trained beforehand that scores the loop's rollouts and is never updated (method erprm).

The PRM is an HF directory written by `prl-jax erprm` (weights, config.json and prm.json). Each
response is split into steps as the PRM's labels were, its step scores softmax([z+, z-])[0] are
read at the step ends (`prl_jax.prm.model.prm_step_scores`) and aggregated into one solution
score with `algo.erprm.agg` (min, product, last or mean; ER-PRM uses min). A step scorer in
algo.steps.score_fn (`prl_jax.prm.step_fn`) takes the trained PRM's place (`frozen_scorer`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from prl_jax import sharding
from prl_jax.config import ConfigError
from prl_jax.models.config import ModelConfig
from prl_jax.prm import model as prm_lib
from prl_jax.prm.scoring import prm_step_score_lists, solution_scores
from prl_jax.prm.step_fn import load_step_fn, step_score_lists
from prl_jax.rewards.er_prm import AGGREGATIONS


@dataclasses.dataclass
class FrozenPrm:
  """A loaded PRM: what to read (spec), its shapes, its placed parameters and the aggregation."""

  spec: prm_lib.PrmSpec
  model_cfg: ModelConfig
  params: Any
  agg: str


def load_frozen_prm(ctx: Any) -> FrozenPrm:
  """Loads algo.erprm.prm_dir and places it on the run's mesh; checks it fits the policy."""
  config = ctx.config
  prm_dir, agg = config.algo.erprm.prm_dir, config.algo.erprm.agg
  if not prm_dir:
    raise ConfigError("method=erprm scores rollouts with a trained PRM: set "
                      "--config.algo.erprm.prm_dir=DIR (a PRM written by `prl-jax erprm`).")
  if agg not in AGGREGATIONS:
    raise ConfigError(f"algo.erprm.agg={agg!r}; choose one of {AGGREGATIONS}.")
  if not os.path.isfile(os.path.join(prm_dir, prm_lib.SPEC_FILE)):
    raise ConfigError(f"algo.erprm.prm_dir={prm_dir!r} has no {prm_lib.SPEC_FILE}; it must be "
                      "a PRM directory written by `prl-jax erprm`.")
  spec, model_cfg, params = prm_lib.load_prm(prm_dir, dtype=config.model.dtype)
  if model_cfg.vocab_size != ctx.model_cfg.vocab_size:
    raise ConfigError(f"The PRM in {prm_dir} has a vocabulary of {model_cfg.vocab_size} tokens "
                      f"but the policy {ctx.model_cfg.vocab_size}; the PRM must read the "
                      "policy's tokens (train it from the same base model).")
  params = jax.device_put(params, sharding.param_shardings(model_cfg, ctx.mesh, ctx.rules))
  return FrozenPrm(spec=spec, model_cfg=model_cfg, params=params, agg=agg)


@dataclasses.dataclass
class FrozenScores:
  """A frozen scorer's verdict on B rollouts.

  Attributes:
    solution: [B] solution scores (the step scores aggregated with algo.erprm.agg).
    steps: per response its step scores in order, when its steps are the response's pieces
      between algo.steps.delimiter (the loop then places them on the step ends for the step
      diagnostics, prm/step_auroc); None when the scorer split them otherwise.
  """

  solution: np.ndarray
  steps: list[list[float]] | None


def score_rollouts(prm: FrozenPrm, ctx: Any, examples: Sequence[dict], texts: Sequence[str],
                   finished: np.ndarray, group_size: int) -> FrozenScores:
  """The PRM's scores of B = P * group_size responses (groups contiguous)."""
  rows = len(texts)
  grouped = [list(texts[i:i + group_size]) for i in range(0, rows, group_size)]
  steps = prm_step_score_lists(
      prm.model_cfg, prm.params, prm.spec, ctx.tokenizer, list(examples[::group_size]), grouped,
      np.asarray(finished).reshape(-1, group_size), ctx.prompt_len,
      ctx.config.rollout.max_new_tokens, rows=rows, place=ctx.place_batch)
  solution = solution_scores(steps, prm.agg, (rows // group_size, group_size)).reshape(-1)
  # Labelled steps merged under min_step_chars are not the loop's delimiter steps.
  same_steps = (prm.spec.min_step_chars == 0
                and prm.spec.delimiter == ctx.config.algo.steps.delimiter)
  return FrozenScores(solution, steps if same_steps else None)


def frozen_scorer(ctx: Any) -> Callable[[Any], FrozenScores]:
  """Rollouts -> their scores: of algo.steps.score_fn's step scores when it is set, else of the
  trained PRM in algo.erprm.prm_dir; both aggregated with algo.erprm.agg."""
  config = ctx.config
  if config.algo.steps.score_fn:
    fn, agg = load_step_fn(config.algo.steps.score_fn), config.algo.erprm.agg
    if agg not in AGGREGATIONS:
      raise ConfigError(f"algo.erprm.agg={agg!r}; choose one of {AGGREGATIONS}.")

    def score(r) -> FrozenScores:
      steps = step_score_lists(fn, r.texts, r.examples, config.algo.steps.delimiter)
      return FrozenScores(solution_scores(steps, agg, (len(r.texts), 1)).reshape(-1), steps)
    return score
  prm = load_frozen_prm(ctx)
  return lambda r: score_rollouts(prm, ctx, r.examples, r.texts, ~r.truncated, config.rollout.n)
