"""`prl-jax reproduce`: every method on one budget, evaluated, compared with the papers' claims.

    prl-jax reproduce --preset demo --workdir runs/demo   # one seed, few steps (~6 min, 2 CPUs)
    prl-jax reproduce --preset mini --workdir runs/mini   # 4 seeds x 150 steps (< 3 h)

The pipeline (a preset says how big each part is):
  1. SFT of the tiny policy with configs/mini/sft.py                   -> WORKDIR/sft/final_hf
  2. every RL method and seed: configs/mini/<method>.py unchanged but for the starting policy,
     the step count, the seed, the HF export and logging (equal budgets, no per-method tuning)
                                                                       -> WORKDIR/rl/<m>/seed<k>
  3. every final policy (and the SFT one) on the eval split and on the held-out longer chains:
     mean@n, pass@n, greedy                                            -> <run>/eval{,_heldout}
  4. the ER-PRM best-of-N experiment from the same SFT policy          -> WORKDIR/erprm
  5. WORKDIR/results.json and WORKDIR/report.md (`prl_jax.reproduce.collect`, `.report`).

Every stage leaves a marker WORKDIR/stages/<stage>.json (its wall time, equivalent command and
inputs) when it finishes, and is skipped when its marker holds the same inputs, so a killed
`reproduce` restarts where it stopped: finished stages are skipped and an interrupted RL run
resumes from its last checkpoint (the training loop does that by itself).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shlex
import time
from collections.abc import Callable, Sequence

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.eval.evaluate import default_out_dir, run_eval
from prl_jax.eval.prm_experiment import ErprmOptions, run_erprm
from prl_jax.eval.summary import RESULTS_JSON
from prl_jax.progress import progress_bar, say
from prl_jax.reproduce.collect import save_results, write_json_atomic
from prl_jax.reproduce.presets import SPLITS, Preset
from prl_jax.reproduce.report import write_report
from prl_jax.train.loop import train
from prl_jax.train.sft import sft


# ------------------------------------------------------------------------------------------------
# Stage markers: what finished, how long it took, how to run it alone.


def stage_marker(workdir: str, stage: str) -> str:
  """WORKDIR/stages/<stage>.json (stage names use "/" to nest, e.g. "rl/rloo/seed0/train")."""
  return os.path.join(workdir, "stages", stage + ".json")


def read_marker(workdir: str, stage: str) -> dict | None:
  """The finished stage's record, or None when it has not finished."""
  path = stage_marker(workdir, stage)
  if not os.path.exists(path):
    return None
  with open(path) as fh:
    return json.load(fh)


def run_stage(workdir: str, stage: str, inputs: dict, command: str, fn: Callable[[], object],
              outputs: Sequence[str] = ()) -> dict:
  """Runs `fn` unless the stage already finished with the same `inputs` and its outputs exist.

  Returns the stage record {"stage", "inputs", "command", "seconds", "cached"}; "seconds" is the
  wall time of the run that produced the outputs (also when this call skipped it).
  """
  record = read_marker(workdir, stage)
  if (record is not None and record.get("inputs") == inputs
      and all(os.path.exists(os.path.join(workdir, p)) for p in outputs)):
    say(f"[reproduce] {stage}: finished earlier ({record['seconds']:.0f}s), skipped")
    return {**record, "cached": True}
  say(f"[reproduce] {stage}: running")
  start = time.perf_counter()
  fn()
  record = {"stage": stage, "inputs": inputs, "command": command,
            "seconds": round(time.perf_counter() - start, 3)}
  write_json_atomic(stage_marker(workdir, stage), record)
  say(f"[reproduce] {stage}: done in {record['seconds']:.0f}s")
  return {**record, "cached": False}


# ------------------------------------------------------------------------------------------------
# Configs and the equivalent commands.


def default_configs_dir() -> str:
  """configs/mini of the source checkout this package is installed from."""
  checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(checkout, "configs", "mini")  # this file is prl_jax/reproduce/pipeline.py


def config_file(configs_dir: str, name: str) -> str:
  """configs_dir/<name>.py, relative to the current directory when it lies below it."""
  path = os.path.join(configs_dir, f"{name}.py")
  relative = os.path.relpath(path)
  path = path if relative.startswith(os.pardir) else relative
  if not os.path.isfile(path):
    raise ConfigError(f"{path!r} does not exist: `reproduce` reads configs/mini/<method>.py from "
                      f"the source checkout; pass --configs DIR pointing at configs/mini.")
  return path


def load(path: str, overrides: Sequence[str]):
  """The config file with `a.b=value` overrides applied."""
  return apply_overrides(load_config_file(path), list(overrides))


def stage_inputs(overrides: Sequence[str], **more) -> dict:
  """What decides a stage's outputs: its overrides (logging ones aside) and `more`."""
  return {"overrides": [o for o in overrides if not o.startswith("log.")], **more}


def logging_overrides(verbose: bool) -> list[str]:
  """TensorBoard files in every run's workdir (as a single `prl-jax train` writes them); per-run
  progress bars only when asked (runs are many and short)."""
  return [f"log.progress={str(verbose).lower()}", "log.tensorboard=true"]


def sft_overrides(preset: Preset, verbose: bool) -> list[str]:
  """What the SFT stage (and the SFT policy's evals) change in configs/mini/sft.py."""
  return [*preset.overrides, *preset.sft_overrides, *logging_overrides(verbose)]


def rl_overrides(preset: Preset, sft_hf: str, seed: int, verbose: bool) -> list[str]:
  """What an RL run changes in configs/mini/<method>.py: the same for every method."""
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
  return out


def cli_command(command: str, config: str, workdir: str, overrides: Sequence[str],
                extra: Sequence[str] = ()) -> str:
  """The `prl-jax` command line that runs one stage on its own."""
  args = ["prl-jax", command, "--config", config, "--workdir", workdir, *extra]
  args += [f"--config.{o}" for o in overrides]
  return shlex.join(args)


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
  sft_hf: str
  verbose: bool
  method: str = ""
  seed: int = 0


def evaluate_stage(workdir: str, stage: str, config_path: str, base_overrides: Sequence[str],
                   run_dir: str, model_dir: str, preset: Preset, split: str) -> dict:
  """Evaluates `model_dir` on `split`, writing <run_dir>/eval{,_heldout}/results.json."""
  overrides = [*base_overrides, *eval_overrides(preset, split)]
  out_dir = default_out_dir(run_dir, split)
  command = cli_command("eval", config_path, run_dir, overrides,
                        ["--model", model_dir, "--split", split])
  fn = lambda: run_eval(load(config_path, overrides), run_dir, model_dir=model_dir, split=split,
                        out_dir=out_dir)
  record = run_stage(workdir, stage, stage_inputs(overrides, model=model_dir), command, fn,
                     outputs=[os.path.relpath(os.path.join(out_dir, RESULTS_JSON), workdir)])
  return {**record, "results": os.path.relpath(os.path.join(out_dir, RESULTS_JSON), workdir)}


def sft_stage(workdir: str, preset: Preset, configs_dir: str, verbose: bool) -> dict:
  """SFT once (skipped when WORKDIR/sft/final_hf is complete), then its evals."""
  path = config_file(configs_dir, "sft")
  overrides = sft_overrides(preset, verbose)
  sft_dir = os.path.join(workdir, "sft")
  hf_dir = os.path.join(sft_dir, "final_hf")
  train = run_stage(workdir, "sft/train", stage_inputs(overrides),
                    cli_command("sft", path, sft_dir, overrides),
                    lambda: sft(load(path, overrides), sft_dir),
                    outputs=["sft/final_hf/config.json", "sft/final_hf/model.safetensors"])
  evals = {split: evaluate_stage(workdir, f"sft/{split}", path, overrides, sft_dir, hf_dir,
                                 preset, split) for split in SPLITS}
  return {"dir": "sft", "hf": os.path.relpath(hf_dir, workdir), "train": train, "evals": evals}


def rl_job(job: Job) -> dict:
  """Trains one method and seed (resuming an interrupted run), then evaluates the final policy."""
  path = config_file(job.configs_dir, job.method)
  overrides = rl_overrides(job.preset, job.sft_hf, job.seed, job.verbose)
  rel = os.path.join("rl", job.method, f"seed{job.seed}")
  run_dir = os.path.join(job.workdir, rel)
  record = run_stage(job.workdir, f"{rel}/train", stage_inputs(overrides),
                     cli_command("train", path, run_dir, overrides),
                     lambda: train(load(path, overrides), run_dir),
                     outputs=[f"{rel}/final_hf/config.json", f"{rel}/metrics.jsonl"])
  hf_dir = os.path.join(run_dir, "final_hf")
  evals = {split: evaluate_stage(job.workdir, f"{rel}/{split}", path, overrides, run_dir, hf_dir,
                                 job.preset, split) for split in SPLITS}
  return {"method": job.method, "seed": job.seed, "dir": rel,
          "metrics": os.path.join(rel, "metrics.jsonl"), "train": record, "evals": evals}


def erprm_job(job: Job) -> dict:
  """Monte Carlo labels, ER-PRM / hard / soft / outcome PRMs and best-of-N from the SFT policy."""
  path = config_file(job.configs_dir, "sft")
  overrides = [*job.preset.overrides, *job.preset.erprm_overrides, f"init_from={job.sft_hf}",
               *logging_overrides(job.verbose)]
  options = job.preset.erprm
  config = load(path, overrides)
  record = run_stage(job.workdir, "erprm",
                     stage_inputs(overrides, options=dataclasses.asdict(options)),
                     cli_command("erprm", path, job.workdir, overrides, erprm_flags(options)),
                     lambda: run_erprm(config, job.workdir, options),
                     outputs=[os.path.join("erprm", "best_of_n.json")])
  return {"results": os.path.join("erprm", "best_of_n.json"), "agg": config.algo.erprm.agg,
          "eta": float(config.algo.erprm.eta), "stage": record}


def run_job(job: Job) -> dict:
  """The entry point of a worker: one Job."""
  return rl_job(job) if job.kind == "rl" else erprm_job(job)


def run_jobs(jobs: Sequence[Job], workers: int, on_done: Callable[[Job, dict], None]
             ) -> list[tuple[Job, BaseException]]:
  """Runs the jobs in this process (workers=1) or in `workers` fresh processes.

  A failed job does not stop the others; the failures are returned.
  """
  failures = []
  if workers <= 1:
    for job in jobs:
      try:
        on_done(job, run_job(job))
      except Exception as err:  # noqa: BLE001 - reported together after the other jobs ran
        failures.append((job, err))
    return failures
  # "spawn": JAX is not fork-safe once initialised, and a fresh interpreter per worker is cheap
  # next to a training run.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    futures = {pool.submit(run_job, job): job for job in jobs}
    for future in concurrent.futures.as_completed(futures):
      job = futures[future]
      try:
        on_done(job, future.result())
      except Exception as err:  # noqa: BLE001
        failures.append((job, err))
  return failures


# ------------------------------------------------------------------------------------------------
# The whole pipeline.


def reproduce(preset: Preset, workdir: str, *, jobs: int = 1, configs_dir: str | None = None,
              verbose: bool = False, command: str | None = None) -> dict:
  """Runs (or resumes) the preset in `workdir`; writes results.json and report.md.

  Args:
    preset: what to run.
    workdir: where everything goes; reusing it skips finished stages.
    jobs: RL runs (and the ER-PRM experiment) in parallel worker processes; 1 runs them here.
    configs_dir: the configs/mini folder (default: the source checkout's).
    verbose: the progress bars of every run too (steps, problems); the bar over the stages is
      always drawn.
    command: the command line to record (default: the equivalent `prl-jax reproduce`).

  Returns:
    The content of results.json.
  """
  if jobs < 1:
    raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
  workdir = os.path.normpath(workdir)  # "runs/demo/" and "runs/demo" are one workdir
  configs_dir = configs_dir or default_configs_dir()
  for name in ("sft", *preset.methods):
    config_file(configs_dir, name)  # every config exists before hours of work start
  command = command or shlex.join(["prl-jax", "reproduce", "--preset", preset.name,
                                   "--workdir", workdir, "--jobs", str(jobs)])
  start = time.perf_counter()
  manifest = {"preset": dataclasses.asdict(preset), "command": command, "workdir": workdir,
              "configs_dir": configs_dir, "runs": [], "erprm": None}
  # One stage per training run and per evaluation of its policy, plus the ER-PRM experiment.
  per_run = 1 + len(SPLITS)
  bar = progress_bar(per_run * (1 + len(preset.methods) * len(preset.seeds)) + 1, "reproduce",
                     unit="stage")
  manifest["sft"] = sft_stage(workdir, preset, configs_dir, verbose)
  bar.update(per_run)
  sft_hf = os.path.join(workdir, manifest["sft"]["hf"])
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

  todo = [Job("rl", workdir, preset, configs_dir, sft_hf, verbose, m, s)
          for m in preset.methods for s in preset.seeds]
  todo.append(Job("erprm", workdir, preset, configs_dir, sft_hf, verbose))
  failures = run_jobs(todo, jobs, on_done)
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
