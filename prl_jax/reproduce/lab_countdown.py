"""`prl-jax reproduce --preset lab-countdown`: FRPO's exploration claim on countdown.

    prl-jax reproduce --preset lab-countdown --workdir runs/lab_countdown [--jobs 2]

  1. SFT on the uniform demonstrator (configs/lab/countdown/sft.py)      -> WORKDIR/sft
  2. its exploration measures (the base policy; KL to itself is 0)      -> sft/explore.json
  3. GRPO, GRPO + k3 KL loss, FRPO x seeds from (1)                       -> rl/<arm>/seed<s>
  4. each run's exploration measures (`prl_jax.eval.exploration`)        -> <run>/explore.json
  5. WORKDIR/results.json and report.md (`lab_countdown_report`): mean ± std over seeds, paired
     t-tests of FRPO against each control on pass@1, pass@64, distinct solutions, entropy, KL.

configs/lab/countdown/<arm>.py are used unchanged but for the starting policy, step count, seed
and logging. A seed's three arms share the SFT policy and the prompt order, so they are paired.
Finished stages are skipped on a re-run (`stages.run_stage`); a killed RL run resumes.
"""

from __future__ import annotations

import dataclasses
import os

from prl_jax.config import ConfigError
from prl_jax.eval.exploration import EXPLORE_FILE, run_exploration
from prl_jax.reproduce import lab_countdown_report
from prl_jax.reproduce.stages import (checkout_configs, cli_command, config_file, in_parallel,
                                      load, logging_overrides, read_marker, run_stage,
                                      stage_inputs)
from prl_jax.run import paths
from prl_jax.train.loop import train
from prl_jax.train.sft import sft

ARMS = ("grpo", "grpo_kl", "frpo")


@dataclasses.dataclass(frozen=True)
class CountdownLab:
  """The size of the sub-lab (docs/lab_countdown.md), cut to what a shared 2-core CPU runs in
  about an hour per seed and arm set: every run compiles, trains and samples 64 x 64 eval
  responses (the times are in docs/lab_countdown.md).

  Attributes:
    arms: configs/lab/countdown/<arm>.py each.
    seeds: RL seeds; every arm runs every seed.
    rl_steps: train.steps of every RL run.
    eval_problems: eval problems of the exploration measures.
    eval_n: samples per problem (pass@k for k = 1..eval_n).
    kl_problems, kl_n: problems and samples per problem of the entropy and KL estimate.
    window: the last steps of training whose `policy/entropy` and reward the report averages.
    overrides: config overrides of every stage (e.g. a smaller task for a test).
    kl_weight: 1/eta of both KL arms (FRPO's KL-to-go, the k3 loss's coefficient); None keeps
      the configs' 0.1 (`prl-jax reproduce --preset lab-countdown --kl-weight W`).
  """

  arms: tuple[str, ...] = ARMS
  seeds: tuple[int, ...] = (0, 1, 2, 3)
  rl_steps: int = 40
  eval_problems: int = 64
  eval_n: int = 64
  kl_problems: int = 32
  kl_n: int = 8
  window: int = 10
  overrides: tuple[str, ...] = ()
  kl_weight: float | None = None

  def __post_init__(self):
    if self.kl_weight is not None and not self.kl_weight > 0:
      raise ConfigError(f"kl_weight={self.kl_weight}: 1/eta must be > 0 (the configs use 0.1).")
    if self.rl_steps < 1:
      raise ConfigError(f"rl_steps={self.rl_steps}: every run needs at least one RL step.")


def configs_dir() -> str:
  """configs/lab/countdown of the source checkout."""
  return checkout_configs(os.path.join("lab", "countdown"))


def explore_stage(workdir: str, rel: str, path: str, overrides: list[str], model: str,
                  reference: str, options: CountdownLab) -> str:
  """The exploration measures of `model` against `reference` -> <rel>/explore.json."""
  out = os.path.join(rel, EXPLORE_FILE)
  sizes = dict(num_problems=options.eval_problems, n=options.eval_n,
               kl_problems=options.kl_problems, kl_n=options.kl_n)
  command = cli_command("explore", path, os.path.join(workdir, rel), overrides,
                        ["--model", model, "--reference", reference,
                         "--problems", str(options.eval_problems), "--n", str(options.eval_n),
                         "--kl-problems", str(options.kl_problems), "--kl-n", str(options.kl_n),
                         "--out", os.path.join(workdir, out)])
  fn = lambda: run_exploration(load(path, overrides), os.path.join(workdir, rel), model_dir=model,
                               reference_dir=reference, out_path=os.path.join(workdir, out),
                               **sizes)
  inputs = stage_inputs(overrides, path, model=model, reference=reference, **sizes)
  run_stage(workdir, f"{rel}/explore", inputs, command, fn, outputs=[out])
  return out


def link_finished(base: str, workdir: str, rel: str, inputs: dict) -> bool:
  """Links BASE/rel and its stage markers into WORKDIR when BASE's `rel/train` stage finished
  with these very inputs: a variant of the sub-lab (another weight, more steps) shares the SFT
  and the runs it leaves unchanged instead of training them again. True when WORKDIR/rel is
  (now) that link; local, absolute folders only."""
  here, there = os.path.join(workdir, rel), os.path.join(base, rel)
  if os.path.islink(here):
    return os.path.realpath(here) == os.path.realpath(there)
  record = read_marker(base, f"{rel}/train")
  if os.path.exists(here) or record is None or record.get("inputs") != inputs:
    return False
  for folder in (rel, os.path.join("stages", rel)):
    os.makedirs(os.path.dirname(os.path.join(workdir, folder)), exist_ok=True)
    os.symlink(os.path.join(base, folder), os.path.join(workdir, folder))
  return True


def sft_stage(workdir: str, options: CountdownLab, verbose: bool, base: str | None = None) -> str:
  """The SFT (skipped when finished, or BASE's when it ran with the same inputs) and its
  exploration measures; returns its final_hf."""
  configs = configs_dir()
  path = config_file(configs, "sft")
  overrides = [*options.overrides, *logging_overrides(verbose)]
  inputs = stage_inputs(overrides, path)
  linked = base is not None and link_finished(base, workdir, "sft", inputs)
  # A linked SFT keeps BASE's path: the runs' init_from, and so their inputs, match BASE's.
  run_dir = os.path.join(base if linked else workdir, "sft")
  hf = os.path.join(run_dir, "final_hf")
  run_stage(workdir, "sft/train", inputs,
            cli_command("sft", path, run_dir, overrides),
            lambda: sft(load(path, overrides), run_dir),
            outputs=["sft/final_hf/config.json", "sft/final_hf/model.safetensors"])
  explore_stage(workdir, "sft", path, overrides, hf, hf, options)
  return hf


def kl_weight_overrides(arm: str, weight: float | None) -> list[str]:
  """1/eta = weight for a KL arm: FRPO's eta = 1/weight, the k3 loss's coefficient = weight
  (the two configs tie them, configs/lab/countdown/grpo_kl.py); GRPO has no weight."""
  if weight is None:
    return []
  return {"frpo": [f"algo.prl.eta={1.0 / weight!r}"],
          "grpo_kl": [f"algo.loss.kl_coef={weight!r}"]}.get(arm, [])


def rl_overrides(options: CountdownLab, arm: str, sft_hf: str, seed: int,
                 verbose: bool) -> list[str]:
  """What an arm's run changes in its config: its KL weight, start, length, seed, export,
  logging."""
  return [*options.overrides, *kl_weight_overrides(arm, options.kl_weight), f"init_from={sft_hf}",
          f"train.steps={options.rl_steps}", f"seed={seed}", "checkpoint.save_hf=true",
          *logging_overrides(verbose)]


def rl_run(workdir: str, arm: str, seed: int, sft_hf: str, options: CountdownLab,
           verbose: bool, base: str | None = None) -> None:
  """One arm and seed: training (resumed when interrupted; BASE's run when it trained with the
  same inputs), then its exploration measures."""
  path = config_file(configs_dir(), arm)
  overrides = rl_overrides(options, arm, sft_hf, seed, verbose)
  rel = os.path.join("rl", arm, f"seed{seed}")
  inputs = stage_inputs(overrides, path)
  linked = base is not None and link_finished(base, workdir, rel, inputs)
  run_dir = os.path.join(base if linked else workdir, rel)
  run_stage(workdir, f"{rel}/train", inputs,
            cli_command("train", path, run_dir, overrides),
            lambda: train(load(path, overrides), run_dir),
            outputs=[f"{rel}/final_hf/config.json", f"{rel}/metrics.jsonl"])
  explore_stage(workdir, rel, path, overrides, os.path.join(run_dir, "final_hf"), sft_hf, options)


def run_lab_countdown(workdir: str, options: CountdownLab = CountdownLab(), *, jobs: int = 1,
                      verbose: bool = False, base: str | None = None) -> dict:
  """Runs (or resumes) every stage, then writes results.json and report.md; returns the results.

  Runs are ordered seed by seed (all arms of seed 0 first), so a stopped reproduction leaves
  complete pairs behind. `base`: an earlier sub-lab workdir whose SFT and runs are linked, not
  retrained, where this call would run them with the same inputs (e.g. GRPO in a weight sweep).
  """
  # Absolute: the stages' inputs hold the SFT's path, and a later variant's `base` must match it.
  workdir = paths.normpath(workdir if paths.is_url(workdir) else os.path.abspath(workdir))
  if base is not None:
    if paths.is_url(workdir) or paths.is_url(base):
      raise ConfigError("--from links runs into the workdir: both must be local folders.")
    base = os.path.abspath(base)
  sft_hf = sft_stage(workdir, options, verbose, base)
  calls = [(workdir, arm, seed, sft_hf, options, verbose, base)
           for seed in options.seeds for arm in options.arms]
  if jobs > 1:
    in_parallel(rl_run, calls, jobs)
  else:
    for call in calls:
      rl_run(*call)
  return lab_countdown_report.write(workdir, options.arms, options.seeds,
                                    dataclasses.asdict(options))
