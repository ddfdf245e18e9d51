"""`prl-jax reproduce --preset lab-gates`: the process-reward lab (register chains) up to its gates.

    prl-jax reproduce --preset lab-gates --workdir runs/lab

  1. SFT of the lab policy on the clean demonstrator      -> WORKDIR/capacity_sft   G0
  2. (1) continued on the buggy demonstrator (every arm   -> WORKDIR/sft            G1
     starts here)
  3. RLOO and the oracle control from (2), seed 0         -> WORKDIR/rl/<m>/seed0   G2
  4. PRIME from (2), seed 0                               -> WORKDIR/rl/prime/seed0 G3

configs/lab/<name>.py are used unchanged but for the starting policy, step count, seed and
logging. Each gate (`prl_jax.reproduce.gates`) is written to WORKDIR/gates.json as soon as it is
measured, and the first one that fails stops the run with the knob to turn: the learned-PRM arms
are only worth running on a task where the gates pass. With `past_failed_gates`
(`--past-failed-gates`) a failed G2 or G3 is recorded and the run goes on, so the arms can be
measured and reported beside the failed control; G0 and G1 always stop it. Finished stages are
skipped on a re-run (`pipeline.run_stage`).
"""

from __future__ import annotations

import copy
import dataclasses
import json

from prl_jax.config import ConfigError
from prl_jax.data import register
from prl_jax.eval.evaluate import evaluate, load_policy
from prl_jax.progress import say
from prl_jax.reproduce import gates
from prl_jax.reproduce.collect import write_json_atomic
from prl_jax.reproduce.gates import BASE_POLICY, SFT_GATES, LabGates
from prl_jax.reproduce.stages import (checkout_configs, cli_command, config_file, in_parallel,
                                      load, logging_overrides, run_stage, stage_inputs)
from prl_jax.run import paths
from prl_jax.run.context import build_context
from prl_jax.run.metrics_file import read_metrics
from prl_jax.train.loop import train
from prl_jax.train.sft import sft

GATES_FILE = "gates.json"
CAPACITY = "capacity_sft"  # the clean SFT's stage: G0, and where the buggy SFT starts


__all__ = ["GATES_FILE", "LabGates", "base_policy_passed", "gate_sft_overrides",
           "gate_rl_overrides", "run_lab_gates"]


def lab_configs_dir() -> str:
  """configs/lab of the source checkout this package is installed from."""
  return checkout_configs("lab")


def _sft_stage_overrides(options: LabGates, verbose: bool) -> list[str]:
  """What both gate SFTs change: every stage's overrides, the eval split's size, logging."""
  return [*options.overrides, f"eval.num_problems={options.eval_problems}",
          f"task.num_eval={options.eval_problems}", *logging_overrides(verbose)]


def capacity_overrides(options: LabGates, verbose: bool) -> list[str]:
  """What the G0 SFT (configs/lab/sft_clean.py, the clean demonstrator) changes."""
  return [*_sft_stage_overrides(options, verbose), *options.clean_sft_overrides]


def gate_sft_overrides(options: LabGates, verbose: bool, workdir: str) -> list[str]:
  """What the G1 SFT (every arm's starting policy) changes in configs/lab/sft.py: it continues
  WORKDIR/capacity_sft. The `lab` preset's SFT stage uses exactly these, so it is this stage,
  not a second SFT."""
  return [*_sft_stage_overrides(options, verbose), *options.sft_overrides,
          f"init_from={paths.join(workdir, CAPACITY, 'final_hf')}"]


def gate_rl_overrides(options: LabGates, sft_hf: str, verbose: bool) -> list[str]:
  """What a gate's RL run changes in configs/lab/<arm>.py. They differ from the `lab` preset's
  seed-0 runs only in keys a resume may change (train.steps, checkpoint.save_hf, log.*), so the
  preset continues these runs instead of training them again."""
  return [*options.overrides, f"init_from={sft_hf}", f"train.steps={options.rl_steps}", "seed=0",
          *logging_overrides(verbose)]


def _evaluate(config, workdir: str, hf_dir: str, n: int) -> tuple[dict, list[dict], list[dict]]:
  """(summary, records with the sampled "responses", problems) of `hf_dir` on the eval split."""
  ctx = build_context(config, workdir)
  policy = load_policy(ctx, hf_dir)
  examples = ctx.eval_examples[:config.eval.num_problems]
  results = evaluate(policy.params, policy.model_cfg, policy.tokenizer, examples, ctx.verifier,
                     n=n, temperature=config.eval.temperature,
                     max_new_tokens=config.rollout.max_new_tokens, seed=config.seed,
                     keep_responses=True)
  return results["summary"], results["records"], examples


def _sft_gate(workdir: str, name: str, config: str, overrides: list[str], configs: str,
              gate_fn) -> dict:
  """SFT with <configs>/<config>.py into WORKDIR/<name> (a stage), then its gate, measured once
  and kept in <name>/gate.json."""
  path = config_file(configs, config)
  run_dir = paths.join(workdir, name)
  _sft_train(workdir, name, config, overrides, configs)
  saved = paths.join(run_dir, "gate.json")
  if paths.exists(saved):
    return json.loads(paths.read_text(saved))
  gate = gate_fn(load(path, overrides), run_dir, paths.join(run_dir, "final_hf"))
  write_json_atomic(saved, gate)
  return gate


def full_length(config):
  """A copy of `config` whose chains all have task.max_ops operations: the clean SFT trains on
  chains of 2-12 operations (configs/lab/sft_clean.py), and G0 asks about the longest, the
  held-out split's length."""
  config = copy.deepcopy(config)
  config.task.min_ops = config.task.max_ops
  return config


def _capacity(config, run_dir: str, hf_dir: str) -> dict:
  _, records, examples = _evaluate(full_length(config), run_dir, hf_dir, n=1)
  return gates.capacity_gate(register.step_accuracy([r["greedy_response"] for r in records],
                                                    examples))


def _base_policy(config, run_dir: str, hf_dir: str) -> dict:
  summary, records, examples = _evaluate(config, run_dir, hf_dir, n=8)
  reg = config.task.register
  rates = register.line_error_rates([t for r in records for t in r["responses"]],
                                    [ex for ex in examples for _ in range(8)],
                                    register.configured_bugs(reg))
  return gates.base_policy_gate(summary["mean@8"], summary["pass@8"], rates,
                                slip_rate=reg.slip_rate, bug_rate=reg.bug_rate)


def _sft_train(workdir: str, name: str, config: str, overrides: list[str], configs: str) -> None:
  """The SFT stage WORKDIR/<name> with <configs>/<config>.py (skipped when finished)."""
  path = config_file(configs, config)
  run_dir = paths.join(workdir, name)
  run_stage(workdir, f"{name}/train", stage_inputs(overrides, path),
            cli_command("sft", path, run_dir, overrides),
            lambda: sft(load(path, overrides), run_dir),
            outputs=[f"{name}/final_hf/config.json"])


def _rl_train(workdir: str, method: str, sft_hf: str, options: LabGates, configs: str,
              verbose: bool) -> None:
  """The gate's RL stage rl/<method>/seed0 (skipped when finished)."""
  path = config_file(configs, method)
  overrides = gate_rl_overrides(options, sft_hf, verbose)
  rel = paths.join("rl", method, "seed0")
  run_dir = paths.join(workdir, rel)
  run_stage(workdir, f"{rel}/train", stage_inputs(overrides, path),
            cli_command("train", path, run_dir, overrides),
            lambda: train(load(path, overrides), run_dir), outputs=[f"{rel}/metrics.jsonl"])


def _rl_rows(workdir: str, method: str, sft_hf: str, options: LabGates, configs: str,
             verbose: bool) -> list[dict]:
  _rl_train(workdir, method, sft_hf, options, configs, verbose)
  return read_metrics(paths.join(workdir, "rl", method, "seed0", "metrics.jsonl"))


def base_policy_passed(workdir: str) -> bool:
  """Whether WORKDIR/gates.json records G1 (the SFT policy every arm starts from) as passed."""
  path = paths.join(workdir, GATES_FILE)
  if not paths.exists(path):
    return False
  recorded = json.loads(paths.read_text(path))["gates"]
  return any(g["name"] == BASE_POLICY and g["passed"] for g in recorded)


def run_lab_gates(workdir: str, options: LabGates = LabGates(), *, configs_dir: str | None = None,
                  verbose: bool = False, jobs: int = 1,
                  past_failed_gates: bool = False) -> list[dict]:
  """Runs (or resumes) the gate stages; returns the gates measured. Raises ConfigError naming the
  knob to turn at the first failing gate (WORKDIR/gates.json holds every gate so far), or, with
  `past_failed_gates`, only at a failing gate of the SFT policies (G0, G1).

  The buggy SFT continues the clean one, so the two run in turn. With jobs > 1 the three RL runs
  train side by side (PRIME's may then be trained although G2 fails); the gates are still
  measured and recorded in order.
  """
  configs = configs_dir or lab_configs_dir()
  workdir = paths.normpath(workdir)
  measured: list[dict] = []

  def record(gate: dict) -> None:
    measured.append(gate)
    write_json_atomic(paths.join(workdir, GATES_FILE), {"gates": measured,
                                                          "options": dataclasses.asdict(options)})
    value = json.dumps(gate["value"])
    say(f"[lab] {gate['name']}: {value} ({gate['threshold']}): "
        f"{'passed' if gate['passed'] else 'FAILED'}")
    if gate["passed"]:
      return
    message = (f"lab gate {gate['name']} failed: {value}, needs {gate['threshold']}; "
               f"turn {gate['knob']} (details in {GATES_FILE}).")
    if gate["name"] in SFT_GATES:
      raise ConfigError(message)
    if not past_failed_gates:
      raise ConfigError(f"{message} To measure the arms on this task anyway, run the same "
                        "command with --past-failed-gates.")
    say(f"[lab] {message} Going on (--past-failed-gates): the report marks every claim as "
        "measured beside a failed gate.")

  sft_hf = paths.join(workdir, "sft", "final_hf")
  record(_sft_gate(workdir, CAPACITY, "sft_clean", capacity_overrides(options, verbose), configs,
                   _capacity))
  record(_sft_gate(workdir, "sft", "sft", gate_sft_overrides(options, verbose, workdir), configs,
                   _base_policy))
  if jobs > 1:
    in_parallel(_rl_train, [(workdir, m, sft_hf, options, configs, verbose)
                            for m in ("rloo", "oracle", "prime")], jobs)
  rloo = _rl_rows(workdir, "rloo", sft_hf, options, configs, verbose)
  oracle = _rl_rows(workdir, "oracle", sft_hf, options, configs, verbose)
  record(gates.oracle_gate(rloo, oracle, at_step=options.gate_step, window=options.window))
  prime = _rl_rows(workdir, "prime", sft_hf, options, configs, verbose)
  record(gates.prime_auroc_gate(prime, window=options.window))
  return measured
