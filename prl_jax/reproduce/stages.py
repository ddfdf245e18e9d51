"""The building blocks of `prl-jax reproduce`: resumable stages, config files, equivalent commands.

Every stage leaves a marker WORKDIR/stages/<stage>.json (its wall time, equivalent command and
inputs) when it finishes, and is skipped when its marker holds the same inputs and its outputs
exist, so a killed reproduction restarts where it stopped. Shared by the presets' pipeline
(`prl_jax.reproduce.pipeline`) and the lab's gates (`prl_jax.reproduce.lab`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.progress import say
from prl_jax.reproduce.collect import write_json_atomic
from prl_jax.run import paths


def stage_marker(workdir: str, stage: str) -> str:
  """WORKDIR/stages/<stage>.json (stage names use "/" to nest, e.g. "rl/rloo/seed0/train")."""
  return paths.join(workdir, "stages", stage + ".json")


def read_marker(workdir: str, stage: str) -> dict | None:
  """The finished stage's record, or None when it has not finished."""
  path = stage_marker(workdir, stage)
  if not paths.exists(path):
    return None
  return json.loads(paths.read_text(path))


def run_stage(workdir: str, stage: str, inputs: dict, command: str, fn: Callable[[], object],
              outputs: Sequence[str] = ()) -> dict:
  """Runs `fn` unless the stage already finished with the same `inputs` and its outputs exist.

  Returns the stage record {"stage", "inputs", "command", "seconds", "cached"}; "seconds" is the
  wall time of the run that produced the outputs (also when this call skipped it).
  """
  record = read_marker(workdir, stage)
  if (record is not None and record.get("inputs") == inputs
      and all(paths.exists(paths.join(workdir, p)) for p in outputs)):
    say(f"[reproduce] {stage}: finished earlier ({record['seconds']:.0f}s), skipped")
    return {**record, "cached": True}
  say(f"[reproduce] {stage}: running")
  start = time.perf_counter()
  fn()
  record = {"stage": stage, "inputs": inputs, "command": command,
            "seconds": round(time.perf_counter() - start, 3)}
  write_json_atomic(stage_marker(workdir, stage), record)
  say(f"[reproduce] {stage}: done in {record['seconds']:.0f}s")
  return {**record, "cached": False}


def checkout_configs(name: str) -> str:
  """configs/<name> of the source checkout this package is installed from."""
  checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(checkout, "configs", name)  # this file is prl_jax/reproduce/stages.py


def config_file(configs_dir: str, name: str) -> str:
  """configs_dir/<name>.py, relative to the current directory when it lies below it."""
  path = os.path.join(configs_dir, f"{name}.py")
  relative = os.path.relpath(path)
  path = path if relative.startswith(os.pardir) else relative
  if not os.path.isfile(path):
    raise ConfigError(f"{path!r} does not exist: `reproduce` reads <configs>/<arm>.py from the "
                      f"source checkout (configs/mini, configs/lab); pass --configs DIR pointing "
                      f"at the preset's folder.")
  return path


def load(path: str, overrides: Sequence[str]):
  """The config file with `a.b=value` overrides applied."""
  return apply_overrides(load_config_file(path), list(overrides))


def config_digest(path: str, overrides: Sequence[str]) -> str:
  """The first 16 hex digits of the sha256 of the resolved config, its log.* keys aside."""
  resolved = {k: v for k, v in load(path, overrides).to_dict().items() if k != "log"}
  text = json.dumps(resolved, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_inputs(overrides: Sequence[str], config_path: str | None = None, **more) -> dict:
  """What decides a stage's outputs: its overrides (logging ones aside), `more`, and with
  `config_path` the resolved config's digest, so that editing a config file (or one it imports,
  such as a budget) reruns the stages that read it instead of skipping them."""
  inputs = {"overrides": [o for o in overrides if not o.startswith("log.")], **more}
  if config_path is not None:
    inputs["config"] = config_digest(config_path, overrides)
  return inputs


def logging_overrides(verbose: bool) -> list[str]:
  """TensorBoard files in every run's workdir (as a single `prl-jax train` writes them); per-run
  progress bars only when asked (runs are many and short)."""
  return [f"log.progress={str(verbose).lower()}", "log.tensorboard=true"]


def cli_command(command: str, config: str, workdir: str, overrides: Sequence[str],
                extra: Sequence[str] = ()) -> str:
  """The `prl-jax` command line that runs one stage on its own."""
  args = ["prl-jax", command, "--config", config, "--workdir", workdir, *extra]
  args += [f"--config.{o}" for o in overrides]
  return shlex.join(args)


PARENT_POLL_S = 1.0  # how often a worker checks that the reproduction that started it lives
KILL_AFTER_S = 120.0  # after SIGTERM, the time a worker's run has to save its step and stop
RESULT_GRACE_S = 1.0  # after its call returned, the time a stopping worker gives the result to go
_STOPPING = None  # in a worker: the event its pool sets when the reproduction is interrupted
_IDLE = threading.Event()  # in a worker: set while it runs no call
_IDLE.set()


def _end_with_parent(parent: int, stopping) -> None:
  """A worker's initializer: a daemon thread that ends the worker once `parent` is gone or its
  pool is `stopping`.

  A killed `prl-jax reproduce` would otherwise leave its workers training on into the workdir,
  beside the runs of the command that resumes it. SIGTERM first, so a training run saves the
  step under way and stops (`prl_jax.run.interrupt`), then a hard exit as soon as the call has
  returned (at most KILL_AFTER_S later). Not waiting for the pool to dismiss the worker matters:
  a worker killed while it waited for work holds the pool's queue lock for good, and a worker
  that then wants its next call would wait the whole KILL_AFTER_S (the pool's shutdown with it).
  """
  global _STOPPING
  _STOPPING = stopping

  def watch() -> None:
    while os.getppid() == parent and not stopping.wait(PARENT_POLL_S):
      pass
    os.kill(os.getpid(), signal.SIGTERM)
    if _IDLE.wait(KILL_AFTER_S):
      time.sleep(RESULT_GRACE_S)
    os._exit(1)
  threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _unless_stopping(fn: Callable, *args, **kwargs):
  """fn(*args, **kwargs) in a worker, unless the reproduction was interrupted before this call
  started."""
  if _STOPPING is not None and _STOPPING.is_set():
    raise concurrent.futures.CancelledError("the reproduction was interrupted")
  _IDLE.clear()
  try:
    return fn(*args, **kwargs)
  finally:
    _IDLE.set()


class _WorkerPool(concurrent.futures.ProcessPoolExecutor):
  """A process pool whose queued calls are skipped once the reproduction is stopping."""

  def submit(self, fn, /, *args, **kwargs):
    return super().submit(_unless_stopping, fn, *args, **kwargs)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
  """`workers` fresh processes ("spawn": JAX is not fork-safe once initialised) that end when
  this process does.

  When the body raises (Ctrl-C, which a terminal sends the workers too, or `kill -INT` of this
  process alone), the calls not yet started are dropped and the running ones are stopped (a
  training run saves its step first) before the exception goes on: a plain pool would run every
  queued call before the interpreter could exit.
  """
  context = multiprocessing.get_context("spawn")
  stopping = context.Event()
  pool = _WorkerPool(workers, mp_context=context, initializer=_end_with_parent,
                     initargs=(os.getpid(), stopping))
  try:
    yield pool
  except BaseException:
    stopping.set()
    pool.shutdown(wait=True, cancel_futures=True)
    raise
  pool.shutdown(wait=True)


def in_parallel(fn: Callable, calls: Sequence[tuple], workers: int) -> None:
  """fn(*args) for each args of `calls` in `workers` fresh processes; the first error is raised
  after every call ended (finished stages keep their markers, so a re-run skips them).

  `fn` must be a module-level function (pickled by name).
  """
  with worker_pool(workers) as pool:
    futures = [pool.submit(fn, *args) for args in calls]
    concurrent.futures.wait(futures)  # here, so that an interrupt reaches worker_pool's handler
  errors = [f.exception() for f in futures if f.exception() is not None]
  if errors:
    raise errors[0]
