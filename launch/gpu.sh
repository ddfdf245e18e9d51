#!/usr/bin/env bash
# Runs a prl-jax command on GPUs: one node, or one process per node of a multi-node job.
#
# Single node: one process drives every local GPU; nothing to configure.
#   launch/gpu.sh -i -- prl-jax train --config configs/mini/prime.py --workdir runs/prime
#
# Multi-node by hand: run the same line on every node, changing only -r (the node's rank).
# Node 0 hosts the coordinator; the port must be reachable from the other nodes.
#   node0$ launch/gpu.sh -n 2 -r 0 -c 10.0.0.2:8476 -- prl-jax train ... --workdir /shared/run
#   node1$ launch/gpu.sh -n 2 -r 1 -c 10.0.0.2:8476 -- prl-jax train ... --workdir /shared/run
# This sets PRL_JAX_COORDINATOR, PRL_JAX_NUM_PROCESSES and PRL_JAX_PROCESS_ID, which
# prl_jax.distributed.initialize() reads. The workdir must be shared by all nodes (NFS, gs://):
# checkpoints are written jointly and every node resumes from the same step.
#
# Under SLURM no flags are needed: `srun --nodes=2 --ntasks-per-node=1 launch/gpu.sh -- ...`;
# JAX reads the coordinator, count and rank from SLURM's variables.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh [-i] [-e VENV] [-n NODES -r RANK -c HOST:PORT] [-g IDS] -- COMMAND...

  -i            install first: pip install ".[gpu]" (CUDA 12 jaxlib) into the environment
  -e VENV       virtual environment to create/use for -i and to run in (default: .venv)
  -n NODES      number of processes (nodes) in the job          } all three for a
  -r RANK       this process's rank, 0..NODES-1                  } multi-node run
  -c HOST:PORT  coordinator address (rank 0's host), same on every node
  -g IDS        comma-separated local GPU ids this process uses (default: all)
  -h            this help
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
install=0
venv="$root/.venv"
nodes=""
rank=""
coordinator=""
gpu_ids=""
while getopts ":ie:n:r:c:g:h" opt; do
  case "$opt" in
    i) install=1 ;;
    e) venv=$OPTARG ;;
    n) nodes=$OPTARG ;;
    r) rank=$OPTARG ;;
    c) coordinator=$OPTARG ;;
    g) gpu_ids=$OPTARG ;;
    h) usage; exit 0 ;;
    :) echo "error: -$OPTARG needs a value" >&2; usage >&2; exit 2 ;;
    *) echo "error: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ "${1:-}" == "--" ]]; then shift; fi
if [[ $# -eq 0 ]]; then
  echo "error: no command given; put it after --" >&2; usage >&2; exit 2
fi

# A multi-node run needs all of -n, -r and -c; a partial set would hang at start-up.
given=0
for value in "$nodes" "$rank" "$coordinator"; do [[ -n "$value" ]] && given=$((given + 1)); done
if (( given != 0 && given != 3 )); then
  echo "error: a multi-node run needs -n, -r and -c together (got -n '$nodes' -r '$rank' -c '$coordinator')" >&2
  exit 2
fi
if (( given == 3 )); then
  if ! [[ "$nodes" =~ ^[0-9]+$ && "$rank" =~ ^[0-9]+$ ]] || (( rank >= nodes )); then
    echo "error: -n must be a count and -r a rank in [0, n); got -n $nodes -r $rank" >&2; exit 2
  fi
  if [[ "$coordinator" != *:* ]]; then
    echo "error: -c must be HOST:PORT (rank 0's address), got '$coordinator'" >&2; exit 2
  fi
  export PRL_JAX_COORDINATOR="$coordinator"
  export PRL_JAX_NUM_PROCESSES="$nodes"
  export PRL_JAX_PROCESS_ID="$rank"
fi
if [[ -n "$gpu_ids" ]]; then
  export CUDA_VISIBLE_DEVICES="$gpu_ids"
fi

if (( install )); then
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$root[gpu]"
fi
if [[ -x "$venv/bin/python" ]]; then
  export PATH="$venv/bin:$PATH"
fi

# The sampler's KV cache and the train step share the GPU; let XLA grow its pool as needed
# rather than grabbing 75% up front, unless the caller chose otherwise.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"

cd "$root"
exec "$@"
