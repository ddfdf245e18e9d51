"""Multi-host start-up (`jax.distributed`) and global batches from per-host data.

`initialize()` must run before anything touches a JAX backend (`jax.devices()`, the first jit).
Where the process-group description comes from, first match wins:

1. arguments: `initialize(coordinator_address, num_processes, process_id, local_device_ids)`;
2. environment variables (set by `launch/gpu.sh` and `launch/local_multihost.sh`):
   - `PRL_JAX_COORDINATOR`     host:port of process 0's coordinator service, e.g. `10.0.0.2:8476`;
   - `PRL_JAX_NUM_PROCESSES`   total number of processes;
   - `PRL_JAX_PROCESS_ID`      this process's index in [0, PRL_JAX_NUM_PROCESSES);
   - `PRL_JAX_LOCAL_DEVICE_IDS` optional comma-separated local device ids (e.g. one GPU per
     process: `0`, `1`, ...);
3. detection: on a Cloud TPU VM, `jax.distributed.initialize()` with no arguments (JAX reads the
   worker list from the TPU metadata); under SLURM or Open MPI with more than one task, JAX's own
   cluster detection fills in the coordinator, count and id;
4. otherwise a single process: nothing to do.

`PRL_JAX_NUM_PROCESSES=1` forces the single-process path (e.g. one task of a cluster job run by
hand). Calling `initialize` again is a no-op.

CPU processes exchange collectives through gloo, JAX's default CPU cross-process collective
implementation in this JAX version (`jax_cpu_collectives_implementation`); it is set explicitly
only when a JAX build leaves it unset, where CPU collectives across processes would fail.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "PRL_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "PRL_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "PRL_JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "PRL_JAX_LOCAL_DEVICE_IDS"

# Set on TPU VMs / TPU pods by the runtime or by GKE; any one of them means "a TPU host".
_TPU_ENV_VARS = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "TPU_ACCELERATOR_TYPE", "TPU_NAME",
                 "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """Where this process sits in the job."""

  process_index: int
  process_count: int
  local_device_count: int
  device_count: int
  platform: str

  def __str__(self) -> str:
    return (f"process {self.process_index}/{self.process_count} on {self.platform}: "
            f"{self.local_device_count} local of {self.device_count} devices")


# ----------------------------------------------------------------------------------------------
# Start-up.


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
  """Joins the multi-process job if there is one; returns whether jax.distributed is running.

  See the module docstring for the order in which arguments, environment variables and
  cluster detection are consulted.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = _int_or_none(num_processes, ENV_NUM_PROCESSES)
  process_id = _int_or_none(process_id, ENV_PROCESS_ID)
  if local_device_ids is None and os.environ.get(ENV_LOCAL_DEVICE_IDS):
    local_device_ids = [int(i) for i in os.environ[ENV_LOCAL_DEVICE_IDS].split(",")]

  if num_processes == 1:
    return False  # Explicitly single-process, whatever the environment looks like.
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  if explicit:
    _check_explicit(coordinator_address, num_processes, process_id)
  _ensure_cpu_collectives()
  if explicit:
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
  elif _on_tpu_vm():
    jax.distributed.initialize()  # TPU metadata describes the slice; no arguments needed.
  elif _on_multi_task_cluster():
    jax.distributed.initialize(local_device_ids=local_device_ids)  # SLURM / Open MPI.
  else:
    return False
  logger.info("jax.distributed initialised: %s", process_info())
  return True


def _int_or_none(value: int | None, env_name: str) -> int | None:
  if value is not None:
    return int(value)
  text = os.environ.get(env_name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(
        f"{env_name}={text!r} is not an integer; set it to a number or unset it.") from None


def _check_explicit(coordinator: str | None, num: int | None, pid: int | None) -> None:
  """Partially specified process groups hang at start-up; fail fast instead."""
  missing = [name for name, value in ((ENV_COORDINATOR, coordinator),
                                      (ENV_NUM_PROCESSES, num), (ENV_PROCESS_ID, pid))
             if value is None]
  if missing:
    raise ValueError(
        f"Multi-process start-up needs the coordinator address, process count and process id "
        f"together; missing {missing} (pass them to initialize() or set the environment "
        f"variables, or unset all three for a single process)."
    )
  if not 0 <= pid < num:
    raise ValueError(f"{ENV_PROCESS_ID}={pid} must be in [0, {ENV_NUM_PROCESSES}={num}).")
  if ":" not in coordinator:
    raise ValueError(f"{ENV_COORDINATOR}={coordinator!r} must be host:port, e.g. "
                     "'10.0.0.2:8476' (the same on every process).")


def _on_tpu_vm() -> bool:
  """A TPU host: TPU env vars, or TPU device files with libtpu installed."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms and "tpu" not in platforms:
    return False  # e.g. JAX_PLATFORMS=cpu for tests on a TPU VM: not a TPU job.
  if any(os.environ.get(name) for name in _TPU_ENV_VARS):
    return True
  has_devices = bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))
  if not has_devices:
    return False
  try:
    import libtpu  # noqa: F401  (only installed with the `tpu` extra)
  except ImportError:
    return False
  return True


def _on_multi_task_cluster() -> bool:
  """SLURM or Open MPI job with more than one task (JAX detects the rest itself)."""
  slurm_tasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_NPROCS")
  if os.environ.get("SLURM_JOB_ID") and slurm_tasks and int(slurm_tasks) > 1:
    return True
  ompi_size = os.environ.get("OMPI_COMM_WORLD_SIZE")
  return bool(ompi_size and int(ompi_size) > 1 and os.environ.get("OMPI_MCA_orte_hnp_uri"))


def _ensure_cpu_collectives() -> None:
  """CPU processes need a cross-process collective implementation; gloo ships with jaxlib."""
  if jax.config.values.get("jax_cpu_collectives_implementation") in (None, "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def shutdown() -> None:
  """Leaves the job (optional: JAX also does this at exit)."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


# ----------------------------------------------------------------------------------------------
# Who am I.


def is_main_process() -> bool:
  """True on process 0: the one that logs, writes metrics and prints progress."""
  return jax.process_index() == 0


def process_info() -> ProcessInfo:
  """Index, count, devices and platform of this process."""
  return ProcessInfo(
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      local_device_count=jax.local_device_count(),
      device_count=jax.device_count(),
      platform=jax.default_backend(),
  )


# ----------------------------------------------------------------------------------------------
# Global batches from per-host data.


def _batch_sharding(mesh: Mesh, pspec: PartitionSpec) -> NamedSharding:
  """Sharding of the leading (batch) axis alone: what decides which rows a host owns."""
  return NamedSharding(mesh, PartitionSpec(pspec[0] if len(pspec) else None))


def _owned_rows(mesh: Mesh, pspec: PartitionSpec, num_rows: int) -> list[int]:
  """Sorted global row indices that this process's devices hold for a batch of `num_rows`."""
  index_map = _batch_sharding(mesh, pspec).addressable_devices_indices_map((num_rows,))
  rows: set[int] = set()
  for (index,) in index_map.values():
    rows.update(range(*index.indices(num_rows)))
  return sorted(rows)


def _num_batch_shards(mesh: Mesh, pspec: PartitionSpec) -> int:
  """How many distinct row blocks the batch axis is split into."""
  axes = pspec[0] if len(pspec) else None
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


def host_slice(global_batch_size: int, mesh: Mesh | None = None,
               pspec: PartitionSpec | None = None) -> slice:
  """The rows [start, stop) of the global batch that this process must load.

  Without `mesh`, the batch is split evenly over processes in process order. With `mesh` and
  `pspec` (the batch's partition spec; its first entry shards rows), the rows are read off the
  sharding itself, so they are exactly the rows `global_batch_from_host` will place on this
  host's devices. Hosts that are replicas along the batch axis get the same rows.
  """
  if mesh is None:
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
      raise ValueError(f"Global batch {global_batch_size} does not split over {count} "
                       "processes; make it a multiple of the process count.")
    per_host = global_batch_size // count
    return slice(index * per_host, (index + 1) * per_host)
  if pspec is None:
    raise ValueError("host_slice(..., mesh) also needs the batch's PartitionSpec, e.g. "
                     "P('data'): its first entry says how rows are split.")
  shards = _num_batch_shards(mesh, pspec)
  if global_batch_size % shards:
    raise ValueError(f"Global batch {global_batch_size} does not split into the {shards} "
                     f"batch shards of mesh {dict(mesh.shape)} with spec {pspec}; make it a "
                     f"multiple of {shards}.")
  rows = _owned_rows(mesh, pspec, global_batch_size)
  if rows != list(range(rows[0], rows[-1] + 1)):
    raise ValueError(
        f"This process's devices hold non-contiguous rows of the batch under mesh "
        f"{dict(mesh.shape)}; build the mesh so each host's devices are adjacent along the "
        "batch axis (jax.make_mesh does this)."
    )
  return slice(rows[0], rows[-1] + 1)


def global_batch_from_host(local_tree: Any, mesh: Mesh, pspec: PartitionSpec) -> Any:
  """Assembles global `jax.Array`s from each host's rows (`host_slice`) of a batch pytree.

  Every leaf is a host-local array whose leading axis holds this host's rows and whose other
  axes are whole; all leaves get the sharding `NamedSharding(mesh, pspec)`. On one process this
  is `jax.device_put` with that sharding.
  """
  sharding = NamedSharding(mesh, pspec)
  shards = _num_batch_shards(mesh, pspec)
  owned = len(_owned_rows(mesh, pspec, shards))  # Row blocks (of one row each) held here.

  def to_global(local):
    local = np.asarray(local)
    global_shape = (local.shape[0] * shards // owned,) + local.shape[1:]
    return jax.make_array_from_process_local_data(sharding, local, global_shape)

  return jax.tree.map(to_global, local_tree)


def to_host(x: Any) -> np.ndarray:
  """The whole value of an array as NumPy on every process.

  A `jax.Array` sharded over devices of other processes cannot be read locally; its rows are
  all-gathered first (every process must call this together). Anything else is `np.asarray`.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
