"""A training run SIGKILLed at eight random moments, and once restarted on a corrupt newest
checkpoint, ends exactly where an uninterrupted run ends.

`prl-jax train` (PRIME on a tiny model, a checkpoint every step; the set-up of
tests/test_train_kill.py) runs in a child process, is killed, and is started again with the same
command until it finishes. A seeded RNG picks each moment: about a quarter during start-up (a
random fraction of the time the last life took to log its first step: imports, restore, metrics
truncation, compilation), the rest at random steps spread over the run (sorted, so the run moves
on): up to one step's length after that step's metrics row is written, which lands in its save,
the next step, the next metrics write or between them. Once, before a restart, the
newest checkpoint's data files are truncated as a disk fault would leave them: the run sets that
step aside as `<step>.broken`, resumes from the one before and saves the step again.

The end: the metrics rows (all but the time/* keys) and every array of the final checkpoint equal
the uninterrupted run's, and every line of metrics.jsonl parses, after each kill too.
"""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from test_train_kill import OVERRIDES, _env, _final_state, _start

STEPS = 8
KILLS = 8
CHAOS = {**OVERRIDES, "train.steps": STEPS}
SEED = 20240607


def _child_env(cache_dir):
  """One CPU device; one JAX compilation cache for every life, so a restart compiles little."""
  env = _env()
  env.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
  # Cache every compiled function, not only those over a second: restarts are the cost here.
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  return env


def _finished_steps(workdir):
  checkpoints = os.path.join(workdir, "checkpoints")
  names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
  return sorted(int(name) for name in names if name.isdigit())


def _metrics_lines(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as fh:
    return [line for line in fh if line.strip()]


def _new_row_since(workdir, started, after):
  """True once this life has logged a step past `after`: the file changed after the life's start
  and holds such a row (a stale row of the previous life is dropped at start, not counted)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path) or os.path.getmtime(path) <= started:
    return False
  try:
    return max(json.loads(line)["step"] for line in _metrics_lines(workdir)) > after
  except ValueError:  # Read while the file was being replaced; look again.
    return False


def _step_interval(workdir):
  """Seconds between the saves of consecutive steps of a finished run (a step and its save),
  from the `saved_at` of the checkpoints it kept."""
  steps = _finished_steps(workdir)
  saved_at = []
  for step in steps:
    with open(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata")) as fh:
      saved_at.append(json.load(fh)["saved_at"])
  return (saved_at[-1] - saved_at[0]) / (steps[-1] - steps[0])


def _kill(child, workdir, delay):
  """SIGKILLs the child `delay(child, started, resumed_from)` seconds after it started (the
  `delay` function may wait for the moment it returns: a step logged in this life).

  Returns where the kill landed, or None if the run finished first.
  """
  started = time.time()
  resumed_from = (_finished_steps(workdir) or [0])[-1]
  end = started + delay(child, started, resumed_from)
  while time.time() < end:
    if child.poll() is not None:
      return None
    time.sleep(0.005)
  child.send_signal(signal.SIGKILL)
  child.wait(timeout=60)
  assert child.returncode == -signal.SIGKILL
  return (f"kill {time.time() - started:.1f} s into a life started at step {resumed_from}; "
          f"finished steps then: {_finished_steps(workdir)}")


def _truncate_newest_step(workdir):
  """A disk fault in the newest finished step: its array data files cut to half."""
  step = _finished_steps(workdir)[-1]
  data = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [os.path.join(root, name) for root, _, names in os.walk(data) for name in names
           if os.path.basename(root) == "d" and "ocdbt.process_" in root]
  assert files, f"no array data files under {data}"
  for path in files:
    os.truncate(path, os.path.getsize(path) // 2)
  return step


def _without_timing(rows):
  return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _parse_all(workdir):
  """Every line of metrics.jsonl as a row; fails on a line that does not parse."""
  return [json.loads(line) for line in _metrics_lines(workdir)]


# Slow: ten training processes, ~3-5 min on 2 CPU cores with a warm compilation cache.
@pytest.mark.slow
def test_random_sigkills_and_a_corrupt_checkpoint_change_nothing(tmp_path):
  env = _child_env(str(tmp_path / "jax_cache"))
  chaos, straight = str(tmp_path / "chaos"), str(tmp_path / "straight")
  log = str(tmp_path / "life.log")

  # The uninterrupted run first: its results, and the length of a step (with its save).
  reference = _start(straight, str(tmp_path / "straight.log"), CHAOS, env)
  assert reference.wait(timeout=900) == 0, open(tmp_path / "straight.log").read()[-3000:]
  interval = _step_interval(straight)
  rng = np.random.default_rng(SEED)
  startup = [None]  # Seconds the last "training" life took to log its first step.

  def in_training(child, started, resumed_from):
    target = next(targets)
    for after in (resumed_from, max(target - 1, resumed_from)):
      while not _new_row_since(chaos, started, after):
        if child.poll() is not None:
          return 0.0
        assert time.time() < started + 600, f"step {after + 1} not logged within 600 s"
        time.sleep(0.005)
      startup[0] = startup[0] if after > resumed_from else time.time() - started
    return time.time() - started + rng.uniform(0.0, interval)

  def in_startup(child, started, resumed_from):
    return rng.uniform(0.05, 1.0) * startup[0]

  # The first moment is in training: it measures start-up for the later ones.
  moments = [in_training] + [in_startup if rng.random() < 0.25 else in_training
                             for _ in range(KILLS - 1)]
  targets = iter(np.sort(rng.integers(1, STEPS + 1, size=moments.count(in_training))))
  landed, corrupted = [], None
  for moment in moments:
    child = _start(chaos, log, CHAOS, env)
    where = _kill(child, chaos, moment)
    if where is None:  # The run finished before this moment came.
      assert child.returncode == 0, open(log).read()[-3000:]
      break
    landed.append(f"{moment.__name__[3:]} {where}")
    _parse_all(chaos)  # Whole lines only, even right after a kill.
    if corrupted is None and len(_finished_steps(chaos)) >= 2:
      corrupted = _truncate_newest_step(chaos)
      landed.append(f"truncated the data files of step {corrupted}")
  if corrupted is None:  # Every kill came before two steps were saved: corrupt the end.
    child = _start(chaos, log, CHAOS, env)
    assert child.wait(timeout=900) == 0, open(log).read()[-3000:]
    corrupted = _truncate_newest_step(chaos)
  # The same command until the run is done.
  child = _start(chaos, log, CHAOS, env)
  assert child.wait(timeout=900) == 0, open(log).read()[-3000:]
  print("\n".join(landed))
  assert sum("kill" in w for w in landed) >= KILLS // 2, landed  # The chaos did happen.

  checkpoints = os.listdir(os.path.join(chaos, "checkpoints"))
  assert f"{corrupted}.broken" in checkpoints, checkpoints
  assert _finished_steps(chaos)[-1] == STEPS
  rows = _parse_all(chaos)
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  assert _without_timing(rows) == _without_timing(_parse_all(straight))

  a, b = _final_state(chaos, CHAOS), _final_state(straight, CHAOS)
  assert int(a.step) == int(b.step) == STEPS
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  # Policy, PRM, optimizer moments, reference, step counter and RNG: bit for bit.
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
