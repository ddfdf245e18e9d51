"""Checkpoints: round trips, resharding, retention, atomicity under SIGKILL, corrupt directories,
falling back past a corrupt latest step, and failed writes.

Run as a script (`python tests/test_checkpoint.py kill-child DIR MODE`), this file is the child
process that the SIGKILL test kills in the middle of a save.
"""

import gc
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from prl_jax.run.checkpoint import CheckpointError, Checkpointer
from prl_jax.run.checkpoint_tree import abstract_like

# ----------------------------------------------------------------------------------------------
# Helpers.


def small_state(seed=0, sharding=None):
  """A train-state-like pytree: params, an Adam state, a step counter and typed PRNG keys."""
  import optax

  k = jax.random.key(seed)
  params = {
      # Big enough (16 KB) to be stored in its own data file, not inlined in the index.
      "policy": {"w": jax.random.normal(k, (64, 64)), "b": jnp.zeros((64,))},
      "prm": {"w": jax.random.normal(jax.random.fold_in(k, 1), (16, 8))},
      "value": {"w": jnp.full((8,), float(seed))},
  }
  if sharding is not None:
    params = jax.device_put(params, sharding(params))
  opt_state = optax.adam(1e-3).init(params)
  return {
      "params": params,
      "opt_state": opt_state,
      "step": jnp.asarray(seed, jnp.int32),
      "rng": jax.random.key(seed + 100),
      "sample_keys": jax.random.split(jax.random.key(seed + 200), 8),
  }


def assert_trees_equal(a, b):
  a = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, a)
  b = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _is_key(x):
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def listing(directory):
  """Every path under `directory` with its size: to prove nothing was deleted or changed."""
  return {str(p.relative_to(directory)): (p.stat().st_size if p.is_file() else -1)
          for p in Path(directory).rglob("*")}


# ----------------------------------------------------------------------------------------------
# Round trips.


def test_roundtrip_state_meta_and_typed_keys(tmp_path):
  import ml_collections

  state = small_state(3)
  config = ml_collections.ConfigDict({"algo": "prime", "lr": 1e-6, "mesh": (1, 8)})
  meta = {"data": {"epoch": np.int64(1), "index": 17}, "config": config}
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.save(3, state, meta, metrics={"acc": jnp.float32(0.5)})
    restored, restored_meta = ckpt.restore(abstract_like(state))
  assert_trees_equal(restored, state)
  assert restored["rng"].dtype == state["rng"].dtype  # Re-wrapped as a typed key.
  assert restored_meta["data"] == {"epoch": 1, "index": 17}
  assert restored_meta["config"] == {"algo": "prime", "lr": 1e-6, "mesh": [1, 8]}
  assert restored_meta["metrics"] == {"acc": 0.5}
  assert isinstance(restored_meta["saved_at"], float)
  # Keys are stored as plain uint32 key data, readable without knowing the key impl.
  stored = Checkpointer(tmp_path / "ckpt")._manager.item_metadata(3)["state"]
  assert stored.tree["rng"].dtype == np.uint32


def test_restore_into_a_different_mesh_layout(tmp_path):
  """Written sharded over 8 devices on one axis, read back into a 2x4 mesh, transposed."""
  mesh8 = jax.make_mesh((8,), ("data",))
  row_sharded = lambda tree: jax.tree.map(  # noqa: E731
      lambda x: NamedSharding(mesh8, P("data") if x.shape[0] % 8 == 0 else P()), tree)
  state = small_state(1, sharding=row_sharded)
  assert state["params"]["policy"]["w"].sharding.spec == P("data")
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)

    mesh24 = jax.make_mesh((2, 4), ("a", "b"))

    def new_sharding(x):
      if x.ndim == 2:
        return NamedSharding(mesh24, P("b", "a"))
      if x.ndim == 1 and x.shape[0] % 4 == 0:
        return NamedSharding(mesh24, P("b"))
      return NamedSharding(mesh24, P())

    target = abstract_like(state, jax.tree.map(new_sharding, state))
    restored, _ = ckpt.restore(target)
  assert_trees_equal(restored, state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
    assert got.sharding == want.sharding
  assert restored["params"]["policy"]["w"].addressable_shards[0].data.shape == (16, 32)
  assert restored["sample_keys"].sharding.spec == P("b")


def test_restore_casts_to_target_dtype(tmp_path):
  state = {"w": jnp.linspace(0.0, 1.0, 8)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, state)
    target = {"w": jax.ShapeDtypeStruct((8,), jnp.bfloat16, sharding=state["w"].sharding)}
    restored, _ = ckpt.restore(target)
  assert restored["w"].dtype == jnp.bfloat16


def test_missing_workdir_is_created(tmp_path):
  directory = tmp_path / "does" / "not" / "exist"
  with Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(0, {"x": jnp.ones(3)})
  assert (directory / "0").is_dir()


def test_read_only_reader_leaves_a_save_in_progress_alone(tmp_path):
  """An evaluator opening a live run's checkpoints must not delete the run's half-written step."""
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(1, {"x": jnp.ones(3)})
  in_progress = tmp_path / "2.orbax-checkpoint-tmp-1234"
  (in_progress / "state").mkdir(parents=True)
  with Checkpointer(tmp_path, read_only=True) as reader:
    assert reader.latest_step() == 1
    target = abstract_like({"x": jnp.ones(3)}, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    np.testing.assert_array_equal(reader.restore(target)[0]["x"], np.ones(3))
  assert in_progress.is_dir()
  with Checkpointer(tmp_path):  # the run itself, restarting: its leftovers go (in the background)
    deadline = time.time() + 10
    while in_progress.exists() and time.time() < deadline:
      time.sleep(0.05)
  assert not in_progress.exists()


# ----------------------------------------------------------------------------------------------
# Saving policy and retention.


def test_save_interval_force_and_no_overwrite(tmp_path):
  state = {"x": jnp.ones(3)}
  with Checkpointer(tmp_path, save_interval_steps=10, keep=None) as ckpt:
    assert ckpt.save(1, state)  # The first save of a run always happens.
    assert not ckpt.save(5, state)  # Off the interval.
    assert ckpt.save(7, state, force=True)
    assert ckpt.save(10, state)
    assert not ckpt.save(10, {"x": jnp.zeros(3)}, force=True)  # Never overwritten.
    assert ckpt.all_steps() == [1, 7, 10]
    restored, _ = ckpt.restore(abstract_like(state))
  np.testing.assert_array_equal(restored["x"], np.ones(3))


def test_keep_last_n(tmp_path):
  with Checkpointer(tmp_path, keep=2) as ckpt:
    for step in range(1, 6):
      ckpt.save(step, {"x": jnp.full((2,), step)})
    assert ckpt.all_steps() == [4, 5]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_by_metric_kept_beside_last_n(tmp_path, mode):
  """keep=2 newest + 1 best; a missing or NaN metric never counts as best."""
  sign = 1.0 if mode == "max" else -1.0
  values = {1: 0.3, 2: 0.9, 3: 0.1, 4: None, 5: math.nan, 6: 0.2, 7: 0.4}
  with Checkpointer(tmp_path, keep=2, best_metric="acc", best_mode=mode) as ckpt:
    for step, value in values.items():
      metrics = {"loss": 1.0} if value is None else {"acc": sign * value}
      ckpt.save(step, {"x": jnp.full((2,), step)}, metrics=metrics)
    assert ckpt.all_steps() == [2, 6, 7]
    assert ckpt.best_step() == 2
    assert ckpt.latest_step() == 7  # Auto-resume still finds the newest step.
  # A new process sees the same best step (metrics are read back from disk).
  reopened = Checkpointer(tmp_path, keep=2, best_metric="acc", best_mode=mode)
  assert reopened.best_step() == 2
  reopened.close()


def test_orbax_best_fn_alone_can_delete_the_newest_step(tmp_path):
  """Why Checkpointer passes its own preservation policy: with Orbax's `max_to_keep` and
  `best_fn`, only the best N survive, so a run could not resume from its newest step."""
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(
      max_to_keep=2, best_fn=lambda m: m["acc"], best_mode="max",
      enable_async_checkpointing=False)
  with ocp.CheckpointManager(tmp_path, options=options) as manager:
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.1)]:
      manager.save(step, args=ocp.args.StandardSave({"x": jnp.ones(2)}),
                   metrics={"acc": acc})
    assert manager.all_steps() == [1, 2]  # Step 3, the newest, is gone.


# ----------------------------------------------------------------------------------------------
# Atomicity: SIGKILL in the middle of a save.

BIG = 24_000_000  # float32 values in step 2: ~100 MB, long enough to be killed mid-write.


def _kill_child(directory, mode):
  """Child process: save step 1, announce step 2, save a large step 2 (killed during it)."""
  ckpt = Checkpointer(directory, async_save=(mode == "async"))
  ckpt.save(1, {"w": jnp.full((4,), 1.0), "big": jnp.zeros((8,))})
  ckpt.wait()
  big = {"w": jnp.full((4,), 2.0), "big": jax.random.normal(jax.random.key(2), (BIG,))}
  jax.block_until_ready(big)
  print("saving 2", flush=True)
  ckpt.save(2, big)
  ckpt.wait()
  print("saved 2", flush=True)


def _child_env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # One device is enough; the test process's 8 are not needed.
  return env


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkill_mid_save_resumes_from_previous_step(tmp_path, mode):
  child = subprocess.Popen(
      [sys.executable, __file__, "kill-child", str(tmp_path), mode],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_child_env())
  try:
    for line in child.stdout:
      if line.startswith("saving 2"):
        break
    else:
      pytest.fail(f"child exited with {child.wait()} before saving step 2")
    # Kill once the step-2 arrays are being written: the temporary state dir exists.
    deadline = time.time() + 30
    while not list(tmp_path.glob("2.orbax-checkpoint-tmp*/state*")):
      assert child.poll() is None and time.time() < deadline, "save of step 2 never began"
      time.sleep(0.01)
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  assert child.returncode == -signal.SIGKILL
  assert "saved 2" not in child.stdout.read(), "save finished before the kill; raise BIG"
  assert list(tmp_path.glob("2.orbax-checkpoint-tmp*")), "no half-written step 2 to ignore"

  # A fresh process: resumes from step 1 and finishes (step 2 saved, the leftover removed).
  ckpt = Checkpointer(tmp_path)
  assert ckpt.all_steps() == [1]
  target = {"w": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=None),
            "big": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=None)}
  target = abstract_like(target, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  state, _ = ckpt.restore(target)
  np.testing.assert_array_equal(state["w"], np.full(4, 1.0))
  state["w"] = state["w"] + 1.0
  assert ckpt.save(2, state)
  ckpt.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# ----------------------------------------------------------------------------------------------
# Corrupt and mismatching checkpoints.


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


CORRUPTIONS = {
    "array_files_deleted": lambda d: [p.unlink() for p in d.glob("state/ocdbt.process_*/d/*")],
    "array_files_truncated": lambda d: [_truncate(p) for p in d.glob("state/ocdbt.process_*/d/*")],
    "index_truncated": lambda d: [_truncate(p) for p in d.glob("state/d/*")],
    "state_dir_deleted": lambda d: __import__("shutil").rmtree(d / "state"),
    "meta_json_garbled": lambda d: (d / "meta" / "metadata").write_text("{not json"),
}


# Orbax leaves the sibling reads of a failed restore as never-awaited coroutines; collecting
# them (below) inside this test keeps their "exception ignored" reports out of later tests.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_step_fails_fast_with_advice_and_deletes_nothing(tmp_path, corruption):
  state = small_state(0)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)
    ckpt.save(2, small_state(2))
  CORRUPTIONS[corruption](tmp_path / "2")
  before = listing(tmp_path)

  start = time.time()
  ckpt = Checkpointer(tmp_path)  # Opening the directory must not fail or clean anything up.
  with pytest.raises(CheckpointError) as info:
    ckpt.restore(abstract_like(state))
  assert time.time() - start < 10
  message = str(info.value)
  del info
  gc.collect()
  assert str(tmp_path / "2") in message
  assert "step=1" in message and "[1, 2]" in message  # The earlier step to restore.
  assert "2.broken" in message  # How to set the broken step aside.
  assert listing(tmp_path) == before

  # Following the advice works: the earlier step restores, then setting the broken one aside.
  restored, _ = ckpt.restore(abstract_like(state), step=1)
  assert_trees_equal(restored, state)
  (tmp_path / "2").rename(tmp_path / "2.broken")
  assert Checkpointer(tmp_path).latest_step() == 1
  assert (tmp_path / "2.broken").is_dir()


def _three_steps(directory):
  """Steps 1, 2, 3 of `small_state`; returns the state of each."""
  states = {step: small_state(step) for step in (1, 2, 3)}
  with Checkpointer(directory) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state)
  return states


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_resume_falls_back_past_a_corrupt_latest_step_and_saves_it_again(
    tmp_path, corruption, caplog):
  states = _three_steps(tmp_path)
  CORRUPTIONS[corruption](tmp_path / "3")
  broken_files = listing(tmp_path / "3")

  ckpt = Checkpointer(tmp_path)
  with caplog.at_level("WARNING", logger="prl_jax.run.checkpoint"):
    restored, _ = ckpt.restore_latest_good(abstract_like(states[1]))
  gc.collect()
  assert_trees_equal(restored, states[2])
  warning = caplog.text
  assert "step 3" in warning and "Resuming from step 2" in warning
  assert str(tmp_path / "3.broken") in warning
  # The broken step is kept, byte for byte, under a name Orbax ignores.
  assert listing(tmp_path / "3.broken") == broken_files
  assert ckpt.all_steps() == [1, 2]

  # The resumed run reaches step 3 again: its save must not be skipped as "already saved".
  assert ckpt.save(3, small_state(30))
  ckpt.close()
  with Checkpointer(tmp_path) as reopened:
    assert reopened.all_steps() == [1, 2, 3]
    assert_trees_equal(reopened.restore(abstract_like(states[1]))[0], small_state(30))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_fallback_skips_every_broken_step_and_never_overwrites_an_earlier_broken_one(
    tmp_path, caplog):
  states = _three_steps(tmp_path)
  (tmp_path / "3.broken").mkdir()  # Set aside by an earlier fallback.
  CORRUPTIONS["state_dir_deleted"](tmp_path / "3")
  CORRUPTIONS["array_files_truncated"](tmp_path / "2")
  with Checkpointer(tmp_path) as ckpt, caplog.at_level("WARNING"):
    restored, _ = ckpt.restore_latest_good(abstract_like(states[1]))
    assert ckpt.all_steps() == [1]
  gc.collect()
  assert_trees_equal(restored, states[1])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2.broken", "3.broken",
                                                        "3.broken.1"]
  assert "Resuming from step 1" in caplog.text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_fallback_moves_nothing_when_no_step_reads_back(tmp_path):
  states = _three_steps(tmp_path)
  for step in (1, 2, 3):
    CORRUPTIONS["array_files_deleted"](tmp_path / str(step))
  before = listing(tmp_path)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="No finished step .* can be read") as info:
      ckpt.restore_latest_good(abstract_like(states[1]))
  assert all(f"step {step}:" in str(info.value) for step in (1, 2, 3))
  del info
  gc.collect()
  assert listing(tmp_path) == before


def test_fallback_does_not_hide_a_changed_config(tmp_path):
  """A target that does not match is a user error, not corruption: no step is set aside."""
  _three_steps(tmp_path)
  before = listing(tmp_path)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="does not match"):
      ckpt.restore_latest_good(abstract_like({"w": jnp.ones((4, 8))}))
  assert listing(tmp_path) == before


def test_fallback_of_an_empty_directory_says_so(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="No finished checkpoint"):
      ckpt.restore_latest_good({"x": jax.ShapeDtypeStruct((1,), jnp.float32)})


# ----------------------------------------------------------------------------------------------
# Failed writes: disk full, permission denied.


class _FailingCommit:
  """A commit future of a background write that fails after `save` has returned."""

  def __init__(self, writes, error):
    self.writes, self.error = writes, error

  def result(self, timeout=None):
    for write in self.writes:  # Let the real writes end first: no thread outlives the test.
      write.result(timeout)
    raise self.error


def _fail_writes(monkeypatch, error, when):
  """Makes Orbax's array writes raise `error`: at once ("blocking") or in the background
  commit ("background"), as a full disk or a read-only directory does."""
  import orbax.checkpoint as ocp

  real = ocp.StandardCheckpointHandler.async_save

  async def failing(self, directory, *args, **kwargs):
    if when == "blocking":
      raise error
    return [_FailingCommit(await real(self, directory, *args, **kwargs), error)]

  monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", failing)


WRITE_FAILURES = {
    "disk_full": OSError(28, "No space left on device"),
    "permission_denied": PermissionError(13, "Permission denied"),
}


@pytest.mark.parametrize("failure", sorted(WRITE_FAILURES))
@pytest.mark.parametrize("mode,when", [("sync", "blocking"), ("async", "blocking"),
                                       ("async", "background")])
def test_failed_save_says_where_and_why_and_keeps_the_previous_step(
    tmp_path, monkeypatch, failure, mode, when):
  error = WRITE_FAILURES[failure]
  # keep=1: retention would delete step 1 once step 2 is finished; it must not when 2 fails.
  ckpt = Checkpointer(tmp_path, keep=1, async_save=(mode == "async"))
  ckpt.save(1, small_state(1))
  ckpt.wait()
  before = listing(tmp_path / "1")

  _fail_writes(monkeypatch, error, when)
  with pytest.raises(CheckpointError) as info:
    ckpt.save(2, small_state(2))
    ckpt.wait()  # A background failure surfaces here.
  message = str(info.value)
  assert str(tmp_path) in message and error.strerror in message  # Where and why.
  assert "[1]" in message and "resumes from step 1" in message
  if when == "blocking":
    assert "step 2" in message
  # One short error, not Orbax's and TensorStore's frames under it.
  assert info.value.__cause__ is None and info.value.__suppress_context__
  del info
  monkeypatch.undo()
  ckpt.close()  # Does not raise the reported failure again.

  assert listing(tmp_path / "1") == before
  with Checkpointer(tmp_path) as reopened:  # What a rerun sees.
    assert reopened.all_steps() == [1]
    assert_trees_equal(reopened.restore(abstract_like(small_state(1)))[0], small_state(1))


def test_structure_mismatch_says_config_changed(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {"w": jnp.ones((4, 4))})
    bigger = abstract_like({"w": jnp.ones((4, 8))})
    with pytest.raises(CheckpointError, match="config"):
      ckpt.restore(bigger)
    extra = abstract_like({"w": jnp.ones((4, 4)), "v": jnp.ones(2)})
    with pytest.raises(CheckpointError, match="does not match"):
      ckpt.restore(extra)


def test_empty_directory_and_unknown_step(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="No finished checkpoint"):
      ckpt.restore({"x": jax.ShapeDtypeStruct((1,), jnp.float32)})
    ckpt.save(4, {"x": jnp.ones(1)})
    with pytest.raises(CheckpointError, match=r"available steps: \[4\]"):
      ckpt.restore(abstract_like({"x": jnp.ones(1)}), step=3)


def test_meta_must_be_json(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match=r"meta\['data'\]\['it'\]"):
      ckpt.save(1, {"x": jnp.ones(1)}, {"data": {"it": object()}})
    assert ckpt.all_steps() == []


if __name__ == "__main__":
  if sys.argv[1:2] == ["kill-child"]:
    _kill_child(sys.argv[2], sys.argv[3])
  else:
    sys.exit(f"usage: {sys.argv[0]} kill-child DIR sync|async")
