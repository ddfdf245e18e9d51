"""`prl-jax reproduce --preset lab-gates`: the process-reward lab (register chains) up to its gates.

    prl-jax reproduce --preset lab-gates --workdir runs/lab

  1. SFT of the lab policy on the clean demonstrator      -> WORKDIR/capacity_sft   G0
  2. SFT on the buggy demonstrator (every arm starts here) -> WORKDIR/sft            G1
  3. RLOO and the oracle control from (2), seed 0         -> WORKDIR/rl/<m>/seed0   G2
  4. PRIME from (2), seed 0                               -> WORKDIR/rl/prime/seed0 G3

configs/lab/<name>.py are used unchanged but for the starting policy, step count, seed and
logging. Each gate (`prl_jax.reproduce.gates`) is written to WORKDIR/gates.json as soon as it is
measured, and the first one that fails stops the run with the knob to turn: the learned-PRM arms
are only worth running on a task where the gates pass. Finished stages are skipped on a re-run
(`pipeline.run_stage`).
"""

from __future__ import annotations

import dataclasses
import json
import os

from prl_jax.config import ConfigError
from prl_jax.data import register
from prl_jax.eval.evaluate import evaluate, load_policy
from prl_jax.progress import say
from prl_jax.reproduce import gates
from prl_jax.reproduce.collect import write_json_atomic
from prl_jax.reproduce.pipeline import (cli_command, config_file, load, logging_overrides,
                                        run_stage, stage_inputs)
from prl_jax.run.context import build_context
from prl_jax.run.metrics_file import read_metrics
from prl_jax.train.loop import train
from prl_jax.train.sft import sft

GATES_FILE = "gates.json"


@dataclasses.dataclass(frozen=True)
class LabGates:
  """Sizes of the gate runs.

  Attributes:
    rl_steps: steps of the RLOO, oracle and PRIME runs (G2 compares at `gate_step`).
    gate_step: RLOO's step whose trailing-`window` reward the oracle must reach.
    window: smoothing window of the rewards (steps).
    eval_problems: eval-split problems of G0 and G1.
    overrides: config overrides of every stage (e.g. smaller runs for a test).
  """

  rl_steps: int = 60
  gate_step: int = 60
  window: int = 15
  eval_problems: int = 256
  overrides: tuple[str, ...] = ()


def lab_configs_dir() -> str:
  """configs/lab of the source checkout this package is installed from."""
  checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(checkout, "configs", "lab")


def _evaluate(config, workdir: str, hf_dir: str, n: int) -> tuple[dict, list[str], list[dict]]:
  """(summary, greedy responses, problems) of `hf_dir` on the run's eval split."""
  ctx = build_context(config, workdir)
  policy = load_policy(ctx, hf_dir)
  examples = ctx.eval_examples[:config.eval.num_problems]
  results = evaluate(policy.params, policy.model_cfg, policy.tokenizer, examples, ctx.verifier,
                     n=n, temperature=config.eval.temperature,
                     max_new_tokens=config.rollout.max_new_tokens, seed=config.seed)
  return results["summary"], [r["greedy_response"] for r in results["records"]], examples


def _sft_gate(workdir: str, name: str, overrides: list[str], configs: str, gate_fn) -> dict:
  """SFT into WORKDIR/<name> (a stage), then its gate, measured once and kept in <name>/gate.json."""
  path = config_file(configs, "sft")
  run_dir = os.path.join(workdir, name)
  run_stage(workdir, f"{name}/train", stage_inputs(overrides),
            cli_command("sft", path, run_dir, overrides),
            lambda: sft(load(path, overrides), run_dir),
            outputs=[f"{name}/final_hf/config.json"])
  saved = os.path.join(run_dir, "gate.json")
  if os.path.exists(saved):
    with open(saved) as fh:
      return json.load(fh)
  gate = gate_fn(load(path, overrides), run_dir, os.path.join(run_dir, "final_hf"))
  write_json_atomic(saved, gate)
  return gate


def _capacity(config, run_dir: str, hf_dir: str) -> dict:
  _, greedy, examples = _evaluate(config, run_dir, hf_dir, n=1)
  return gates.capacity_gate(register.step_accuracy(greedy, examples))


def _base_policy(config, run_dir: str, hf_dir: str) -> dict:
  summary, _, _ = _evaluate(config, run_dir, hf_dir, n=8)
  return gates.base_policy_gate(summary["mean@8"], summary["pass@8"])


def _rl_rows(workdir: str, method: str, sft_hf: str, options: LabGates, configs: str,
             verbose: bool) -> list[dict]:
  path = config_file(configs, method)
  overrides = [*options.overrides, f"init_from={sft_hf}", f"train.steps={options.rl_steps}",
               "seed=0", *logging_overrides(verbose)]
  rel = os.path.join("rl", method, "seed0")
  run_dir = os.path.join(workdir, rel)
  run_stage(workdir, f"{rel}/train", stage_inputs(overrides),
            cli_command("train", path, run_dir, overrides),
            lambda: train(load(path, overrides), run_dir), outputs=[f"{rel}/metrics.jsonl"])
  return read_metrics(os.path.join(run_dir, "metrics.jsonl"))


def run_lab_gates(workdir: str, options: LabGates = LabGates(), *, configs_dir: str | None = None,
                  verbose: bool = False) -> list[dict]:
  """Runs (or resumes) the gate stages; returns the gates measured. Raises ConfigError naming the
  knob to turn at the first failing gate (WORKDIR/gates.json holds every gate so far)."""
  configs = configs_dir or lab_configs_dir()
  workdir = os.path.normpath(workdir)
  measured: list[dict] = []

  def record(gate: dict) -> None:
    measured.append(gate)
    write_json_atomic(os.path.join(workdir, GATES_FILE), {"gates": measured,
                                                          "options": dataclasses.asdict(options)})
    value = json.dumps(gate["value"])
    say(f"[lab] {gate['name']}: {value} ({gate['threshold']}): "
        f"{'passed' if gate['passed'] else 'FAILED'}")
    if not gate["passed"]:
      raise ConfigError(f"lab gate {gate['name']} failed: {value}, needs {gate['threshold']}; "
                        f"turn {gate['knob']} (details in {GATES_FILE}).")

  sft_overrides = [*options.overrides, f"eval.num_problems={options.eval_problems}",
                   f"task.num_eval={options.eval_problems}", *logging_overrides(verbose)]
  record(_sft_gate(workdir, "capacity_sft", [*sft_overrides, "task.demonstrator=solver"],
                   configs, _capacity))
  record(_sft_gate(workdir, "sft", sft_overrides, configs, _base_policy))
  sft_hf = os.path.join(workdir, "sft", "final_hf")
  rloo = _rl_rows(workdir, "rloo", sft_hf, options, configs, verbose)
  oracle = _rl_rows(workdir, "oracle", sft_hf, options, configs, verbose)
  record(gates.oracle_gate(rloo, oracle, at_step=options.gate_step, window=options.window))
  prime = _rl_rows(workdir, "prime", sft_hf, options, configs, verbose)
  record(gates.prime_auroc_gate(prime, window=options.window))
  return measured
