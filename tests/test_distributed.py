"""Multi-host: two processes through jax.distributed give the same losses as one process.

Two processes with 2 CPU devices each (started by launch/local_multihost.sh) and one process
with 4 devices run the same command; every process prints `LOSS <step> <value>` lines and the
losses must agree. Two commands are checked: the small sharded MLP below (`WORKER`) and the real
training loop (`TRAIN`: a few steps of PRIME, compared through the metrics it logs).

Run as a script (`python tests/test_distributed.py worker`), this file is that small worker.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local_multihost.sh"
WORKER = [sys.executable, str(Path(__file__).resolve()), "worker"]  # + [checkpoint dir]
TIMEOUT_S = 240

STEPS = 5
GLOBAL_BATCH = 16
D_IN, D_HIDDEN = 8, 16


# ----------------------------------------------------------------------------------------------
# Running a command as one process or as several.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env() -> dict:
  """The caller's environment minus this test process's 8-device XLA flag."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  for name in ("PRL_JAX_COORDINATOR", "PRL_JAX_NUM_PROCESSES", "PRL_JAX_PROCESS_ID"):
    env.pop(name, None)
  return env


def run_multihost(command, num_processes, devices_per_process):
  """Runs `command` as `num_processes` jax.distributed processes; returns {index: output}."""
  launcher = ["bash", str(LAUNCHER), "-n", str(num_processes), "-d", str(devices_per_process),
              "-p", str(_free_port()), "-t", str(TIMEOUT_S - 20), "--", *command]
  result = subprocess.run(launcher, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  assert result.returncode == 0, f"multi-process run failed:\n{result.stdout}\n{result.stderr}"
  outputs = {i: [] for i in range(num_processes)}
  for line in result.stdout.splitlines():
    match = re.match(r"\[p(\d+)\] (.*)", line)
    if match:
      outputs[int(match.group(1))].append(match.group(2))
  return {i: "\n".join(lines) for i, lines in outputs.items()}


def run_single(command, devices):
  """Runs `command` as one process with `devices` CPU devices; returns its output."""
  env = _env()
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  assert result.returncode == 0, f"single-process run failed:\n{result.stdout}\n{result.stderr}"
  return result.stdout


def parse_losses(output):
  """`LOSS <step> <value>` lines -> list of losses in step order."""
  pairs = sorted((int(s), float(v)) for s, v in re.findall(r"^LOSS (\d+) (\S+)$", output, re.M))
  return [v for _, v in pairs]


# ----------------------------------------------------------------------------------------------
# The test.


def test_two_processes_match_one_process(tmp_path):
  multi = run_multihost(WORKER + [str(tmp_path / "multi")], num_processes=2,
                        devices_per_process=2)
  single = run_single(WORKER + [str(tmp_path / "single")], devices=4)
  assert "processes=2 devices=4" in multi[0] and "processes=1 devices=4" in single
  expected = parse_losses(single)
  assert len(expected) == STEPS and len(set(expected)) == STEPS  # A new batch every step.
  for index, output in multi.items():
    np.testing.assert_allclose(parse_losses(output), expected, rtol=1e-6, atol=1e-7,
                               err_msg=f"process {index}")
    # The checkpoint both processes wrote together reads back equal to what they hold.
    assert re.search(r"^CHECKPOINT ok", output, re.M), output
  assert (tmp_path / "multi" / str(STEPS)).is_dir()


LR = 1e-4  # The policy's learning rate: one Adam step moves a weight by about this much.
# The real training loop: a few PRIME steps, FSDP within each host, data parallel across hosts.
TRAIN = [sys.executable, "-c", "import sys; from prl_jax.cli import main; sys.exit(main())",
         "train", "--config", str(REPO / "configs" / "mini" / "prime.py"),
         "--config.train.steps=3", "--config.rollout.prompts_per_step=8", "--config.rollout.n=4",
         "--config.train.mini_batch_size=16", "--config.mesh.data=2", "--config.mesh.fsdp=2",
         "--config.filter.enable=False", "--config.eval.every=3", "--config.eval.num_problems=8",
         "--config.eval.n=2", "--config.checkpoint.save_hf=True", "--config.log.progress=False",
         "--config.log.tensorboard=False", f"--config.optim.lr={LR}"]
COMPARED = ("prm/loss", "prm/grad_norm", "policy/loss", "policy/grad_norm", "policy/approx_kl",
            "rollout/tokens", "eval/mean@2", "eval/greedy")


@pytest.mark.slow  # three processes compile PRIME (about 3 min on 2 cores); the worker test above is fast
def test_prime_training_two_processes_match_one_process(tmp_path):
  """`prl-jax train` as 2 processes x 2 devices logs what 1 process x 4 devices logs."""
  import safetensors.numpy

  from prl_jax.run.metrics_file import read_metrics

  run_multihost(TRAIN + ["--workdir", str(tmp_path / "multi")], num_processes=2,
                devices_per_process=2)
  run_single(TRAIN + ["--workdir", str(tmp_path / "single")], devices=4)
  multi = read_metrics(str(tmp_path / "multi" / "metrics.jsonl"))
  single = read_metrics(str(tmp_path / "single" / "metrics.jsonl"))
  assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 3]
  assert single[-1]["policy/loss"] != 0.0  # the PRM's process rewards moved the policy
  for got, want in zip(multi, single):
    for key in COMPARED:
      if key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7,
                                   err_msg=f"{key} at step {want['step']}")
  assert (tmp_path / "multi" / "checkpoints" / "3").is_dir()
  # The final policy, gathered from both hosts and written once, equals the single-process one.
  weights = [safetensors.numpy.load_file(str(tmp_path / run / "final_hf" / "model.safetensors"))
             for run in ("multi", "single")]
  assert weights[0].keys() == weights[1].keys()
  # Cross-process all-reduces sum in another order (float32 rounding, ~1e-7 relative), and Adam
  # divides each gradient by its own running size: where a gradient entry is near zero that
  # rounding decides a part of the step (1.03e-5 seen for one weight of 8192 on an AMD EPYC).
  # So the bound is relative to one Adam step (LR), which no weight may move apart by, and the
  # disagreement must stay confined to a few entries. A mis-gathered or misplaced shard moves
  # whole tensors by the size of the weights themselves (~1e-2), far outside both bounds.
  for name in weights[1]:
    diff = np.abs(weights[0][name] - weights[1][name])
    assert diff.max() < 0.5 * LR, (name, float(diff.max()))
    assert np.mean(diff > 1e-6) < 0.01, (name, float(np.mean(diff > 1e-6)))


def test_host_slice_and_global_batch_on_one_process(monkeypatch):
  """Single-process sanity of the same helpers on the 8 simulated devices."""
  import jax
  from jax.sharding import PartitionSpec as P

  from prl_jax import distributed

  for name in list(os.environ):  # Whatever cluster this test runs in, look like none.
    if name.startswith(("PRL_JAX_", "SLURM_", "OMPI_", "TPU_", "CLOUD_TPU_", "MEGASCALE_")):
      monkeypatch.delenv(name)
  assert distributed.initialize() is False  # No coordinator configured: single process.
  assert distributed.is_main_process()
  info = distributed.process_info()
  assert (info.process_index, info.process_count, info.device_count) == (0, 1, 8)
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  assert distributed.host_slice(16) == slice(0, 16)
  assert distributed.host_slice(16, mesh, P("data")) == slice(0, 16)
  with pytest.raises(ValueError, match="multiple of 4"):
    distributed.host_slice(10, mesh, P("data"))
  batch = {"x": np.arange(32.0).reshape(16, 2)}
  out = distributed.global_batch_from_host(batch, mesh, P("data"))
  assert out["x"].shape == (16, 2) and out["x"].sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])


def test_partial_environment_fails_fast(monkeypatch):
  from prl_jax import distributed

  monkeypatch.setenv("PRL_JAX_NUM_PROCESSES", "2")
  with pytest.raises(ValueError, match="PRL_JAX_COORDINATOR"):
    distributed.initialize()


# ----------------------------------------------------------------------------------------------
# The worker: data-parallel over hosts, hidden layer sharded over each host's devices.


def _worker(checkpoint_dir=None):
  from prl_jax import distributed

  distributed.initialize()  # From PRL_JAX_* when launched by local_multihost.sh.

  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  # Devices are ordered by process, so each process owns one row of the ("data", "model") mesh:
  # the batch is split across processes, the hidden layer across each process's devices.
  # Auto axes: XLA inserts the collectives (jax.make_mesh defaults to Explicit axes).
  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  batch_spec = P("data")
  print(f"processes={jax.process_count()} devices={jax.device_count()}", flush=True)

  # The global data set is the same on every process; each process feeds only its own rows.
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(STEPS, GLOBAL_BATCH, D_IN)).astype(np.float32)
  ys = np.tanh(xs @ rng.normal(size=(D_IN, 1))).astype(np.float32)
  rows = distributed.host_slice(GLOBAL_BATCH, mesh, batch_spec)

  params = {
      "w1": rng.normal(size=(D_IN, D_HIDDEN)).astype(np.float32) / np.sqrt(D_IN),
      "w2": rng.normal(size=(D_HIDDEN, 1)).astype(np.float32) / np.sqrt(D_HIDDEN),
  }
  param_specs = {"w1": P(None, "model"), "w2": P("model", None)}
  params = {k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, param_specs[k]),
                                            lambda idx, v=v: v[idx])
            for k, v in params.items()}

  def loss_fn(p, batch):
    hidden = jnp.tanh(batch["x"] @ p["w1"])
    return jnp.mean((hidden @ p["w2"] - batch["y"]) ** 2)

  @jax.jit
  def train_step(p, batch):
    loss, grads = jax.value_and_grad(loss_fn)(p, batch)
    return jax.tree.map(lambda w, g: w - 0.1 * g, p, grads), loss

  for step in range(STEPS):
    local = {"x": xs[step, rows], "y": ys[step, rows]}
    batch = distributed.global_batch_from_host(local, mesh, batch_spec)
    params, loss = train_step(params, batch)
    # The loss is replicated: every process holds the full value locally.
    print(f"LOSS {step} {float(np.asarray(loss.addressable_data(0))):.9g}", flush=True)

  if checkpoint_dir:
    _check_checkpoint_round_trip(checkpoint_dir, params)


def _check_checkpoint_round_trip(directory, params):
  """Every process saves its shards of `params`, then restores them into the same layout."""
  import jax

  from prl_jax.run.checkpoint import Checkpointer
  from prl_jax.run.checkpoint_tree import abstract_like

  with Checkpointer(directory) as ckpt:
    assert ckpt.save(STEPS, params, {"data_position": STEPS})
    restored, meta = ckpt.restore(abstract_like(params))
  assert meta["data_position"] == STEPS
  for name in params:
    assert restored[name].sharding == params[name].sharding
    for got, want in zip(restored[name].addressable_shards, params[name].addressable_shards):
      np.testing.assert_array_equal(np.asarray(got.data), np.asarray(want.data))
  print(f"CHECKPOINT ok on process {jax.process_index()}", flush=True)


if __name__ == "__main__":
  if sys.argv[1:2] == ["worker"]:
    _worker(*sys.argv[2:3])
  else:
    sys.exit(f"usage: {sys.argv[0]} worker [CHECKPOINT_DIR]")
