#!/usr/bin/env bash
# Runs one command as N JAX processes on this machine, joined through jax.distributed.
#
# Each process sees K simulated CPU devices, so N processes behave like an N-host job with
# N*K devices: the way to test multi-host code paths (global batches, checkpoints written
# by several processes) without a cluster. Output lines are prefixed with "[p<i>] ".
# Exits 0 when every process succeeded; otherwise stops the others and exits with the first
# failing status (124 on timeout).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local_multihost.sh [-n PROCESSES] [-d DEVICES] [-p PORT] [-t SECONDS] -- COMMAND...

  -n PROCESSES  number of processes (default 2)
  -d DEVICES    simulated CPU devices per process (default 2)
  -p PORT       coordinator port on localhost (default: a random port in 20000-39999)
  -t SECONDS    stop everything and exit 124 after this long (default: no limit)
  -h            this help

Each process gets PRL_JAX_COORDINATOR=localhost:PORT, PRL_JAX_NUM_PROCESSES, PRL_JAX_PROCESS_ID,
JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES; the command
calls prl_jax.distributed.initialize() (the prl-jax CLI does) to join.

Example:
  launch/local_multihost.sh -n 2 -d 2 -- prl-jax train --config configs/mini/prime.py --workdir runs/mh
EOF
}

num_processes=2
devices=2
port=$((20000 + RANDOM % 20000))
time_limit=0
while getopts ":n:d:p:t:h" opt; do
  case "$opt" in
    n) num_processes=$OPTARG ;;
    d) devices=$OPTARG ;;
    p) port=$OPTARG ;;
    t) time_limit=$OPTARG ;;
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
for value in "$num_processes" "$devices" "$port" "$time_limit"; do
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    echo "error: -n, -d, -p and -t take whole numbers (got '$value')" >&2; exit 2
  fi
done
if (( num_processes < 1 || devices < 1 )); then
  echo "error: -n and -d must be at least 1" >&2; exit 2
fi

# A device-count flag inherited from the caller (e.g. a test runner's) would fight ours.
base_xla_flags=$(printf '%s' "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')

# Job control gives every background job its own process group, so one `kill -- -PGID` stops a
# worker together with its output filter.
set -m
pids=()
watchdog=""

stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  if [[ -n "$watchdog" ]]; then kill -TERM -- "-$watchdog" 2>/dev/null || true; fi
}

on_timeout() {
  echo "local_multihost: time limit of ${time_limit}s reached; stopping all processes" >&2
  stop_all
  wait 2>/dev/null || true
  exit 124
}

on_signal() {
  stop_all
  wait 2>/dev/null || true
  exit 130
}
trap on_timeout USR1
trap on_signal INT TERM

for ((i = 0; i < num_processes; i++)); do
  (
    export PRL_JAX_COORDINATOR="localhost:${port}"
    export PRL_JAX_NUM_PROCESSES="$num_processes"
    export PRL_JAX_PROCESS_ID="$i"
    export JAX_PLATFORMS=cpu
    export XLA_FLAGS="${base_xla_flags} --xla_force_host_platform_device_count=${devices}"
    # pipefail makes the worker's status, not sed's, the status of this job.
    "$@" 2>&1 | sed -u "s/^/[p${i}] /"
  ) &
  pids+=("$!")
done

if (( time_limit > 0 )); then
  ( sleep "$time_limit" && kill -USR1 $$ ) &
  watchdog=$!
fi

set +m  # Groups are assigned at fork; without monitor mode bash prints no job notices.

# Poll the workers (portable to bash 4, unlike `wait -n -p`); the first failure stops the
# rest, because the survivors would otherwise block in a collective until jax.distributed's
# heartbeat timeout.
status=0
live=("${pids[@]}")
while (( ${#live[@]} > 0 )); do
  still=()
  for pid in "${live[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); continue; fi
    rc=0
    wait "$pid" || rc=$?
    if (( rc != 0 && status == 0 )); then
      status=$rc
      echo "local_multihost: a process exited with status $rc; stopping the others" >&2
      stop_all
    fi
  done
  live=("${still[@]+"${still[@]}"}")
  if (( ${#live[@]} > 0 )); then sleep 0.2; fi
done
if [[ -n "$watchdog" ]]; then kill -TERM -- "-$watchdog" 2>/dev/null || true; fi
exit "$status"
