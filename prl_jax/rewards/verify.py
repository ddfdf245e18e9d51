"""Outcome verifiers: turn a response and its example into a reward in [0, 1], outside jit.

Three layers, cheapest first:

1. `extract_answer(text)` pulls the final answer out of a response: the last \\boxed{...}
   (nested braces), else the last "#### N", else the last "The answer is X", else the last number.
2. `math_equal(pred, gold)` compares two answers. Plain numbers (integers, decimals, fractions,
   \\frac, percentages, thousands separators, scientific notation, units) are compared exactly in
   Python; text answers by a normalised string; everything else by math-verify on SymPy. Inputs
   that could make SymPy hang or explode (huge powers, factorials, giant numbers, long or deeply
   nested input) are refused before SymPy sees them.
3. `Verifier` scores a batch with the task's scorer (math answers, or the synthetic tasks' own
   checkers), inline or in a process pool. math-verify's timeouts use SIGALRM, which only works in
   a process's main thread and cannot interrupt long C-level big-integer arithmetic; so the pool
   runs each answer in a worker's main thread and kills the whole pool when an answer overruns its
   deadline, replacing it, so the training loop never hangs.

Every failure (a parse error, a timeout, a crashed worker) scores 0.0: a reward function must not
stop training, and an answer that cannot be checked is not a correct answer.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import multiprocessing
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction
from typing import Any

from prl_jax.data import arithmetic, countdown

# Responses longer than this score 0 without being read (about 100k tokens of text).
MAX_RESPONSE_CHARS = 400_000
# Answers longer than this are compared as strings only, never parsed by SymPy.
MAX_ANSWER_CHARS = 512
_MAX_DIGITS = 300  # a longer digit run is not an answer, and int() refuses > 4300 digits anyway
_MAX_EXPONENT = 10_000  # larger literal exponents build numbers of unbounded size
_MAX_RESULT_DIGITS = 10_000  # the size of a power's value that SymPy may still compute
_MAX_FACTORIAL = 1_000
_MAX_NESTING = 20
_TAIL_CHARS = 2_000  # the "final number" fallback looks at the end of the response only
DEFAULT_TIMEOUT = 5.0

Scorer = Callable[[str, Mapping[str, Any]], float]

# ----------------------------------------------------------------------------- extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?[ \t]*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def _braced_group(text: str, start: int, limit: int = 20_000) -> str | None:
  """Contents of the {...} group opening at text[start], or None if unbalanced within `limit`."""
  depth = 0
  i, end = start, min(len(text), start + limit)
  while i < end:
    ch = text[i]
    if ch == "\\":
      i += 2  # an escaped \{ or \} is a literal brace, not a group delimiter
      continue
    if ch == "{":
      depth += 1
    elif ch == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1 : i]
    i += 1
  return None


def last_boxed(text: str, tries: int = 8) -> str | None:
  """Contents of the last well-formed \\boxed{...} or \\fbox{...}; also "\\boxed 5".

  Only the last few occurrences are tried, so a text full of broken boxes stays linear time.
  """
  end = len(text)
  for _ in range(tries):
    hits = [(text.rfind(cmd, 0, end), cmd) for cmd in _BOX_COMMANDS]
    pos, cmd = max(hits)
    if pos < 0:
      return None
    j = pos + len(cmd)
    while j < len(text) and text[j] == " ":
      j += 1
    if j < len(text) and text[j] == "{":
      content = _braced_group(text, j)
      if content is not None:
        return content
    elif j > pos + len(cmd) and j < len(text):
      m = re.match(r"[^\s$]+", text[j : j + 200])
      if m:
        return m.group(0)
    end = pos
  return None


def _after_marker(text: str, pos: int) -> str:
  """The rest of the line after `pos`, or the next non-empty line when that is empty."""
  line_end = text.find("\n", pos)
  rest = text[pos : line_end if line_end >= 0 else len(text)].strip()
  if not rest and line_end >= 0:
    following = text[line_end + 1 : line_end + 2000].splitlines()
    rest = next((ln.strip() for ln in following if ln.strip()), "")
  return rest


def _clean_answer(answer: str) -> str:
  """Strip sentence punctuation and math delimiters around an extracted answer."""
  answer = answer.strip().rstrip(".").strip()
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
      answer = answer[len(left) : len(answer) - len(right)].strip()
  return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
  """The final answer stated in `text`, or None.

  Priority: the last \\boxed{...} (nested braces allowed), the last "#### N" (GSM8K), the last
  "The answer is X" / "Final answer: X", the last number in the final 2,000 characters.
  Linear in the length of the text.
  """
  if not text:
    return None
  boxed = last_boxed(text)
  if boxed is not None:
    return _clean_answer(boxed) or None
  pos = text.rfind("####")
  if pos >= 0:
    return _clean_answer(_after_marker(text, pos + 4)) or None
  last = None
  for last in _ANSWER_IS_RE.finditer(text):
    pass
  if last is not None:
    answer = _clean_answer(_after_marker(text, last.end()))
    if answer:
      return answer
  numbers = _NUMBER_RE.findall(text[-_TAIL_CHARS:])
  return numbers[-1] if numbers else None


# ----------------------------------------------------------------------------- normalisation

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad\b")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")


def _normalize(s: str) -> str:
  """Remove presentation-only LaTeX so equal answers look alike; keeps the mathematical content."""
  s = s.strip().replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = s.replace("{,}", ",").replace("\\left", "").replace("\\right", "").replace("\\%", "%")
  s = s.replace("\\$", "").replace("$", "")
  s = _SPACING.sub(" ", s)
  s = _DEGREES.sub("", s)
  return s.strip().rstrip(".").strip()


def _text_key(s: str) -> str:
  """A string key for text answers: wrappers removed, case and spacing ignored, "(B)" == "B"."""
  s = _TEXT_WRAPPERS.sub(r"\1", _normalize(s)).lower()
  s = re.sub(r"\s+", "", s)
  m = re.fullmatch(r"\(([a-z])\)", s)
  return m.group(1) if m else s


_INT_PART = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DECIMAL_RE = re.compile(rf"([+-]?)({_INT_PART}(?:\.\d*)?|\.\d+)")
_SCI_RE = re.compile(
  r"([+-]?\d+(?:\.\d+)?)\s*(?:[eE]|\\times\s*10\s*\^|\\cdot\s*10\s*\^|\*\s*10\s*\^)\s*\{?\s*([+-]?\d{1,4})\s*\}?"
)
_SLASH_RE = re.compile(r"([+-]?)(\d+)\s*/\s*(\d+)")
_FRAC_RE = re.compile(r"([+-]?)\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
# A unit is a \text{} group or words of two or more letters after a space ("5 cm", not "5 x").
_UNIT_RE = re.compile(r"^(.*?\d)\s*(?:\\text\s*\{[^{}]*\}|\\mbox\s*\{[^{}]*\}|\s[a-zA-Z]{2,}(?:\s+[a-zA-Z]+)*)$")


def _parse_number(s: str) -> tuple[Fraction, bool, bool] | None:
  """(value, exact, percent) of a plain number, or None for anything else.

  Accepts 12, -3, 1,000, 0.5, .5, 3/4, \\frac{3}{4}, \\frac34, 1.5e3, 1.5\\times10^{3}, 50%,
  and a trailing unit ("5 cm", "5\\text{ cm}") or leading currency sign. `exact` is False for
  decimals, which are then compared to 6 decimal places like math-verify does.
  """
  s = _normalize(s)
  percent = s.endswith("%")
  s = s.rstrip("%").strip()
  m = _UNIT_RE.match(s)
  if m:
    s = m.group(1)
  s = s.replace(" ", "") if re.fullmatch(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s) else s
  if len(s) > _MAX_DIGITS:
    return None
  if m := _SCI_RE.fullmatch(s):
    mantissa, exponent = Fraction(m[1]), int(m[2])
    return mantissa * Fraction(10) ** exponent, "." not in m[1], percent
  if m := _FRAC_RE.fullmatch(s):
    num, den = int(m[2] or m[3]), int(m[4] or m[5])
    return (None if den == 0 else (Fraction(-num if m[1] == "-" else num, den), True, percent))
  if m := _SLASH_RE.fullmatch(s):
    num, den = int(m[2]), int(m[3])
    return (None if den == 0 else (Fraction(-num if m[1] == "-" else num, den), True, percent))
  if m := _DECIMAL_RE.fullmatch(s):
    digits = m[2].replace(",", "")
    value = Fraction(digits.rstrip(".") or "0")
    return (-value if m[1] == "-" else value), "." not in digits, percent
  return None


def _numbers_equal(pred: tuple[Fraction, bool, bool], gold: tuple[Fraction, bool, bool]) -> bool:
  """Exact equality of rationals, to 6 decimals if either is a decimal; "50%" may mean 0.5."""
  (p, p_exact, p_pct), (g, g_exact, g_pct) = pred, gold
  exact = p_exact and g_exact
  for a in {p, p / 100} if p_pct else {p}:
    for b in {g, g / 100} if g_pct else {g}:
      if a == b or (not exact and round(a, 6) == round(b, 6)):
        return True
  return False


# ----------------------------------------------------------------------------- guards

_POWER_CHAIN_RE = re.compile(r"(\d+(?:\.\d+)?)((?:\^-?\d+(?:\.\d+)?)+)")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")


def _nesting_depth(s: str) -> int:
  """Deepest nesting of (), [] and {}; unbalanced closers are ignored."""
  depth = deepest = 0
  for ch in s:
    if ch in "([{":
      depth += 1
      deepest = max(deepest, depth)
    elif ch in ")]}":
      depth = max(0, depth - 1)
  return deepest


def _power_too_big(base: float, exponents: Sequence[float]) -> bool:
  """Whether base^e1^e2^... (right-associative) needs more than _MAX_RESULT_DIGITS digits."""
  value = abs(exponents[-1])
  for b in [base, *exponents[:-1]][::-1]:
    if value > _MAX_EXPONENT:
      return True
    digits = value * math.log10(max(abs(b), 2.0))
    if digits > _MAX_RESULT_DIGITS:
      return True
    value = abs(b) ** value if digits < 300 else math.inf
  return False


def unsafe_for_sympy(answer: str) -> str | None:
  """Why `answer` must not reach SymPy (a reason string), or None if it looks harmless.

  Powers are checked on a flattened copy (braces, parentheses and spaces removed, ** read as ^),
  which only ever over-estimates the size of a power, so the check errs on the side of refusing.
  """
  if len(answer) > MAX_ANSWER_CHARS:
    return f"longer than {MAX_ANSWER_CHARS} characters"
  if re.search(rf"\d{{{_MAX_DIGITS + 1}}}", answer):
    return f"a number with more than {_MAX_DIGITS} digits"
  if _nesting_depth(answer) > _MAX_NESTING:
    return f"nested deeper than {_MAX_NESTING}"
  flat = re.sub(r"[{}()\s]|\\left|\\right", "", answer.replace("**", "^"))
  for m in _POWER_CHAIN_RE.finditer(flat):
    exponents = [float(e) for e in m[2].split("^")[1:]]
    if _power_too_big(float(m[1]), exponents):
      return "a power too large to evaluate"
  if any(int(n) > _MAX_FACTORIAL for n in _FACTORIAL_RE.findall(flat)):
    return "a factorial too large to evaluate"
  return None


# ----------------------------------------------------------------------------- comparison


def _signal_timeout(timeout: float | None) -> int | None:
  """math-verify's SIGALRM timeout in whole seconds, or None off the main thread (it would raise)."""
  if timeout is None or threading.current_thread() is not threading.main_thread():
    return None
  return max(1, int(timeout))


def _sympy_equal(pred: str, gold: str, timeout: float | None) -> bool:
  """math-verify on the two answers wrapped in \\boxed{} so its LaTeX extractor takes them whole."""
  from math_verify import parse, verify  # imported lazily: SymPy takes a second to import

  seconds = _signal_timeout(timeout)
  gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=seconds)
  pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=seconds)
  if not gold_parsed or not pred_parsed:
    return False
  return bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds))


def math_equal(pred: str | None, gold: str | None, *, timeout: float | None = 3.0) -> bool:
  """Whether the answer `pred` equals the reference answer `gold` (answers, not whole responses).

  Plain numbers never reach SymPy; equal text keys ("\\text{Monday}" vs "monday") match at once;
  otherwise math-verify decides (symbolic equality, intervals, tuples, sets, sqrt, pi, ...), with
  its own timeout of `timeout` seconds when called from a main thread. Never raises.
  """
  if pred is None or gold is None:
    return False
  pred, gold = str(pred), str(gold)
  if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
    return pred.strip() == gold.strip()  # no answer is that long; keep every regex linear
  try:
    p, g = _parse_number(pred), _parse_number(gold)
    if p is not None and g is not None:
      return _numbers_equal(p, g)
    pk, gk = _text_key(pred), _text_key(gold)
    if pk and pk == gk:
      return True
    if unsafe_for_sympy(pred) or unsafe_for_sympy(gold):
      return False
    return _sympy_equal(_normalize(pred), _normalize(gold), timeout)
  except ImportError:
    raise  # a missing math-verify is a set-up error, not a wrong answer
  except Exception:  # a verifier must never take the training loop down
    return False


def score_math(response: str, example: Mapping[str, Any] | str, *, timeout: float | None = 3.0) -> float:
  """1.0 iff the answer extracted from `response` equals the example's "answer", else 0.0."""
  gold = example["answer"] if isinstance(example, Mapping) else example
  if len(response) > MAX_RESPONSE_CHARS:
    return 0.0
  return float(math_equal(extract_answer(response), gold, timeout=timeout))


# ----------------------------------------------------------------------------- scorers by task

MATH_TASKS = ("math", "gsm8k", "numina", "eurus2")

SCORERS: dict[str, Scorer] = {
  arithmetic.TASK: arithmetic.check,
  countdown.TASK: countdown.check,
  **{task: score_math for task in MATH_TASKS},
}


def get_scorer(task: str) -> Scorer:
  """The scorer for examples whose "task" field is `task`."""
  try:
    return SCORERS[task]
  except KeyError:
    raise ValueError(f"no verifier for task {task!r}; known tasks are {sorted(SCORERS)}") from None


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


class Verifier:
  """Scores batches of responses against their examples; returns floats in [0, 1].

  workers=0 scores inline in the calling thread (tests, tiny runs): bombs are still refused by
  the input guards and math-verify's own timeouts apply on the main thread. workers>0 uses a
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
    if workers < 0:
      raise ValueError(f"workers must be >= 0 (0 scores inline), got {workers}")
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
    self.workers = workers
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
    if self.workers == 0:
      for i in todo:
        results[i] = _score_job(*jobs[i])
    elif todo:
      for i, value in zip(todo, self._run_pool([jobs[i] for i in todo])):
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
      raise ValueError(f"no verifier for task {task!r}; known tasks are {sorted(self.scorers)}")
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
    needed = "question" if task == countdown.TASK else "answer"
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
