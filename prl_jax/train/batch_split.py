"""How a step's rows split into mini-, micro- and log-prob batches, for the policy and a PRM
trained in the run, and when those batches may run each group's prompt once.

A step holds rollout.prompts_per_step x rollout.n rows; a size of 0 in train.* means the one
above it. Shared prompts (`train.share_prompts`, `models.logprobs.response_logprobs`) need every
batch to hold whole groups of rollout.n rows.
"""

from __future__ import annotations

import ml_collections

from prl_jax.algorithms.recipes import Recipe
from prl_jax.models.logprobs import shares_prompts


def batch_rows(config) -> tuple[int, int, int, int]:
  """Rows of a step's batch, of a mini-batch, of a micro-batch and of a log-prob forward (a size
  of 0 in train.* means the one above it)."""
  batch = config.rollout.prompts_per_step * config.rollout.n
  mini = config.train.mini_batch_size or batch
  micro = config.train.micro_batch_size or mini
  return batch, mini, micro, config.train.logprob_micro_batch_size or micro


def batch_split(config) -> tuple[int, int, int]:
  """(mini-batches per update, micro-batches per mini-batch, log-prob chunks per batch)."""
  batch, mini, micro, logprob_rows = batch_rows(config)
  return batch // mini, mini // micro, batch // logprob_rows


def prompt_group(config, model_cfg) -> int:
  """Rows per prompt for which the policy's log-prob passes and update run the prompt once
  (`train.share_prompts`, `models.logprobs.response_logprobs`): rollout.n when the mini-,
  micro- and log-prob batches all hold whole groups, else 1 (every row runs its prompt)."""
  n = config.rollout.n
  if not shares_prompt_rows(config, model_cfg):
    return 1
  return n if all(rows % n == 0 for rows in batch_rows(config)[1:]) else 1


def shares_prompt_rows(config, model_cfg) -> bool:
  """Whether the run asks for shared prompts and the model can run a prompt once for n rows."""
  return bool(config.train.share_prompts) and shares_prompts(model_cfg, config.rollout.n)


def micro_rows(config) -> int:
  """Rows of one micro-batch of an update (the strided split of `prl_jax.run.updates`)."""
  return batch_rows(config)[2]


def prm_mini_micro(config, recipe: Recipe, rows: int) -> tuple[int, int]:
  """Rows of a PRM mini-batch (`PrmTraining.mini_batch_rows`, 0: the whole batch) and of its
  micro-batches (the run's, at most a mini-batch)."""
  mini = recipe.prm.mini_batch_rows(ml_collections.FrozenConfigDict(config.algo), config) or rows
  return mini, min(micro_rows(config), mini)


def prm_rows(config, recipe: Recipe, rows: int) -> tuple[int, int, int]:
  """(mini-batches, micro-batches per mini-batch, rows per group block) of a PRM batch of `rows`.

  Mini-batches hold `PrmTraining.mini_batch_rows` rows (0: the whole batch); micro-batches the
  run's micro-batch rows, at most a mini-batch; a mini-batch takes whole rollout groups when it
  can (block = rollout.n), so a single forward scores each group with one PRM version.
  """
  mini, micro = prm_mini_micro(config, recipe, rows)
  if rows % mini or mini % micro:
    raise ValueError(f"A PRM batch of {rows} rows does not split into mini-batches of {mini} and "
                     f"micro-batches of {micro} rows; make the PRM mini-batch size (e.g. "
                     "train.mini_batch_size) and train.micro_batch_size divide it.")
  n = config.rollout.n
  return rows // mini, mini // micro, n if mini % n == 0 else 1


def prm_prompt_group(config, model_cfg, recipe: Recipe) -> int:
  """`prompt_group` for the PRM's loss: rollout.n when its batch rows are the rollouts
  (`PrmTraining.loss_scores`) and its mini- and micro-batches hold whole groups, else 1."""
  n = config.rollout.n
  if not recipe.prm.loss_scores or not shares_prompt_rows(config, model_cfg):
    return 1
  mini, micro = prm_mini_micro(config, recipe, batch_rows(config)[0])
  return n if mini % n == 0 and micro % n == 0 else 1
