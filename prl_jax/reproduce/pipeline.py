"""`prl-jax reproduce`: every method on one budget, evaluated, compared with the papers' claims.

    prl-jax reproduce --preset demo --workdir runs/demo   # one seed, few steps (~6 min, 2 CPUs)
    prl-jax reproduce --preset mini --workdir runs/mini   # 4 seeds x 150 steps (< 3 h)
    prl-jax reproduce --preset lab --workdir runs/lab     # the lab's gates, then its arms

The pipeline (a preset says how big each part is):
  1. SFT of the tiny policy with configs/mini/sft.py                   -> WORKDIR/sft/final_hf
  2. every RL method and seed: configs/mini/<method>.py unchanged but for the starting policy,
     the step count, the seed, the HF export and logging (equal budgets, no per-method tuning)
                                                                       -> WORKDIR/rl/<m>/seed<k>
  3. every final policy (and the SFT one) on the eval split and on the held-out longer chains:
     mean@n, pass@n, greedy                                            -> <run>/eval{,_heldout}
  4. the ER-PRM best-of-N experiment from the same SFT policy          -> WORKDIR/erprm
     (the arms in `prm_arms`, RAFT with one of its PRMs, start once it has finished)
  5. WORKDIR/results.json and WORKDIR/report.md (`prl_jax.reproduce.collect`, `.report`).

A preset names its configs folder (configs/mini, configs/lab). With `gates` (the lab) the gates
G0-G3 (`prl_jax.reproduce.lab`) run first and stop the pipeline at the first failure; their SFT
is step 1 and their RL runs are the first steps of the seed-0 runs of step 2, which resume them.
Arms named in `arm_stages` start from an extra SFT stage (e.g. configs/lab/sft_demos.py from the
main SFT policy) instead of the main SFT. With `kl_problems` each final policy's KL to the policy
it started from is estimated on its own samples (`prl_jax.eval.policy_kl`) -> <run>/kl_init.json.

Every stage leaves a marker WORKDIR/stages/<stage>.json (its wall time, equivalent command and
inputs) when it finishes, and is skipped when its marker holds the same inputs, so a killed
`reproduce` restarts where it stopped: finished stages are skipped and an interrupted RL run
resumes from its last checkpoint (the training loop does that by itself).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import shlex
import time
from collections.abc import Callable, Sequence

from prl_jax.config import ConfigError
from prl_jax.eval.evaluate import default_out_dir, run_eval
from prl_jax.eval.policy_kl import KL_FILE, run_policy_kl
from prl_jax.eval.prm_experiment import ErprmOptions, run_erprm
from prl_jax.eval.summary import RESULTS_JSON
from prl_jax.progress import progress_bar, say
from prl_jax.reproduce.collect import save_results
from prl_jax.reproduce.lab import (CAPACITY, base_policy_passed, gate_sft_overrides,
                                   run_lab_gates)
from prl_jax.reproduce.presets import Preset
from prl_jax.reproduce.report import write_report
from prl_jax.reproduce.stages import (checkout_configs, cli_command, config_file, load,
                                      logging_overrides, read_marker, run_stage, stage_inputs,
                                      stage_marker, worker_pool)
from prl_jax.run import paths
from prl_jax.run.interrupt import RunInterrupted
from prl_jax.train.loop import train
from prl_jax.train.sft import sft

# Re-exported: the stage helpers lived here before prl_jax.reproduce.stages.
__all__ = ["Job", "reproduce", "read_marker", "run_stage", "stage_marker", "config_file", "load",
           "stage_inputs", "logging_overrides", "cli_command"]


# ------------------------------------------------------------------------------------------------
# Configs and the equivalent commands.


def default_configs_dir(preset: Preset | None = None) -> str:
  """configs/<preset.configs> (configs/mini without a preset) of the source checkout."""
  return checkout_configs(preset.configs if preset else "mini")


def sft_overrides(preset: Preset, verbose: bool, workdir: str) -> list[str]:
  """What the SFT stage (and the SFT policy's evals) change in <configs>/sft.py; with gates,
  those of the gates' G1 SFT, which is this stage."""
  if preset.gates is not None:
    return gate_sft_overrides(preset.gates, verbose, workdir)
  return [*preset.overrides, *preset.sft_overrides, *logging_overrides(verbose)]


def rl_overrides(preset: Preset, sft_hf: str, seed: int, verbose: bool) -> list[str]:
  """What an RL run changes in <configs>/<arm>.py: the same for every arm."""
  return [*preset.overrides, f"init_from={sft_hf}", f"train.steps={preset.rl_steps}",
          f"seed={seed}", "checkpoint.save_hf=true", *logging_overrides(verbose)]


def eval_overrides(preset: Preset, split: str) -> list[str]:
  """eval.n samples per problem; the held-out chains get room for their longer solutions."""
  problems = preset.eval_problems if split == "eval" else preset.heldout_problems
  out = [f"eval.n={preset.eval_n}", f"eval.num_problems={problems}"]
  if split == "eval":
    out.append(f"task.num_eval={problems}")  # the eval split holds task.num_eval problems
  else:
    out.append(f"rollout.max_new_tokens={preset.heldout_max_new_tokens}")
    out += preset.heldout_overrides
  return out


def erprm_flags(options: ErprmOptions) -> list[str]:
  """The `prl-jax erprm` flags that set `options`."""
  flags = []
  for field in dataclasses.fields(options):
    value = getattr(options, field.name)
    flag = "--" + field.name.replace("_", "-")
    if isinstance(value, bool):
      flags += [flag] if value else []
    else:
      flags += [flag, str(value)]
  return flags


# ------------------------------------------------------------------------------------------------
# Stages.


@dataclasses.dataclass(frozen=True)
class Job:
  """One unit of work after SFT (an RL run with its evals, or the ER-PRM experiment).

  Plain data, so a worker process can receive it.
  """

  kind: str  # "rl" | "erprm"
  workdir: str
  preset: Preset
  configs_dir: str
  sft_hf: str  # the policy the run starts from (the main SFT or an arm's extra SFT stage)
  verbose: bool
  method: str = ""
  seed: int = 0
  overrides: tuple[str, ...] = ()  # this run's own, after the preset's (e.g. its PRM)
  after: str = ""  # the `key` of a job that must have finished first ("": none)

  @property
  def key(self) -> str:
    return f"{self.method}/seed{self.seed}" if self.kind == "rl" else self.kind


def evaluate_stage(workdir: str, stage: str, config_path: str, base_overrides: Sequence[str],
                   run_dir: str, model_dir: str, preset: Preset, split: str) -> dict:
  """Evaluates `model_dir` on `split`, writing <run_dir>/eval{,_heldout}/results.json."""
  overrides = [*base_overrides, *eval_overrides(preset, split)]
  out_dir = default_out_dir(run_dir, split)
  command = cli_command("eval", config_path, run_dir, overrides,
                        ["--model", model_dir, "--split", split])
  fn = lambda: run_eval(load(config_path, overrides), run_dir, model_dir=model_dir, split=split,
                        out_dir=out_dir)
  inputs = stage_inputs(overrides, config_path, model=model_dir)
  record = run_stage(workdir, stage, inputs, command, fn,
                     outputs=[os.path.relpath(os.path.join(out_dir, RESULTS_JSON), workdir)])
  return {**record, "results": os.path.relpath(os.path.join(out_dir, RESULTS_JSON), workdir)}


def sft_stage(workdir: str, preset: Preset, configs_dir: str, verbose: bool,
              name: str = "sft", init_hf: str | None = None) -> dict:
  """SFT once into WORKDIR/<name> (skipped when its final_hf is complete), then its evals.

  `name` is also the config (<configs>/<name>.py); `init_hf` starts it from that policy (an
  extra stage such as sft_demos continues the main SFT), and its config file then takes the
  argument `:rl_steps=<preset.rl_steps>`.
  """
  path = config_file(configs_dir, name)
  overrides = sft_overrides(preset, verbose, workdir)
  if init_hf:
    overrides = [*overrides, f"init_from={init_hf}"]
    # An extra stage sizes itself from the arms' length (configs/lab/sft_demos.py: as many clean
    # demonstrations as rePIRL sees in rl_steps steps).
    path = f"{path}:rl_steps={preset.rl_steps}"
  sft_dir = os.path.join(workdir, name)
  hf_dir = os.path.join(sft_dir, "final_hf")
  train = run_stage(workdir, f"{name}/train", stage_inputs(overrides, path),
                    cli_command("sft", path, sft_dir, overrides),
                    lambda: sft(load(path, overrides), sft_dir),
                    outputs=[f"{name}/final_hf/config.json", f"{name}/final_hf/model.safetensors"])
  evals = {split: evaluate_stage(workdir, f"{name}/{split}", path, overrides, sft_dir, hf_dir,
                                 preset, split) for split in preset.splits}
  return {"dir": name, "hf": os.path.relpath(hf_dir, workdir), "train": train, "evals": evals}


def kl_stage(job: Job, rel: str, path: str, overrides: Sequence[str]) -> dict:
  """KL(final policy || the policy it started from) on its own samples -> <run>/kl_init.json."""
  run_dir = os.path.join(job.workdir, rel)
  p = job.preset
  overrides = [*overrides, *eval_overrides(p, "eval")]
  out = os.path.join(rel, KL_FILE)
  model = os.path.join(run_dir, "final_hf")
  # No `prl-jax` subcommand runs this stage alone: the record names the function and its inputs.
  command = (f"python -c 'from prl_jax.eval.policy_kl import run_policy_kl' "
             f"# run_policy_kl(load({path!r}, overrides), {run_dir!r}, model_dir={model!r}, "
             f"reference_dir={job.sft_hf!r}, num_problems={p.kl_problems}); overrides: "
             + " ".join(overrides))
  fn = lambda: run_policy_kl(load(path, overrides), run_dir, model_dir=model,
                             reference_dir=job.sft_hf, num_problems=p.kl_problems,
                             out_path=os.path.join(job.workdir, out))
  inputs = stage_inputs(overrides, path, reference=job.sft_hf, problems=p.kl_problems)
  record = run_stage(job.workdir, f"{rel}/kl", inputs, command, fn, outputs=[out])
  return {**record, "results": out}


def saved_steps(run_dir: str) -> int | None:
  """The newest checkpointed step of the run in `run_dir` (None before its first save), read
  from the directory names (Orbax names a finished step by its number; temporary and `.broken`
  steps have suffixes), without opening a checkpoint manager, whose read-only mode logs two
  warnings. Only for the line below: the training loop itself resumes from what Orbax finds."""
  names = paths.listdir(paths.join(run_dir, "checkpoints"))  # [] when there is none
  return max((int(n) for n in names if n.isdigit()), default=None)


def train_or_export(config, run_dir: str, rel: str) -> None:
  """Trains (or resumes) the run. A run that already has its steps, the seed-0 runs the lab's
  gates trained, is only exported, with a line that says so instead of the loop's
  "nothing to do"."""
  done = saved_steps(run_dir)
  if done is not None and done >= config.train.steps:
    say(f"[reproduce] {rel}: trained its {done} steps earlier (a gate's run or a previous "
        f"reproduce); its final policy is exported")
  train(config, run_dir, announce_finished=False)


def rl_job(job: Job) -> dict:
  """Trains one method and seed (resuming an interrupted run), then evaluates the final policy."""
  path = config_file(job.configs_dir, job.method)
  overrides = [*rl_overrides(job.preset, job.sft_hf, job.seed, job.verbose), *job.overrides]
  rel = os.path.join("rl", job.method, f"seed{job.seed}")
  run_dir = os.path.join(job.workdir, rel)
  record = run_stage(job.workdir, f"{rel}/train", stage_inputs(overrides, path),
                     cli_command("train", path, run_dir, overrides),
                     lambda: train_or_export(load(path, overrides), run_dir, rel),
                     outputs=[f"{rel}/final_hf/config.json", f"{rel}/metrics.jsonl"])
  hf_dir = os.path.join(run_dir, "final_hf")
  evals = {split: evaluate_stage(job.workdir, f"{rel}/{split}", path, overrides, run_dir, hf_dir,
                                 job.preset, split) for split in job.preset.splits}
  out = {"method": job.method, "seed": job.seed, "dir": rel, "init": job.sft_hf,
         "metrics": os.path.join(rel, "metrics.jsonl"), "train": record, "evals": evals}
  if job.preset.kl_problems:
    out["kl"] = kl_stage(job, rel, path, overrides)
  return out


def erprm_job(job: Job) -> dict:
  """Monte Carlo labels, ER-PRM / hard / soft / outcome PRMs and best-of-N from the SFT policy."""
  path = config_file(job.configs_dir, job.preset.erprm_config)
  overrides = [*job.preset.overrides, *job.preset.erprm_overrides, f"init_from={job.sft_hf}",
               *logging_overrides(job.verbose)]
  options = job.preset.erprm
  config = load(path, overrides)
  record = run_stage(job.workdir, "erprm",
                     stage_inputs(overrides, path, options=dataclasses.asdict(options)),
                     cli_command("erprm", path, job.workdir, overrides, erprm_flags(options)),
                     lambda: run_erprm(config, job.workdir, options),
                     outputs=[os.path.join("erprm", "best_of_n.json")])
  return {"results": os.path.join("erprm", "best_of_n.json"), "agg": config.algo.erprm.agg,
          "eta": float(config.algo.erprm.eta), "stage": record}


def _best_of_n_without_rl(workdir: str, preset: Preset, configs_dir: str, verbose: bool) -> str:
  """When a gate after the SFT's (G1) stops the arms: the ER-PRM best-of-N experiment, which
  needs the SFT policy only, runs anyway. Returns what to add to the gate's message."""
  if preset.erprm is None or not base_policy_passed(workdir):
    return ""
  result = erprm_job(Job("erprm", workdir, preset, configs_dir,
                         os.path.join(workdir, "sft", "final_hf"), verbose))
  return (f" The ER-PRM best-of-N experiment, which needs no RL, ran: "
          f"{os.path.join(workdir, os.path.dirname(result['results']), 'best_of_n.md')}.")


def planned_jobs(preset: Preset, workdir: str, configs_dir: str, sft_hf: str,
                 start_of: Callable[[str], str], verbose: bool) -> list[Job]:
  """The jobs after the SFT stages: the ER-PRM stage first (the longest job, and the arms in
  `preset.prm_arms` wait for it, with its PRM as their `algo.erprm.prm_dir`), then every arm
  and seed, each from the policy `start_of(arm)`."""
  def rl(method: str, seed: int) -> Job:
    prm = preset.prm_dir(method)
    return Job("rl", workdir, preset, configs_dir, start_of(method), verbose, method, seed,
               (f"algo.erprm.prm_dir={os.path.join(workdir, 'erprm', prm)}",) if prm else (),
               "erprm" if prm else "")

  todo = ([Job("erprm", workdir, preset, configs_dir, sft_hf, verbose)]
          if preset.erprm is not None else [])
  return todo + [rl(m, s) for m in preset.methods for s in preset.seeds]


def run_job(job: Job) -> dict:
  """The entry point of a worker: one Job."""
  return rl_job(job) if job.kind == "rl" else erprm_job(job)


def run_jobs(jobs: Sequence[Job], workers: int, on_done: Callable[[Job, dict], None],
             run: Callable[[Job], dict] = run_job) -> list[tuple[Job, BaseException]]:
  """run(job) for every job, in this process (workers=1) or in `workers` fresh processes (`run`
  then a module-level function), each once the job its `after` names has finished, in the
  given order otherwise.

  A failed job does not stop the others, but the jobs waiting for it fail without running; the
  failures are returned. A run stopped by a signal (`RunInterrupted`) stops them all: it
  propagates, and the jobs not started yet never start.
  """
  pending, finished, failures = list(jobs), {}, []  # finished: key -> succeeded

  def settle(job: Job, result_of: Callable[[], dict]) -> None:
    try:
      on_done(job, result_of())
      finished[job.key] = True
    except RunInterrupted:
      # A run stopped by Ctrl-C or SIGTERM, saved: a stop asked of the reproduction (in this
      # process, the signal was its own), not a failed stage to report while the rest goes on.
      raise
    except Exception as err:  # noqa: BLE001 - reported together after the other jobs ran
      failures.append((job, err))
      finished[job.key] = False

  def take_ready() -> list[Job]:
    ready = []
    for job in list(pending):
      if job.after and finished.get(job.after) is False:
        pending.remove(job)
        failures.append((job, RuntimeError(f"not run: it needs the {job.after} stage, which "
                                           "failed")))
        finished[job.key] = False
      elif not job.after or finished.get(job.after):
        pending.remove(job)
        ready.append(job)
    return ready

  def check_waiting() -> None:
    if pending:  # waits on a job that is not in the list: a bug in the caller
      raise ValueError(f"jobs {[j.key for j in pending]} wait on jobs that never run.")

  if workers <= 1:
    while ready := take_ready():
      for job in ready:
        settle(job, lambda: run(job))
    check_waiting()
    return failures
  # Fresh interpreters (JAX is not fork-safe once initialised; cheap next to a training run)
  # that end with this process.
  with worker_pool(workers) as pool:
    futures = {pool.submit(run, job): job for job in take_ready()}
    while futures:
      done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        settle(futures.pop(future), future.result)
      futures.update({pool.submit(run, job): job for job in take_ready()})
  check_waiting()
  return failures


# ------------------------------------------------------------------------------------------------
# The whole pipeline.


def reproduce(preset: Preset, workdir: str, *, jobs: int = 1, configs_dir: str | None = None,
              verbose: bool = False, command: str | None = None,
              past_failed_gates: bool = False) -> dict:
  """Runs (or resumes) the preset in `workdir`; writes results.json and report.md.

  Args:
    preset: what to run.
    workdir: where everything goes; reusing it skips finished stages.
    jobs: RL runs (and the ER-PRM experiment) in parallel worker processes; 1 runs them here.
    configs_dir: the preset's configs folder (default: the source checkout's configs/<configs>).
    verbose: the progress bars of every run too (steps, problems); the bar over the stages is
      always drawn.
    command: the command line to record (default: the equivalent `prl-jax reproduce`).
    past_failed_gates: with gates, run the arms even when G2 or G3 fails (the report marks the
      claims); a failing G0 or G1 still stops the run.

  Returns:
    The content of results.json.
  """
  if jobs < 1:
    raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
  workdir = paths.normpath(workdir)  # "runs/demo/" and "runs/demo" are one workdir (gs:// too)
  configs_dir = configs_dir or default_configs_dir(preset)
  extra_sfts = list(dict.fromkeys(stage for _, stage in preset.arm_stages))
  needed = ["sft", *extra_sfts, *preset.methods]
  for name in needed:
    config_file(configs_dir, name)  # every config exists before hours of work start
  command = command or shlex.join(
      ["prl-jax", "reproduce", "--preset", preset.name, "--workdir", workdir, "--jobs", str(jobs),
       *(["--past-failed-gates"] if past_failed_gates else [])])
  start = time.perf_counter()
  manifest = {"preset": dataclasses.asdict(preset), "command": command, "workdir": workdir,
              "configs_dir": configs_dir, "runs": [], "erprm": None, "extra_sft": {}}
  if preset.gates is not None:
    # Raises ConfigError naming the knob at the first failing gate: no arm runs on a task
    # where a process reward cannot show (WORKDIR/gates.json keeps what was measured).
    try:
      manifest["gates"] = run_lab_gates(workdir, preset.gates, configs_dir=configs_dir,
                                        verbose=verbose, jobs=jobs,
                                        past_failed_gates=past_failed_gates)
    except ConfigError as err:
      raise ConfigError(f"{err}{_best_of_n_without_rl(workdir, preset, configs_dir, verbose)}")
    clean_sft = read_marker(workdir, f"{CAPACITY}/train")  # G0's, where the SFT stage starts
    if clean_sft is not None:
      manifest["gate_seconds"] = {"clean SFT (G0)": clean_sft["seconds"]}
  # One stage per training run and per evaluation of its policy (plus its KL), and the ER-PRM
  # experiment.
  per_run = 1 + len(preset.splits) + bool(preset.kl_problems)
  per_sft = 1 + len(preset.splits)
  total = (per_sft * (1 + len(extra_sfts)) + per_run * len(preset.methods) * len(preset.seeds)
           + (preset.erprm is not None))
  bar = progress_bar(total, "reproduce", unit="stage")
  manifest["sft"] = sft_stage(workdir, preset, configs_dir, verbose)
  bar.update(per_sft)
  sft_hf = os.path.join(workdir, manifest["sft"]["hf"])
  for name in extra_sfts:
    manifest["extra_sft"][name] = sft_stage(workdir, preset, configs_dir, verbose, name, sft_hf)
    bar.update(per_sft)
  save = lambda: save_results(workdir, manifest)
  save()

  def on_done(job: Job, result: dict) -> None:
    bar.update(per_run if job.kind == "rl" else 1)
    if job.kind == "rl":
      manifest["runs"].append(result)
      manifest["runs"].sort(key=lambda r: (preset.methods.index(r["method"]), r["seed"]))
    else:
      manifest["erprm"] = result
    save()  # after every run, so a report can be made from a partial reproduction

  def start_of(arm: str) -> str:
    stage = preset.init_stage(arm)
    return sft_hf if stage is None else os.path.join(workdir, manifest["extra_sft"][stage]["hf"])

  failures = run_jobs(planned_jobs(preset, workdir, configs_dir, sft_hf, start_of, verbose), jobs,
                      on_done)
  bar.close()
  manifest["wall_seconds_this_call"] = round(time.perf_counter() - start, 1)
  results = save()
  write_report(workdir)
  if failures:
    label = lambda j: f"{j.method} seed {j.seed}" if j.kind == "rl" else j.kind
    names = ", ".join(f"{label(j)}: {e!r}" for j, e in failures)
    raise RuntimeError(f"{len(failures)} stage(s) failed ({names}); the report covers the rest. "
                       "Fix the cause and run the same command again: finished stages are "
                       "skipped.")
  return results
