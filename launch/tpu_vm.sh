#!/usr/bin/env bash
# Runs a prl-jax command on a Cloud TPU VM (single host or pod slice) and keeps it running.
#
# 1. creates the TPU VM if it does not exist;
# 2. copies this checkout to every worker and installs it with the `tpu` extra in a venv;
# 3. runs the same command on every worker (--worker=all); prl_jax.distributed.initialize()
#    finds the other workers through the TPU metadata;
# 4. babysits: polls the VM state and, when the VM is preempted (or gone, or the ssh session to
#    it dropped), deletes and re-creates it, reinstalls, and runs the same command again. The
#    training loop resumes from the latest checkpoint in its workdir by default, so the workdir
#    must outlive the VM: use a gs:// bucket (or a persistent disk), never the VM's local disk.
#
# Example:
#   launch/tpu_vm.sh -s my-run us-central2-b v4-32 tpu-ubuntu2204-base -- \
#       prl-jax train --config configs/paper/prime_eurus2_7b.py --workdir gs://my-bucket/runs/prime
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [options] NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION -- COMMAND...

  NAME              TPU VM name, e.g. prl-prime
  ZONE              e.g. us-central2-b
  ACCELERATOR_TYPE  e.g. v4-8, v4-32, v5litepod-16
  RUNTIME_VERSION   TPU software version, e.g. tpu-ubuntu2204-base
  COMMAND           run from the checkout's root on every worker, e.g.
                    prl-jax train --config configs/mini/prime.py --workdir gs://BUCKET/run

Options:
  -p PROJECT   gcloud project (default: gcloud's configured project)
  -s           create a spot (preemptible) VM
  -o           run once: no babysitting, exit with the command's status
  -I           skip copying and installing on a VM that already exists
  -i SECONDS   state poll interval while babysitting (default 60)
  -m N         give up after N restarts (default 20)
  -k           delete the VM after the command succeeds
  -h           this help

Environment: GCLOUD (the gcloud binary, default `gcloud`).
Exit status: the command's, or 1 when the restart budget is spent.
EOF
}

gcloud_bin=${GCLOUD:-gcloud}
project=""
spot=0
once=0
skip_install=0
poll=60
max_restarts=20
delete_after=0
while getopts ":p:soIi:m:kh" opt; do
  case "$opt" in
    p) project=$OPTARG ;;
    s) spot=1 ;;
    o) once=1 ;;
    I) skip_install=1 ;;
    i) poll=$OPTARG ;;
    m) max_restarts=$OPTARG ;;
    k) delete_after=1 ;;
    h) usage; exit 0 ;;
    :) echo "error: -$OPTARG needs a value" >&2; usage >&2; exit 2 ;;
    *) echo "error: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if (( $# < 4 )); then
  echo "error: NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION are required" >&2; usage >&2; exit 2
fi
name=$1 zone=$2 accelerator=$3 runtime=$4
shift 4
if [[ "${1:-}" == "--" ]]; then shift; fi
if (( $# == 0 )); then
  echo "error: no command given; put it after --" >&2; usage >&2; exit 2
fi
if ! [[ "$poll" =~ ^[0-9]+$ && "$max_restarts" =~ ^[0-9]+$ ]]; then
  echo "error: -i and -m take whole numbers" >&2; exit 2
fi
if [[ "$*" == *--workdir* && "$*" != *gs://* ]]; then
  echo "warning: the workdir does not look like gs://...; a re-created VM starts with an empty" \
       "disk, so resuming needs a bucket or a persistent disk" >&2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
remote_dir='$HOME/prl_jax'  # Expanded by the remote shell (quotes would stop a ~).
remote_venv='$HOME/prl_jax_venv'
command_line=$(printf '%q ' "$@")

log() { echo "tpu_vm [$(date -u +%H:%M:%S)] $*" >&2; }

tpu() {
  local verb=$1
  shift
  "$gcloud_bin" compute tpus tpu-vm "$verb" "$@" --zone="$zone" ${project:+--project="$project"}
}

vm_state() {
  # READY, CREATING, PREEMPTED, TERMINATED, ...; MISSING when describe finds nothing.
  local state
  state=$(tpu describe "$name" --format='value(state)' 2>/dev/null) || state=MISSING
  echo "${state:-MISSING}"
}

create_vm() {
  log "creating $name ($accelerator, $runtime) in $zone"
  local extra=()
  if (( spot )); then extra+=(--spot); fi
  tpu create "$name" --accelerator-type="$accelerator" --version="$runtime" "${extra[@]+"${extra[@]}"}"
}

delete_vm() {
  log "deleting $name"
  tpu delete "$name" --quiet || true
}

install_on_workers() {
  # The working tree (not only committed files), without local environments and run outputs.
  local archive
  archive=$(mktemp -d)/prl_jax.tar.gz
  tar -czf "$archive" -C "$root" --exclude=./.venv --exclude=./.git --exclude=./runs \
      --exclude=./.jax_cache --exclude='*.egg-info' --exclude='__pycache__' .
  log "copying the checkout to every worker and installing prl_jax[tpu]"
  local rc=0
  tpu scp "$archive" "$name:prl_jax.tar.gz" --worker=all || rc=$?
  if (( rc == 0 )); then
    tpu ssh "$name" --worker=all --command="set -e
      rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf \$HOME/prl_jax.tar.gz -C $remote_dir
      [ -x $remote_venv/bin/python ] || python3 -m venv $remote_venv
      $remote_venv/bin/python -m pip install -q --upgrade pip
      $remote_venv/bin/python -m pip install -q \"$remote_dir[tpu]\"" || rc=$?
  fi
  rm -rf "$(dirname "$archive")"
  return "$rc"
}

run_on_workers() {
  # A run left behind by a dropped ssh session still holds the TPU: stop it by its recorded
  # pid before starting again (exec keeps the pid the command's own).
  tpu ssh "$name" --worker=all --command="cd $remote_dir
    if [ -f ~/.prl_jax_run.pid ]; then kill \$(cat ~/.prl_jax_run.pid) 2>/dev/null && sleep 10; fi
    echo \$\$ > ~/.prl_jax_run.pid
    export PATH=$remote_venv/bin:\$PATH
    exec $command_line"
}

ensure_vm() {
  # Brings the VM to READY with the code installed; re-creates it after a preemption.
  local state
  while true; do
    state=$(vm_state)
    case "$state" in
      READY) break ;;
      MISSING)
        if create_vm; then needs_install=1; else log "create failed; retrying in ${poll}s"; sleep "$poll"; fi ;;
      PREEMPTED|TERMINATED|STOPPED|FAILED|UNHEALTHY*)
        log "$name is $state"
        delete_vm
        if create_vm; then needs_install=1; else log "create failed; retrying in ${poll}s"; sleep "$poll"; fi ;;
      *) log "$name is $state; waiting"; sleep "$poll" ;;
    esac
  done
  if (( needs_install )); then
    install_on_workers || { log "installing on $name failed"; return 1; }
    needs_install=0
  fi
}

finish() {
  local rc=$1
  if (( rc == 0 )); then
    log "command finished"
    if (( delete_after )); then delete_vm; fi
  fi
  exit "$rc"
}

# --- main --------------------------------------------------------------------------------------

needs_install=$((1 - skip_install))  # A VM created by this script is always installed.
restarts=0
watcher_pid=""
stop_run() { if [[ -n "$watcher_pid" ]]; then kill -TERM -- "-$watcher_pid" 2>/dev/null || true; fi; }
trap 'stop_run; exit 130' INT TERM

if (( once )); then
  ensure_vm || exit 1
  log "running on every worker: $command_line"
  rc=0
  run_on_workers || rc=$?
  finish "$rc"
fi

count_restart() {
  restarts=$((restarts + 1))
  if (( restarts > max_restarts )); then
    log "gave up after $max_restarts restarts"
    exit 1
  fi
  log "restart $restarts/$max_restarts: $*"
}

while true; do
  if ! ensure_vm; then
    count_restart "setting up the VM failed (VM $(vm_state))"
    sleep "$poll"
    continue
  fi
  log "running on every worker: $command_line"
  set -m  # Own process group for the ssh session, so stop_run also ends gcloud's ssh children.
  run_on_workers &
  watcher_pid=$!
  set +m
  while kill -0 "$watcher_pid" 2>/dev/null; do
    sleep "$poll" & wait $! || true
    state=$(vm_state)
    if [[ "$state" != READY ]] && kill -0 "$watcher_pid" 2>/dev/null; then
      log "$name is $state while the command runs; stopping the ssh session"
      stop_run
    fi
  done
  rc=0
  wait "$watcher_pid" || rc=$?
  watcher_pid=""
  if (( rc == 0 )); then finish 0; fi
  # A preemption can take a little while to show in the VM state: look again before deciding.
  sleep $((poll < 30 ? poll : 30))
  state=$(vm_state)
  # On a healthy VM a failure other than a lost ssh connection (255) is the command's own:
  # rerunning would fail the same way.
  if [[ "$state" == READY && $rc -ne 255 ]]; then
    log "command failed with status $rc on a healthy VM; not restarting"
    exit "$rc"
  fi
  count_restart "VM $state, status $rc; the command resumes from the last checkpoint"
done
