"""A training run killed with SIGKILL in the middle of a checkpoint save resumes from the previous
complete checkpoint and finishes with exactly what an uninterrupted run ends with.

`prl-jax train` (PRIME on a tiny model, a checkpoint every step) runs in a child process; the test
watches the checkpoint directory and kills the child as soon as Orbax's temporary directory of a
step >= 2 appears, i.e. while that step is being written. The same command is then started again.
tests/test_checkpoint.py proves the same for the `Checkpointer` alone; this is the whole loop:
restore, data position, metrics history and the remaining steps. The metrics file's own part
(whole lines only, a torn last line dropped at resume) is tested here too, without a child process;
tests/test_train_chaos.py kills a run at many random moments.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import apply_overrides, load_config_file
from prl_jax.run.checkpoint import Checkpointer
from prl_jax.run.state import init_state
from prl_jax.run.metrics_file import MetricsWriter, read_metrics
from prl_jax.run.context import build_context

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG = os.path.join(ROOT, "configs", "mini", "prime.py")
STEPS = 6
OVERRIDES = {
    "model.preset": "tiny", "rollout.prompts_per_step": 4, "rollout.n": 4,
    "rollout.max_new_tokens": 12, "train.mini_batch_size": 8, "task.num_train": 32,
    "task.num_eval": 4, "train.steps": STEPS, "checkpoint.every": 1, "checkpoint.keep": 3,
    "mesh.num_devices": 1, "log.progress": False, "log.tensorboard": False,
}
TMP_STEP = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")


def _command(workdir, overrides=OVERRIDES):
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  return [sys.executable, "-m", "prl_jax.cli", "train", "--config", CONFIG, "--workdir", workdir,
          *flags]


def _env():
  # One CPU device, as a user's run has; the test process's 8 simulated devices are not needed.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return env


def _start(workdir, log, overrides=OVERRIDES, env=None):
  """`prl-jax train` in a child process, its stderr to the file `log`."""
  with open(log, "w") as err:
    return subprocess.Popen(_command(workdir, overrides), env=env or _env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err)


def _finish(child, log):
  child.wait(timeout=600)
  assert child.returncode == 0, open(log).read()[-3000:]


def _steps_being_saved(checkpoints):
  names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
  return [int(m[1]) for m in map(TMP_STEP.match, names) if m]


def _start_and_kill(workdir, log):
  """Starts the run and SIGKILLs it as soon as a step >= 2 is being written; returns that step."""
  checkpoints = os.path.join(workdir, "checkpoints")
  child = _start(workdir, log)
  try:
    deadline = time.monotonic() + 300
    while True:
      saving = [s for s in _steps_being_saved(checkpoints) if s >= 2]
      if saving:
        child.send_signal(signal.SIGKILL)
        break
      if child.poll() is not None:
        pytest.fail(f"the run ended (exit {child.returncode}) before it was caught saving a step "
                    f">= 2:\n{open(log).read()[-3000:]}")
      assert time.monotonic() < deadline, "no checkpoint save began within 300 s"
      time.sleep(0.002)
    child.wait(timeout=60)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  assert child.returncode == -signal.SIGKILL
  return max(saving)


def _kill_mid_save(workdir, log, attempts=3):
  """A save of a step >= 2 interrupted by SIGKILL; returns the half-written step.

  A save lasts ~0.2 s and the kill follows its discovery within milliseconds, but should the
  rename that completes the step win that race, the same command is run and killed again: it
  resumes from the completed step and is caught in a later save.
  """
  for _ in range(attempts):
    step = _start_and_kill(workdir, log)
    if step in _steps_being_saved(os.path.join(workdir, "checkpoints")):
      return step
  pytest.fail(f"{attempts} kills all landed after the save had finished")


def _final_state(workdir, overrides=OVERRIDES):
  config = apply_overrides(load_config_file(CONFIG), [f"{k}={v}" for k, v in overrides.items()])
  ctx = build_context(config, workdir)
  target = ctx.abstract(init_state(ctx, get_recipe(config.method)))
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return ckpt.restore(target)[0]


# Slow: three training processes, ~40 s with a warm JAX compilation cache and ~2 min without.
@pytest.mark.slow
def test_sigkill_mid_save_resumes_and_matches_uninterrupted_run(tmp_path):
  killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
  checkpoints = os.path.join(killed, "checkpoints")

  # The uninterrupted run goes alongside (two processes share the CPU; neither waits idle).
  reference_run = _start(straight, str(tmp_path / "straight.log"))
  half_written = _kill_mid_save(killed, str(tmp_path / "killed.log"))
  print(f"killed while step {half_written} was being saved")
  left = os.listdir(checkpoints)
  complete = sorted(int(name) for name in left if name.isdigit())
  # The step being written is only a temporary directory; the one before it is complete.
  assert half_written not in complete and complete[-1] == half_written - 1, left
  rows_before = read_metrics(os.path.join(killed, "metrics.jsonl"))
  # The loop logs a step before saving it: the history runs one step past the last checkpoint.
  assert [r["step"] for r in rows_before] == list(range(1, half_written + 1))

  # The same command again: it must resume, not start over.
  _finish(_start(killed, str(tmp_path / "resumed.log")), str(tmp_path / "resumed.log"))
  _finish(reference_run, str(tmp_path / "straight.log"))

  assert sorted(os.listdir(checkpoints)) == [str(s) for s in range(STEPS - 2, STEPS + 1)]
  rows = read_metrics(os.path.join(killed, "metrics.jsonl"))
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  # Steps up to the restored checkpoint were not run again: their rows, wall-clock timings
  # included, are the killed process's own; the logged-but-unsaved step was dropped and rerun.
  assert rows[:half_written - 1] == rows_before[:half_written - 1]
  reference = read_metrics(os.path.join(straight, "metrics.jsonl"))

  def without_timing(rs):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "rollout/tokens"))}
            for r in rs]

  assert without_timing(rows) == without_timing(reference)

  a, b = _final_state(killed), _final_state(straight)
  assert int(a.step) == int(b.step) == STEPS
  for name in ("policy", "prm"):
    leaves = jax.tree_util.tree_leaves(getattr(a, name).params)
    assert leaves, name
    for x, y in zip(leaves, jax.tree_util.tree_leaves(getattr(b, name).params)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
  # Everything else too: optimizer moments, old policy, reference, step counter.
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------------------------
# metrics.jsonl: whole lines for every reader, a torn last line dropped at resume.


def _rows(count, start=1):
  return [json.dumps({"step": s, "loss": 0.5 * s}, sort_keys=True) + "\n"
          for s in range(start, start + count)]


def test_each_metrics_line_is_one_write_then_fsync(tmp_path, monkeypatch):
  """A killed writer leaves a whole row or none: the row (and its newline) goes to the file in
  one write, fsynced before `write` returns. A buffered file splits a long row over writes."""
  events = []
  real_write, real_fsync = os.write, os.fsync
  monkeypatch.setattr(os, "write", lambda fd, data: events.append(("write", fd, bytes(data)))
                      or real_write(fd, data))
  monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", fd)) or real_fsync(fd))
  writer = MetricsWriter(str(tmp_path), tensorboard=False, progress=False)
  metrics = {f"metric/{i:05d}": 0.1 * i for i in range(4000)}  # ~100 KB: many buffers long
  writer.write(1, metrics)
  writer.write(2, metrics)
  writer.close()
  monkeypatch.undo()
  ours = [e for e in events if e[0] == "fsync" or b'"step": ' in e[2]]
  assert [e[0] for e in ours] == ["write", "fsync"] * 2
  assert ours[0][2] == (json.dumps({"step": 1, **metrics}, sort_keys=True) + "\n").encode()
  assert ours[1][1] == ours[0][1]  # The file just written is the one fsynced.
  assert [r["step"] for r in read_metrics(writer.path)] == [1, 2]


def test_resume_drops_a_torn_last_line_and_later_steps(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  torn = _rows(1, start=5)[0][:15]  # A kill in the middle of the row of step 5.
  path.write_text("".join(_rows(4)) + torn)
  with caplog.at_level("WARNING", logger="prl_jax.run.metrics_file"):
    writer = MetricsWriter(str(tmp_path), tensorboard=False, progress=False, resume_step=3)
  assert "line(s) [5]" in caplog.text
  writer.write(4, {"loss": 2.0})
  writer.close()
  lines = path.read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # Every line parses.
  assert json.loads(lines[-1])["loss"] == 2.0


def test_a_complete_last_row_without_its_newline_is_kept_and_ended(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(_rows(3)).rstrip("\n"))
  MetricsWriter(str(tmp_path), tensorboard=False, progress=False, resume_step=3).write(4, {})
  assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3, 4]


class _Killed(BaseException):
  """Stands for SIGKILL: nothing after the point where it is raised runs."""


def test_truncation_is_atomic(tmp_path, monkeypatch):
  """Killed while truncating, the file holds the old rows, not a prefix of the new ones."""
  path = tmp_path / "metrics.jsonl"
  original = "".join(_rows(6))
  path.write_text(original)

  def killed(*args):
    raise _Killed

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(_Killed):
    MetricsWriter(str(tmp_path), tensorboard=False, progress=False, resume_step=2)
  assert path.read_text() == original
  monkeypatch.undo()
  MetricsWriter(str(tmp_path), tensorboard=False, progress=False, resume_step=2)
  assert path.read_text() == "".join(_rows(2))
