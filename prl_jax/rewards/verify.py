"""Outcome verifiers: turn a response and its example into a reward in [0, 1], outside jit.

`Verifier` scores a batch with the task's scorer (math answers through
`prl_jax.rewards.math_answer.score_math`, or the synthetic tasks' own checkers), inline or in a
process pool. math-verify's timeouts use SIGALRM, which only works in a process's main thread and
cannot interrupt long C-level big-integer arithmetic; so the pool runs each answer in a worker's
main thread and kills the whole pool when an answer overruns its deadline, replacing it, so the
training loop never hangs.

Every failure (a parse error, a timeout, a crashed worker) scores 0.0: a reward function must not
stop training, and an answer that cannot be checked is not a correct answer.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from prl_jax.data import arithmetic, countdown, register
from prl_jax.rewards.math_answer import MAX_RESPONSE_CHARS, math_equal, score_math

DEFAULT_TIMEOUT = 5.0
AUTO = -1  # workers=AUTO: a pool for the math tasks (their answers reach SymPy), inline otherwise

Scorer = Callable[[str, Mapping[str, Any]], float]


# ----------------------------------------------------------------------------- scorers by task

MATH_TASKS = ("math", "gsm8k", "numina", "eurus2")

SCORERS: dict[str, Scorer] = {
  arithmetic.TASK: arithmetic.check,
  countdown.TASK: countdown.check,
  register.TASK: register.check,
  **{task: score_math for task in MATH_TASKS},
}


def _score_job(scorer: Scorer, response: str, example: Mapping[str, Any]) -> float:
  """Run one scorer, mapping every failure to 0.0 and clamping the result into [0, 1]."""
  try:
    value = float(scorer(response, example))
  except Exception:
    return 0.0
  return min(1.0, max(0.0, value)) if value == value else 0.0


_WARMUP_PAIRS = (("\\frac{1}{2}", "x+1"), ("(1,2)", "(2,1)"), ("[0,1)", "\\{0,1\\}"), ("x=5", "\\sqrt{2}\\pi"))


def _init_worker(memory_limit_mb: int | None) -> None:
  """Worker start-up: optional address-space cap, ignore Ctrl-C (the parent handles it), warm imports."""
  import signal

  import math_verify  # noqa: F401  (fail here, loudly, if it is missing)

  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if memory_limit_mb:
    import resource

    limit = memory_limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  # SymPy imports much of itself lazily on first use (sets, intervals, relations): exercise those
  # paths once here so that the first real answers do not spend their deadline importing.
  for pred, gold in _WARMUP_PAIRS:
    math_equal(pred, gold)


def _worker_pid() -> int:
  """Warm-up task: proves a worker has started and finished its initializer."""
  return os.getpid()


# ----------------------------------------------------------------------------- the verifier


def _auto_workers() -> int:
  """Pool size of workers=AUTO: half the CPUs, between 1 and 4 (answers take ~10 ms each)."""
  return max(1, min(4, (os.cpu_count() or 2) // 2))


class Verifier:
  """Scores batches of responses against their examples; returns floats in [0, 1].

  workers=0 scores inline in the calling thread (tests, tiny runs): bombs are still refused by
  the input guards (which alone bound every answer's time off the main thread, where
  math-verify's SIGALRM timeouts cannot run). workers=AUTO (-1, the training default) pools
  the math tasks on `_auto_workers()` processes and scores the synthetic tasks, whose checkers
  are plain Python, inline. workers>0 uses a
  process pool ("forkserver" by default: forking a process that runs JAX is unsafe) in which
  each answer has `timeout` seconds; an answer that overruns scores 0.0 and the pool is killed
  and replaced (the other in-flight answers are re-run). A pool whose worker dies (e.g. killed
  by the OS for memory) is replaced too, and every answer that was in flight is retried once,
  alone: only an answer whose worker dies while it runs by itself scores 0.0, so an answer never
  pays for a crash that another one caused, whatever the timing.

  Use as a context manager, or call `close()`, to stop the workers.
  """

  def __init__(
    self,
    workers: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    start_method: str | None = None,
    max_response_chars: int = MAX_RESPONSE_CHARS,
    startup_timeout: float = 120.0,
    memory_limit_mb: int | None = None,
    scorers: Mapping[str, Scorer] | None = None,
  ):
    if workers < AUTO:
      raise ValueError(f"workers must be >= 0 (0 scores inline) or -1 (a pool for math tasks), got {workers}")
    if not timeout > 0:
      raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    methods = multiprocessing.get_all_start_methods()
    start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
    if start_method not in ("forkserver", "spawn") or start_method not in methods:
      raise ValueError(
        f"start_method must be 'forkserver' or 'spawn' (available: {methods}), got {start_method!r}"
      )
    if importlib.util.find_spec("math_verify") is None:
      raise ImportError("the math verifier needs math-verify: pip install 'math-verify==0.9.0'")
    self.auto = workers == AUTO
    self.workers = _auto_workers() if self.auto else workers
    self.timeout = float(timeout)
    self.start_method = start_method
    self.max_response_chars = max_response_chars
    self.startup_timeout = startup_timeout
    self.memory_limit_mb = memory_limit_mb
    self.scorers = {**SCORERS, **(scorers or {})}
    # math-verify's internal timeouts fire first for slow-but-Python-level work, which is
    # cheaper than killing the pool; each answer makes up to three such calls.
    self._inner_timeout = max(1.0, self.timeout / 3)
    self._pool: ProcessPoolExecutor | None = None
    self.restarts = 0  # how often the pool was replaced; worth logging as a metric

  # -- public -------------------------------------------------------------------------------

  def __call__(
    self, responses: Sequence[str], examples: Sequence[Mapping[str, Any] | str]
  ) -> list[float]:
    """Reward of each response against its example (a task dict, or a bare math answer)."""
    if len(responses) != len(examples):
      raise ValueError(
        f"got {len(responses)} responses but {len(examples)} examples; pass one example per response"
      )
    jobs = [self._job(r, e) for r, e in zip(responses, examples)]
    results = [0.0] * len(jobs)
    todo = [i for i, job in enumerate(jobs) if job is not None]
    pooled = [i for i in todo if self.workers and (not self.auto or jobs[i][2].get("task", "math") in MATH_TASKS)]
    for i in sorted(set(todo) - set(pooled)):
      results[i] = _score_job(*jobs[i])
    if pooled:
      for i, value in zip(pooled, self._run_pool([jobs[i] for i in pooled])):
        results[i] = value
    return results

  def close(self) -> None:
    """Stop the worker processes (the verifier restarts them if called again)."""
    if self._pool is not None:
      self._kill_pool()

  def __enter__(self) -> Verifier:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()

  # -- jobs ---------------------------------------------------------------------------------

  def _scorer(self, task: str) -> Scorer:
    """The task's scorer, with the math scorer's internal timeout bound in (picklable)."""
    if task not in self.scorers:
      raise ValueError(f"no verifier for task {task!r}; known tasks are {sorted(self.scorers)}. "
                       "Score it with your own function: task.reward_fn=path.py:name "
                       "(docs/data_and_rewards.md).")
    scorer = self.scorers[task]
    return functools.partial(score_math, timeout=self._inner_timeout) if scorer is score_math else scorer

  def _job(self, response: str, example: Mapping[str, Any] | str) -> tuple | None:
    """(scorer, response, small example) to run, or None when the response scores 0 unread."""
    if isinstance(example, Mapping):
      task = example.get("task", "math")
      slim = {k: example[k] for k in ("task", "answer", "question") if k in example}
    else:
      task, slim = "math", {"task": "math", "answer": str(example)}
    scorer = self._scorer(task)  # resolved first so that an unknown task always raises
    needed = "question" if task in (countdown.TASK, register.TASK) else "answer"
    if needed not in slim:
      raise ValueError(
        f"a {task!r} example needs a {needed!r} field to be verified; got keys {sorted(slim)}"
      )
    if not isinstance(response, str) or len(response) > self.max_response_chars:
      return None
    return scorer, response, slim

  # -- pool ---------------------------------------------------------------------------------

  def _start_pool(self) -> None:
    """Start the workers and wait until each has imported what it needs."""
    self._pool = ProcessPoolExecutor(
      max_workers=self.workers,
      mp_context=multiprocessing.get_context(self.start_method),
      initializer=_init_worker,
      initargs=(self.memory_limit_mb,),
    )
    # Each submit on an idle pool starts one more worker, so `workers` warm-up tasks start all.
    warmup = [self._pool.submit(_worker_pid) for _ in range(self.workers)]
    done, not_done = wait(warmup, timeout=self.startup_timeout)
    errors = [f.exception() for f in done if f.exception() is not None]
    if not_done or errors:
      self._kill_pool()
      cause = f"they failed with {errors[0]!r}" if errors else f"none started within {self.startup_timeout}s"
      raise RuntimeError(
        f"verifier workers could not start: {cause}. Check that math-verify is installed and that "
        "the main module is import-safe (entry point under `if __name__ == '__main__':`)"
      ) from (errors[0] if errors else None)

  def _kill_pool(self) -> None:
    """Kill every worker at once: a worker stuck in C code cannot be interrupted any other way.

    ProcessPoolExecutor has no public handle on its processes, hence `_processes`.
    """
    pool, self._pool = self._pool, None
    if pool is None:
      return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
      p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
      p.join(timeout=5)

  def _restart_pool(self) -> None:
    """Replace the pool after a timeout or a crash."""
    self._kill_pool()
    self.restarts += 1
    self._start_pool()

  def _submit(self, job: tuple) -> Future:
    """Submit one job, replacing the pool if it broke between batches."""
    if self._pool is None:
      self._start_pool()
    try:
      return self._pool.submit(_score_job, *job)
    except BrokenProcessPool:
      self._restart_pool()
      return self._pool.submit(_score_job, *job)

  def _run_pool(self, jobs: Sequence[tuple]) -> list[float]:
    """Score jobs in the pool; on any interruption kill it so no worker outlives the call."""
    try:
      return self._schedule(jobs)
    except BaseException:
      self._kill_pool()
      raise

  def _schedule(self, jobs: Sequence[tuple]) -> list[float]:
    """Score jobs with at most `workers` in flight, so a job starts when it is submitted and
    its deadline can be measured from then.

    A dead worker breaks the whole pool, failing every job in flight, and which job killed it
    cannot be told apart from the ones that merely shared the pool (nor, under load, from one
    that had finished but whose result was not yet collected). So every job in flight at a crash
    is run again by itself before anything else; a crash of a job running alone is its own.
    """
    results = [0.0] * len(jobs)
    queue = deque(range(len(jobs)))
    suspects: deque[int] = deque()  # in flight when the pool broke: rerun one at a time
    running: dict[Future, tuple[int, float]] = {}
    alone = False  # whether the job in flight runs by itself (its crash is then its own)
    while queue or suspects or running:
      if not running:
        alone = bool(suspects)
      source, limit = (suspects, 1) if alone else (queue, self.workers)
      while source and len(running) < limit:
        i = source.popleft()
        future = self._submit(jobs[i])  # may (re)start the pool: take the time after it
        running[future] = (i, time.monotonic())
      oldest = min(start for _, start in running.values())
      until_deadline = max(0.0, oldest + self.timeout - time.monotonic())
      done, _ = wait(running, timeout=until_deadline, return_when=FIRST_COMPLETED)
      broken = False
      for fut in done:
        i, _ = running.pop(fut)
        try:
          results[i] = fut.result()
        except BrokenProcessPool:
          broken = True
          if not alone:
            suspects.append(i)  # alone, it broke the pool itself: its result stays 0.0
      now = time.monotonic()
      expired = [f for f, (_, start) in running.items() if now - start >= self.timeout]
      for f in expired:
        running.pop(f)  # its result stays 0.0
      if expired or broken:
        # Killing the pool kills the other in-flight jobs too: after a crash they are suspects
        # like the failed ones; after a timeout they simply run again.
        for i, _ in running.values():
          if broken:
            suspects.append(i)
          else:
            queue.appendleft(i)
        running.clear()
        self._restart_pool()
    return results
