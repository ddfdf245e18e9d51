"""launch/tpu_vm.sh against a fake `gcloud` (the GCLOUD variable): create the VM, run the command
on every worker, and after a preemption delete, re-create and run the same command, which resumes.

The fake keeps the VM's state in a file, runs each worker's remote command with its own HOME
(two workers), and records every call. The command is a stand-in trainer that saves its step in
the workdir after each of its two steps and, in the first run only, has the VM preempted under it
after step 1 (then waits to be stopped, as a real run's ssh session hangs).
"""

import os
import stat
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..")

FAKE_GCLOUD = r"""#!/usr/bin/env bash
# gcloud compute tpus tpu-vm VERB NAME [flags]: the calls launch/tpu_vm.sh makes.
state_dir=$FAKE_TPU
verb=$4 name=$5
echo "$verb $*" >> "$state_dir/calls"
case "$verb" in
  describe) [ -f "$state_dir/state" ] || exit 1; cat "$state_dir/state" ;;
  create) echo READY > "$state_dir/state" ;;
  delete) rm -f "$state_dir/state" ;;
  scp) [ -f "$state_dir/state" ] ;;
  ssh)
    command=""
    for arg in "$@"; do case "$arg" in --command=*) command=${arg#--command=} ;; esac; done
    if [[ "$command" == *"pip install"* ]]; then echo install >> "$state_dir/calls"; exit 0; fi
    run=$(( $(cat "$state_dir/runs" 2>/dev/null || echo 0) + 1 ))
    echo "$run" > "$state_dir/runs"
    pids=()
    for worker in 0 1; do
      home="$state_dir/worker$worker"
      mkdir -p "$home/prl_jax"
      HOME=$home WORKER=$worker RUN=$run bash -c "$command" &
      pids+=($!)
    done
    rc=0
    for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    exit $rc ;;
  *) echo "fake gcloud: unexpected $*" >&2; exit 2 ;;
esac
"""

FAKE_TRAIN = r"""#!/usr/bin/env bash
# A resumable stand-in for `prl-jax train`: two steps, each saved in WORKDIR before the next.
workdir=$1
mkdir -p "$workdir"
saved="$workdir/step_worker$WORKER"
step=$(cat "$saved" 2>/dev/null || echo 0)
echo "start $step" >> "$workdir/log_worker$WORKER"
while (( step < 2 )); do
  step=$((step + 1))
  echo "$step" > "$saved"
  if [ "$RUN" = 1 ] && (( step == 1 )); then
    # The first run loses its VM after step 1: worker 0 marks it preempted and every worker
    # stops there (waiting for the mark, so a slow worker cannot run ahead), its ssh session
    # hanging as a real one does until the launcher gives up on it.
    if [ "$WORKER" = 0 ]; then echo PREEMPTED > "$FAKE_TPU/state"; fi
    until grep -q PREEMPTED "$FAKE_TPU/state" 2>/dev/null; do sleep 0.1; done
    sleep 60
  fi
done
echo done >> "$workdir/log_worker$WORKER"
"""


def _script(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(path)


def test_preempted_vm_is_recreated_and_the_command_resumes(tmp_path):
  state = tmp_path / "tpu"
  state.mkdir()
  gcloud = _script(tmp_path / "gcloud", FAKE_GCLOUD)
  trainer = _script(tmp_path / "train.sh", FAKE_TRAIN)
  workdir = tmp_path / "bucket" / "run"  # stands for the gs:// workdir that outlives the VM
  env = {**os.environ, "GCLOUD": gcloud, "FAKE_TPU": str(state)}
  result = subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "-s", "-i", "1", "-m", "3",
       "fake-vm", "us-central2-b", "v4-16", "tpu-ubuntu2204-base", "--",
       trainer, str(workdir)],
      env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  calls = (state / "calls").read_text().splitlines()
  verbs = [line.split()[0] for line in calls]
  assert verbs.count("create") == 2 and verbs.count("delete") == 1  # re-created once
  assert all("--spot" in line for line in calls if line.startswith("create"))
  assert verbs.count("install") == 2  # installed on each new VM
  assert "restart 1/3" in result.stderr and "PREEMPTED" in result.stderr
  for worker in (0, 1):  # every worker ran, was stopped, and resumed from its saved step
    log = (workdir / f"log_worker{worker}").read_text().splitlines()
    assert log == ["start 0", "start 1", "done"], (worker, log)
    assert (workdir / f"step_worker{worker}").read_text().strip() == "2"


def test_a_failing_command_on_a_healthy_vm_is_not_restarted(tmp_path):
  state = tmp_path / "tpu"
  state.mkdir()
  gcloud = _script(tmp_path / "gcloud", FAKE_GCLOUD)
  env = {**os.environ, "GCLOUD": gcloud, "FAKE_TPU": str(state)}
  result = subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "-i", "1", "fake-vm", "z", "v4-8",
       "rt", "--", "bash", "-c", "exit 3"], env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 3
  assert "not restarting" in result.stderr
  assert [line.split()[0] for line in (state / "calls").read_text().splitlines()].count(
      "create") == 1
