"""`prl-jax reproduce` and `prl-jax report`: the presets' command line (`prl_jax.cli` dispatches
here)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex

from prl_jax.reproduce import collect, report
from prl_jax.reproduce.presets import PRESETS, get_preset, parse_seeds


def reproduce_command(argv: list[str]) -> None:
  """`prl-jax reproduce`."""
  # Here, not at the top: `prl-jax report` only reads JSON and need not import the training stack.
  from prl_jax.reproduce import pipeline
  from prl_jax.reproduce.lab import GATES_FILE, run_lab_gates
  from prl_jax.reproduce.lab_countdown import CountdownLab, run_lab_countdown
  parser = argparse.ArgumentParser(
      prog="prl-jax reproduce",
      description="SFT once, every RL method and seed on the configs/mini budget, evaluations, "
                  "the ER-PRM best-of-N experiment, then results.json and report.md. Finished "
                  "stages are skipped on a re-run; interrupted RL runs resume.")
  parser.add_argument("--preset", choices=sorted(PRESETS) + ["lab-gates", "lab-countdown"],
                      required=True,
                      help="demo: one seed, 20 steps (~6 min on 2 CPU cores); mini: 4 seeds x "
                           "150 steps (under 3 h); lab-gates: the register-chain lab's SFTs and "
                           "its gates G0-G3 (configs/lab); lab: the gates, then every lab arm x "
                           "3 paired seeds, t-tested claims (~3 h with --jobs 2); lab-demo: "
                           "the lab's oracle control against RLOO at 4 prompts per step, one "
                           "seed x 30 steps (`make demo`); lab-countdown: "
                           "GRPO, GRPO + KL and FRPO on countdown x 4 seeds, pass@k and distinct "
                           "solutions (configs/lab/countdown, docs/lab_countdown.md)")
  parser.add_argument("--workdir", required=True, help="where every stage and the report go")
  parser.add_argument("--jobs", type=int, default=1,
                      help="RL runs in parallel worker processes (default 1: in this process)")
  parser.add_argument("--configs", default=None,
                      help="the preset's configs folder (default: the source checkout's "
                           "configs/mini, or configs/lab for lab)")
  parser.add_argument("--verbose", action="store_true",
                      help="progress bars inside every run too (steps, problems)")
  parser.add_argument("--seeds", default=None,
                      help="comma-separated seeds to run now (default: the preset's); a later "
                           "call with more seeds adds them to the same workdir and report")
  parser.add_argument("--no-erprm", action="store_true",
                      help="leave out the ER-PRM stage and the arms that need its PRMs this "
                           "time (the same command without this flag runs them later)")
  parser.add_argument("--past-failed-gates", action="store_true",
                      help="lab: record a failed G2 or G3 and run the arms anyway (the report "
                           "marks every claim); a failed G0 or G1 still stops the run")
  countdown = parser.add_argument_group(
      "lab-countdown variants", "a 1/eta sweep or longer runs as one command each; with --from, "
      "the SFT and the runs a variant leaves unchanged are linked from the main workdir")
  countdown.add_argument("--kl-weight", type=float, default=None,
                         help="1/eta of both KL arms (FRPO's eta = 1/W, GRPO + KL's k3 "
                              "coefficient = W; default: the configs' 0.1)")
  countdown.add_argument("--rl-steps", type=int, default=None,
                         help="RL steps of every run (default 40)")
  countdown.add_argument("--from", dest="base", default=None, metavar="WORKDIR",
                         help="an earlier lab-countdown workdir: its SFT and every run this "
                              "call would repeat with the same inputs are linked, not retrained")
  args = parser.parse_args(argv)
  variant = {"--kl-weight": args.kl_weight, "--rl-steps": args.rl_steps, "--from": args.base}
  if args.preset != "lab-countdown" and any(v is not None for v in variant.values()):
    parser.error(f"{', '.join(k for k, v in variant.items() if v is not None)}: options of "
                 f"--preset lab-countdown only")
  if args.preset == "lab-gates":
    measured = run_lab_gates(args.workdir, verbose=args.verbose, jobs=args.jobs,
                             past_failed_gates=args.past_failed_gates)
    failed = [g["name"] for g in measured if not g["passed"]]
    print(f"{'failed: ' + ', '.join(failed) if failed else 'every lab gate passed'}: "
          f"{os.path.join(args.workdir, GATES_FILE)}")
    return
  if args.preset == "lab-countdown":
    options = CountdownLab(kl_weight=args.kl_weight)
    if args.rl_steps is not None:
      options = dataclasses.replace(options, rl_steps=args.rl_steps)
    run_lab_countdown(args.workdir, options, jobs=args.jobs, verbose=args.verbose, base=args.base)
    print(f"report: {os.path.join(args.workdir, 'report.md')}")
    return
  preset = get_preset(args.preset)
  if args.seeds is not None:
    preset = dataclasses.replace(preset, seeds=parse_seeds(args.seeds))
  if args.no_erprm:
    preset = preset.without_erprm()
  results = pipeline.reproduce(
      preset, args.workdir, jobs=args.jobs, configs_dir=args.configs, verbose=args.verbose,
      command=shlex.join(["prl-jax", "reproduce", *argv]),
      past_failed_gates=args.past_failed_gates)
  print(report.main_table(results["aggregates"], results))
  print(f"wall time of this call: {results['wall_seconds_this_call']:.0f}s")
  print(f"report: {os.path.join(args.workdir, report.REPORT_FILE)}")


def report_command(argv: list[str]) -> None:
  """`prl-jax report`."""
  parser = argparse.ArgumentParser(
      prog="prl-jax report",
      description="Writes WORKDIR/report.md and WORKDIR/plots/*.png again from the JSON files "
                  "of a `prl-jax reproduce` workdir (nothing is run).")
  parser.add_argument("workdir", help="a `prl-jax reproduce` workdir (holding results.json)")
  args = parser.parse_args(argv)
  path = report.write_report(args.workdir)
  manifest = collect.load_results(args.workdir)
  print(report.main_table(collect.collect(args.workdir, manifest), manifest))
  print(f"report: {path}")
