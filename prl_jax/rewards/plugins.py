"""Reward functions named in the config: `task.reward_fn=path.py:name[,path.py:name...]`.

Two calling conventions are accepted, told apart by the function's parameter names:

- verl's `compute_score(data_source, solution_str, ground_truth, extra_info)`, called once per
  response with the example's data_source (its task when it has none), the response text, its
  reference answer and its extra_info. It returns a float, or a dict whose "score" is the reward
  and whose other numeric entries are logged (`reward/<name>/<key>`, means over the batch).
- TRL's batch reward function `f(completions, **kwargs) -> list[float]` (also `prompts`),
  called once per batch: completions are the response texts (for chat prompts, as TRL passes
  them, [{"role": "assistant", "content": text}] per response) and every other column of the
  data arrives as a keyword argument holding one value per response (the trl layout's columns;
  otherwise the example's answer, solution, question, task and data_source). A None entry means
  "not applicable" and counts 0.

The name `verify` stands for the task's own verifier (`prl_jax.rewards.verify.Verifier`), so a
format reward can be added to the correctness reward: `task.reward_fn=verify,fmt.py:has_box`.
The outcome of a response is sum_i w_i r_i over the functions (weights `task.reward_weights`,
default 1 each), each logged as `reward/<name>`. Plugin rewards are not clamped: a method that
reads the outcome as a probability checks its range (`check_unit_outcome`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

BUILTIN = "verify"
_VERL_NAMES = ("data_source", "solution_str", "ground_truth", "extra_info")
_SCHEMA_COLUMNS = ("answer", "solution", "question", "task", "data_source")


class RewardFnError(ValueError):
  """A reward function that cannot be loaded or called; the message names the config key."""


def load_function(spec: str, key: str) -> Callable:
  """The function `name` of `spec` = "path.py:name" (a file) or "package.module:name" (an
  installed module, e.g. one of verl's reward_score modules, whose relative imports a file
  path would break)."""
  path, sep, name = spec.rpartition(":")
  if not sep or not path or not name.isidentifier():
    raise RewardFnError(f"{key}={spec!r}: expected FILE.py:FUNCTION or MODULE:FUNCTION, e.g. "
                        "rewards.py:compute_score.")
  try:
    module = _module(path)
  except FileNotFoundError:
    raise RewardFnError(f"{key}={spec!r}: no such file {path!r}.") from None
  except Exception as err:
    raise RewardFnError(f"{key}={spec!r}: importing {path} failed: {err!r}.") from err
  fn = getattr(module, name, None)
  if not callable(fn):
    raise RewardFnError(f"{key}={spec!r}: {path} has no function {name!r}.")
  return fn


def _module(path: str):
  """The module of a .py file (FileNotFoundError when there is none) or a dotted module name."""
  if not path.endswith(".py"):
    return importlib.import_module(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(path)
  module_name = "prl_jax_plugin_" + "".join(c if c.isalnum() else "_" for c in path)
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def calling_convention(fn: Callable, spec: str, key: str = "task.reward_fn") -> str:
  """"verl" (per-response compute_score) or "trl" (batch, completions + keyword columns)."""
  params = inspect.signature(fn).parameters
  if all(n in params for n in ("solution_str", "ground_truth")):
    return "verl"
  first = next(iter(params), "")
  if first in ("completions", "prompts") or "completions" in params:
    return "trl"
  raise RewardFnError(
      f"{key}={spec!r}: {getattr(fn, '__name__', fn)}{inspect.signature(fn)} is neither verl's "
      "compute_score(data_source, solution_str, ground_truth, extra_info) nor a TRL reward "
      "function (completions, **kwargs) -> list[float].")


def _verl_kwargs(fn: Callable, text: str, example: Mapping[str, Any]) -> dict[str, Any]:
  """verl's arguments for one response; only those the function declares (or all with **kw)."""
  values = {"data_source": example.get("data_source") or example.get("task", ""),
            "solution_str": text, "ground_truth": example.get("answer"),
            "extra_info": example.get("extra_info") or {}}
  params = inspect.signature(fn).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return values
  return {k: v for k, v in values.items() if k in params}


def _columns(examples: Sequence[Mapping[str, Any]]) -> dict[str, list]:
  """TRL's keyword columns: one value per response for every column of the data."""
  names: list[str] = []
  for ex in examples:
    for name in (ex.get("columns") or {k: None for k in _SCHEMA_COLUMNS if k in ex}):
      if name not in names:
        names.append(name)
  return {name: [(ex.get("columns") or ex).get(name) for ex in examples] for name in names}


def _completion(text: str, example: Mapping[str, Any]) -> Any:
  return [{"role": "assistant", "content": text}] if example.get("chat") else text


@dataclasses.dataclass(frozen=True)
class RewardFn:
  """One reward of the set: its log name, weight, calling convention and function."""

  name: str
  weight: float
  kind: str  # "verl" | "trl" | "verify"
  fn: Callable
  spec: str

  def score(self, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]
            ) -> tuple[np.ndarray, dict[str, float]]:
    """(rewards [B] float64, extra metric means) of this function on the batch."""
    if self.kind == "verify":
      return np.asarray(self.fn(list(texts), list(examples)), np.float64), {}
    if self.kind == "trl":
      out = self.fn(completions=[_completion(t, ex) for t, ex in zip(texts, examples)],
                    prompts=[ex.get("prompt") for ex in examples], **_columns(examples))
      values = list(out) if out is not None else []
      if len(values) != len(texts):
        raise RewardFnError(f"task.reward_fn {self.spec}: returned {len(values)} rewards for "
                            f"{len(texts)} completions; return one float (or None) each.")
      return np.asarray([0.0 if v is None else float(v) for v in values], np.float64), {}
    rewards, extras = np.zeros(len(texts)), {}
    for i, (text, ex) in enumerate(zip(texts, examples)):
      out = self.fn(**_verl_kwargs(self.fn, text, ex))
      if isinstance(out, Mapping):
        if "score" not in out:
          raise RewardFnError(f"task.reward_fn {self.spec}: returned a dict without 'score' "
                              f"(keys {sorted(out)}); verl reads the reward from 'score'.")
        for k, v in out.items():
          if k != "score" and isinstance(v, (int, float, bool)):
            extras.setdefault(k, []).append(float(v))
        out = out["score"]
      rewards[i] = float(out)
    return rewards, {k: float(np.mean(v)) for k, v in extras.items()}


def _weights(text: str, count: int) -> list[float]:
  if not str(text).strip():
    return [1.0] * count
  try:
    weights = [float(w) for w in str(text).split(",")]
  except ValueError:
    raise RewardFnError(f"task.reward_weights={text!r}: comma-separated numbers, one per "
                        "task.reward_fn entry.") from None
  if len(weights) != count:
    raise RewardFnError(f"task.reward_weights={text!r} has {len(weights)} weights for {count} "
                        "task.reward_fn entries; give one per function.")
  return weights


def load_rewards(reward_fn: str, reward_weights: str, verifier: Callable) -> list[RewardFn]:
  """The RewardFn list of `task.reward_fn` / `task.reward_weights`; `verify` is `verifier`."""
  specs = [s.strip() for s in reward_fn.split(",") if s.strip()]
  out, names = [], set()
  for spec, weight in zip(specs, _weights(reward_weights, len(specs))):
    if spec == BUILTIN:
      fn, kind, name = verifier, "verify", BUILTIN
    else:
      fn = load_function(spec, "task.reward_fn")
      kind, name = calling_convention(fn, spec), spec.rpartition(":")[2]
    if name in names:  # two functions of one name: log them by file too
      name = f"{os.path.basename(spec.rpartition(':')[0])}:{name}"
    names.add(name)
    out.append(RewardFn(name, weight, kind, fn, spec))
  return out


class RewardSet:
  """The weighted sum of several rewards, callable like a verifier: (texts, examples) -> [B].

  `score` also returns `reward/<name>` (the mean of each function's unweighted reward) and the
  extra numbers of verl-style dict results. `close` stops the built-in verifier's workers.
  """

  def __init__(self, rewards: Sequence[RewardFn], verifier: Any = None):
    if not rewards:
      raise RewardFnError("task.reward_fn names no function; leave it empty for the verifier.")
    self.rewards, self.verifier = list(rewards), verifier

  def score(self, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]
            ) -> tuple[list[float], dict[str, float]]:
    total, metrics = np.zeros(len(texts)), {}
    for reward in self.rewards:
      values, extras = reward.score(texts, examples)
      total += reward.weight * values
      metrics[f"reward/{reward.name}"] = float(values.mean()) if len(values) else 0.0
      metrics.update({f"reward/{reward.name}/{k}": v for k, v in extras.items()})
    return total.tolist(), metrics

  def __call__(self, texts: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[float]:
    return self.score(texts, examples)[0]

  def close(self) -> None:
    if hasattr(self.verifier, "close"):
      self.verifier.close()


def score_with_metrics(verifier: Callable, texts: Sequence[str],
                       examples: Sequence[Mapping[str, Any]]) -> tuple[list[float], dict]:
  """(rewards, per-reward metrics) of any verifier; a plain verifier has no metrics."""
  if hasattr(verifier, "score"):
    return verifier.score(texts, examples)
  return list(verifier(texts, examples)), {}


def check_unit_outcome(outcome: np.ndarray, method: str) -> None:
  """Raises when an outcome lies outside [0, 1] for a method that reads it as a probability."""
  outcome = np.asarray(outcome, np.float64)
  bad = np.flatnonzero(~((outcome >= 0) & (outcome <= 1)))
  if bad.size:
    value = outcome[bad[0]]
    raise RewardFnError(
        f"method={method} reads the outcome reward as a probability in [0, 1] (PRIME's "
        f"cross-entropy PRM loss, ER-PRM's labels), but response {int(bad[0])} scored "
        f"{value:g} ({bad.size} out of range in this batch). "
        "Rescale task.reward_fn's rewards or task.reward_weights so the weighted sum stays in "
        "[0, 1], or use a method without this need (rloo, grpo, prl, ...).")
