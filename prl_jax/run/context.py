"""Everything a run builds once before its first step: validated config, mesh, tokenizer, data.

`validate` runs before any compilation so a bad config fails in the first seconds with a message
that names the key and what to change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from prl_jax import distributed, sharding
from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import ConfigError
from prl_jax.data import templates
from prl_jax.data.registry import get_task
from prl_jax.data.rows import BadRow, DataFileError, Row, RowScreen
from prl_jax.models import hf
from prl_jax.models.config import ModelConfig, preset
from prl_jax.models.tokenizer import CharTokenizer, load_tokenizer
from prl_jax.models.transformer import init_params
from prl_jax.rewards import plugins
from prl_jax.run import paths
from prl_jax.sampling import SamplingConfig

AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
logger = logging.getLogger(__name__)


def validate(config: ml_collections.ConfigDict, *, reads_prm: bool = True) -> None:
  """Checks values that are wrong on their own or together; raises ConfigError.

  reads_prm=False: the command writes PRMs rather than reading one (`prl-jax erprm`), so the RL
  arm's algo.erprm.prm_dir, possibly the very PRM it is about to write, is not checked.
  """
  recipe = get_recipe(config.method)  # unknown method -> clear error listing the known ones
  r, t = config.rollout, config.train
  if r.n < recipe.min_group_size:
    raise ConfigError(f"method={config.method} needs rollout.n >= {recipe.min_group_size} "
                      f"responses per prompt (a leave-one-out baseline), got {r.n}.")
  if r.max_rows and (r.max_rows < r.n or r.max_rows % r.n):
    raise ConfigError(f"rollout.max_rows={r.max_rows} must be a multiple of rollout.n={r.n} "
                      "(whole groups per sampler call), or 0 for the whole batch at once.")
  if r.lanes < 0:
    raise ConfigError(f"rollout.lanes={r.lanes} must be >= 1 (sampler calls at once) or 0 (auto).")
  if t.update_lanes < 0:
    raise ConfigError(f"train.update_lanes={t.update_lanes} must be >= 1 (gradient shares at "
                      "once) or 0 (auto).")
  if r.prompts_per_step < 1 or r.max_new_tokens < 1:
    raise ConfigError("rollout.prompts_per_step and rollout.max_new_tokens must be >= 1.")
  batch = r.prompts_per_step * r.n
  mini = t.mini_batch_size or batch
  micro = t.micro_batch_size or mini
  logprob_rows = t.logprob_micro_batch_size or micro
  if batch % mini or mini % micro or batch % logprob_rows:
    raise ConfigError(f"train.mini_batch_size={mini} must divide the batch of {batch} responses, "
                      f"train.micro_batch_size={micro} the mini-batch and "
                      f"train.logprob_micro_batch_size={logprob_rows} the batch.")
  if t.ppo_epochs < 1:
    raise ConfigError(f"train.ppo_epochs must be >= 1 (passes over each rollout batch), got "
                      f"{t.ppo_epochs}.")
  if config.algo.loss.agg not in AGGS:
    raise ConfigError(f"algo.loss.agg={config.algo.loss.agg!r}; choose one of {AGGS}.")
  if config.filter.enable and not 0 <= config.filter.acc_lo <= config.filter.acc_hi <= 1:
    raise ConfigError("filter.acc_lo <= filter.acc_hi must both lie in [0, 1].")
  if config.filter.max_rounds < 1 or config.filter.oversample < 1:
    raise ConfigError("filter.max_rounds and filter.oversample must be integers >= 1.")
  problem = recipe.check(config.algo)
  if problem:
    raise ConfigError(f"method={config.method}: {problem}")
  if r.temperature < 0:
    raise ConfigError("rollout.temperature must be >= 0 (0 means greedy).")
  if config.task.template not in templates.TEMPLATES:
    raise ConfigError(f"task.template={config.task.template!r}; choose one of "
                      f"{sorted(templates.TEMPLATES)}.")
  if config.task.train_file and config.task.template != "plain" and config.task.name != "trl":
    raise ConfigError("task.template applies to the synthetic tasks and to text prompts of the "
                      "trl layout; other data files carry the template of their layout "
                      "(prl_jax.data.math_files), so leave it 'plain'.")
  reads_scores = config.algo.erprm.prm_dir or config.algo.steps.score_fn
  if reads_prm and recipe.frozen_prm and not reads_scores:
    raise ConfigError(f"method={config.method} scores rollouts with a trained PRM: set "
                      "algo.erprm.prm_dir to a PRM directory written by `prl-jax erprm`, or "
                      "algo.steps.score_fn=path.py:name to a step scorer.")
  if config.algo.steps.score_fn:  # a missing file or function fails here, before any compile
    try:
      plugins.load_function(config.algo.steps.score_fn, "algo.steps.score_fn")
    except plugins.RewardFnError as err:
      raise ConfigError(str(err)) from err
  for key, path in (("task.train_file", config.task.train_file),
                    ("algo.erprm.prm_dir", config.algo.erprm.prm_dir if reads_prm else ""),
                    ("task.eval_file", config.task.eval_file),
                    ("init_from", config.init_from), ("model.hf_dir", config.model.hf_dir)):
    if path and not paths.exists(path):
      raise ConfigError(f"{key}={path!r} does not exist; fix the path or leave it empty.")
  devices = config.mesh.num_devices or jax.device_count()
  try:  # any one axis may be -1 (the rest), e.g. mesh.fsdp=-1 for FSDP over every device
    data, fsdp, _ = sharding.resolve_mesh_shape(config.mesh.data, config.mesh.fsdp,
                                                config.mesh.tensor, devices)
  except ValueError as err:
    raise ConfigError(f"mesh.*: {err}") from err
  try:
    sharding.check_rules(config.mesh.rules)
  except (TypeError, ValueError) as err:
    raise ConfigError(f"mesh.rules: {err}") from err
  mesh_rows = data * fsdp
  if batch % mesh_rows or micro % mesh_rows or logprob_rows % mesh_rows:
    raise ConfigError(f"The mesh splits batches {mesh_rows} ways (mesh.data x mesh.fsdp) on "
                      f"{devices} devices, which does not divide the batch of {batch}, the "
                      f"micro-batch of {micro} or the log-prob micro-batch of {logprob_rows}; "
                      "change mesh.* or rollout.prompts_per_step.")


@dataclasses.dataclass
class RunContext:
  """The host-side objects of a run."""

  config: ml_collections.ConfigDict
  workdir: str
  model_cfg: ModelConfig
  tokenizer: Any
  mesh: jax.sharding.Mesh
  train_examples: list[dict]
  eval_examples: list[dict]
  verifier: Callable[[list[str], list[dict]], list[float]]  # (texts, examples) -> rewards
  sampling: SamplingConfig
  prompt_len: int
  hf_dir: str = ""
  rules: sharding.Rules = sharding.DEFAULT_RULES  # mesh.rules: logical axis -> mesh axes
  # data/skipped_rows (and one count per reason): rows left out by task.skip_bad_rows or by
  # design, for the run's first metrics.
  data_metrics: dict[str, int] = dataclasses.field(default_factory=dict)

  def place_batch(self, tree):
    """Rows of every batch array are split over the mesh's (data, fsdp) axes.

    Every process holds the same host batch (rollouts are gathered to all of them), so a host
    array goes straight to the global sharding; each process keeps only its own rows.
    """
    spec = sharding.batch_sharding(self.mesh, self.rules)
    place = lambda x: jax.device_put(x if isinstance(x, jax.Array) else np.asarray(x), spec)
    return jax.tree_util.tree_map(place, tree)

  def _state_shardings(self, state, model_cfg=None):
    specs = sharding.param_shardings(model_cfg or self.model_cfg, self.mesh, self.rules)
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    return sharding.tree_shardings_like(state, specs, replicated)

  def place_state(self, state, model_cfg=None):
    """`state` on the mesh, its parameters sharded as the policy's (or `model_cfg`'s, a PRM of
    another architecture)."""
    return jax.device_put(state, self._state_shardings(state, model_cfg))

  def abstract(self, state):
    """Shape/dtype/sharding skeleton of `state`, the target of a checkpoint restore."""
    shardings = self._state_shardings(state)
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)

  def export_policy(self, params, directory: str, model_cfg=None, like: str | None = None) -> str:
    """Policy `params` in HF layout (safetensors + config.json) with its tokenizer beside it, in
    the stored dtype, model_type, generation config and special tokens of the checkpoint the run
    started from (`hf.save_like`). A model of another architecture (a PRM from its own
    checkpoint) passes its `model_cfg` and that checkpoint as `like`.

    With several processes, all of them gather the parameters (each host then holds the whole
    model in host memory) and process 0 writes.
    """
    if jax.process_count() > 1:
      params = jax.tree_util.tree_map(distributed.to_host, params)
      if not distributed.is_main_process():
        return directory
    with paths.local_dir(directory) as local:  # a gs:// workdir: written here, then uploaded
      hf.save_like(local, model_cfg or self.model_cfg, params, like or self.hf_dir)
      if isinstance(self.tokenizer, CharTokenizer):
        self.tokenizer.save(local)
      elif hasattr(self.tokenizer, "tokenizer") and hasattr(self.tokenizer.tokenizer,
                                                            "save_pretrained"):
        self.tokenizer.tokenizer.save_pretrained(local)
    return directory


def _model_source(config) -> str:
  """The HF directory the policy starts from: init_from (an SFT export) or model.hf_dir."""
  return config.init_from or config.model.hf_dir


def _load_model_config(config, tokenizer) -> ModelConfig:
  overrides = dict(dtype=config.model.dtype, remat=config.model.remat,
                   attention_chunk=config.model.attention_chunk)
  source = _model_source(config)
  if source:
    with open(os.path.join(source, "config.json")) as fh:
      return hf.config_from_hf(json.load(fh), **overrides)
  # A preset trained from scratch takes its vocabulary from the tokenizer: ids the tokenizer
  # cannot decode would otherwise be sampled.
  return preset(config.model.preset, vocab_size=tokenizer.vocab_size, **overrides)


def _tokenizer(config):
  source = config.model.tokenizer
  if source == "char":
    hf_source = _model_source(config)
    if hf_source and os.path.exists(os.path.join(hf_source, "char_tokenizer.json")):
      return CharTokenizer.load(hf_source)
    return CharTokenizer()
  return load_tokenizer(source)


def task_options(config) -> dict[str, Any]:
  """Keyword arguments of the synthetic task's generators: prompt template, operand range."""
  options = dict(template=config.task.template)
  if config.task.name == "arithmetic":
    options.update(low=1, high=config.task.max_operand)
  if config.task.name == "countdown" and config.task.countdown.min_solutions:
    options.update(min_solutions=config.task.countdown.min_solutions)
  if config.task.name == "register":
    r = config.task.register
    options.update(bug_seed=r.bug_seed, num_bugs=r.num_bugs, min_bugs=r.min_bugs,
                   max_bugs=r.max_bugs, bug_keys=r.bug_keys, rule=r.rule,
                   hard_bugs=r.hard_bugs, easy_share=r.easy_share)
  return options


def layout_options(config) -> dict[str, Any]:
  """Keyword arguments of the data layout's loader: the trl layout's column names and template
  ("plain": text prompts as stored)."""
  task = config.task
  if task.name != "trl":
    return {}
  return dict(prompt_column=task.prompt_column, answer_column=task.answer_column,
              template=None if task.template == "plain" else task.template)


def render_prompts(examples: list[dict], tokenizer) -> list[dict]:
  """The examples with chat-message prompts rendered to text by the tokenizer's chat template.

  Done once here so that everything downstream (sampling, SFT, evaluation, the prompt-length
  check) sees a prompt as the one string the policy is fed; text prompts are kept as they are.
  """
  return [ex if isinstance(ex["prompt"], str)
          else {**ex, "prompt": templates.prompt_text(tokenizer, ex["prompt"])} for ex in examples]


def _fit_prompt(example: dict, tokenizer, limit: int) -> dict:
  """The example with its prompt rendered to text; BadRow when that text has no tokens or more
  than `limit` (task.max_prompt_len), which the sampler could not take."""
  (example,) = render_prompts([example], tokenizer)
  n = len(tokenizer.encode(example["prompt"]))
  if n == 0:
    raise BadRow("prompt", "empty", "no tokens after rendering")
  if n > limit:
    raise BadRow("prompt", "too_long", f"{n} tokens after rendering, task.max_prompt_len={limit}",
                 f"raise task.max_prompt_len (this prompt needs {n}) or shorten the prompt")
  return example


def _generated(examples: list[dict], where: str, screen: RowScreen) -> list[dict]:
  """Generated examples through the same screen as file rows (the prompt check included)."""
  return screen.keep((Row(f"{where} example {i}", ex) for i, ex in enumerate(examples)),
                     lambda i, ex: ex)


def split_examples(config, tokenizer) -> tuple[list[dict], list[dict], RowScreen]:
  """Train and eval examples, prompts rendered and checked, and the screen that kept them.

  A bad row (data files) or a prompt over task.max_prompt_len stops here with its place, or is
  skipped and counted in the screen with task.skip_bad_rows.
  """
  task = config.task
  limit = max(task.max_prompt_len, 1)
  screen = RowScreen(skip=task.skip_bad_rows, prepare=lambda ex: _fit_prompt(ex, tokenizer, limit))
  if task.train_file:
    from prl_jax.data import math_files
    # A data-set layout name (gsm8k, math, numina, eurus2) reads that layout; any other name
    # reads the loop's own jsonl schema (e.g. synthetic tasks written by math_files.write_jsonl).
    if task.name in math_files.LOADERS:
      options = layout_options(config)
      read = lambda path: math_files.load(task.name, path, screen=screen, **options)
    else:
      read = lambda path: math_files.load_task(path, screen=screen)
    train = read(task.train_file)
    evals = read(task.eval_file) if task.eval_file else train[:task.num_eval]
  else:
    spec = get_task(task.name)
    options = task_options(config)
    difficulty = (task.min_ops, task.max_ops)
    train = spec.generate(task.num_train, difficulty, task.seed, **options)
    try:  # the eval split never repeats a training question (its own stream, those skipped)
      evals = spec.generate(task.num_eval, difficulty, task.seed, split="eval",
                            exclude={ex["question"] for ex in train}, **options)
    except ValueError as err:
      raise ConfigError(f"task.num_eval: {err}.") from err
    train = _generated(train, f"{task.name} (generated) train", screen)
    evals = _generated(evals, f"{task.name} (generated) eval", screen)
  return train, evals, screen


def make_verifier(config) -> Callable[[list[str], list[dict]], list[float]]:
  """Outcome reward of each (response text, example): the task checker or the math verifier,
  or the weighted sum of the functions in task.reward_fn (`prl_jax.rewards.plugins`).

  One argument order everywhere, that of every task's check(response, example).
  """
  from prl_jax.rewards import plugins, verify
  verifier = verify.Verifier(workers=config.task.verify_workers)
  if not config.task.reward_fn:
    return verifier
  try:
    rewards = plugins.load_rewards(config.task.reward_fn, config.task.reward_weights, verifier)
  except plugins.RewardFnError as err:
    raise ConfigError(str(err)) from err
  return plugins.RewardSet(rewards, verifier)


def build_context(config: ml_collections.ConfigDict, workdir: str, *,
                  reads_prm: bool = True) -> RunContext:
  """Everything a command needs from its config (validated first; `reads_prm` as in validate)."""
  validate(config, reads_prm=reads_prm)
  paths.makedirs(workdir)
  tokenizer = _tokenizer(config)
  model_cfg = _load_model_config(config, tokenizer)
  devices = jax.devices()[:config.mesh.num_devices] if config.mesh.num_devices else None
  mesh = sharding.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp,
                            tensor=config.mesh.tensor, devices=devices)
  try:
    train, evals, screen = split_examples(config, tokenizer)
  except DataFileError as err:  # a config error to the CLI: task.* names the data and the policy
    raise ConfigError(str(err)) from err
  if screen.total and distributed.is_main_process():
    logger.warning(screen.warning())
  if not train:
    raise ConfigError(f"No training examples are left: {screen.warning() or 'the data is empty'}.")
  prompt_len = max(config.task.max_prompt_len, 1)
  r = config.rollout
  sampling_cfg = SamplingConfig(
      max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
      top_k=r.top_k, greedy=r.temperature == 0, eos_id=tokenizer.eos_id,
      pad_id=tokenizer.pad_id, n=r.n, max_prompt_len=prompt_len, compact_rows=r.compact_rows)
  return RunContext(config=config, workdir=workdir, model_cfg=model_cfg, tokenizer=tokenizer,
                    mesh=mesh, train_examples=train, eval_examples=evals,
                    verifier=make_verifier(config), sampling=sampling_cfg, prompt_len=prompt_len,
                    hf_dir=_model_source(config), rules=sharding.check_rules(config.mesh.rules),
                    data_metrics=screen.metrics())


def initial_policy_params(ctx: RunContext):
  """Policy parameters from the configured HF directory, else a seeded random init."""
  if ctx.hf_dir:
    _, params = hf.load_hf(ctx.hf_dir, config=ctx.model_cfg)
    return params
  return init_params(ctx.model_cfg, jax.random.key(ctx.config.seed))
