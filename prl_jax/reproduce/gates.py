"""The process-reward lab's gates: can the miniature show a process-reward effect at all?

Checked, in this order, before any learned PRM is judged on the register task:

  G0 capacity: SFT on the clean demonstrator reaches >= 98% per-step greedy accuracy, so the
     policy's size is not what limits it;
  G1 base policy: SFT on the buggy demonstrator has mean@8 in [5%, 15%] and pass@8 >= 40% on the
     eval split (success is sparse but reachable), and it errs as the demonstrator does: plain
     lines wrong at most 3 points above the slip rate, bug types written by the bug's rule within
     15 points of the bug rate (`register.line_error_rates` on the same samples);
  G2 oracle control: RLOO improves over its 60 steps (first vs last 15 steps, t >= 2), and the
     oracle (the step checker as process reward) reaches RLOO's reward at step 60 (trailing
     15-step mean) in at most a third of the steps: a perfect process reward helps here, so a
     learned one can be judged;
  G3 PRIME's implicit PRM: step-level AUROC at the first wrong line (prm/step_auroc, trailing
     15-step mean at the end of the run) >= 0.7.

Each gate is a dict {name, value, threshold, passed, knob}; `knob` names what to turn when it
fails. The thresholds are those of the lab's design; the measured values are in docs/lab.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from prl_jax.reproduce.claims import final_reward, moving_average, steps_to_reach
from prl_jax.reproduce.lab_metrics import AUROC_KEY, REWARD_KEY, gain_level, series


@dataclasses.dataclass(frozen=True)
class LabGates:
  """Sizes of the gate runs (`prl_jax.reproduce.lab`).

  Attributes:
    rl_steps: steps of the RLOO, oracle and PRIME runs (G2 compares at `gate_step`). In the
      `lab` preset these runs are the first steps of the arms' seed-0 runs, which resume them.
    gate_step: RLOO's step whose trailing-`window` reward the oracle must reach.
    window: smoothing window of the rewards (steps).
    eval_problems: eval-split problems of G0 and G1.
    overrides: config overrides of every stage (e.g. smaller runs for a test).
    clean_sft_overrides: config overrides of the clean (G0) SFT only, after `overrides`.
    sft_overrides: config overrides of the buggy (G1) SFT only, after `overrides` (this SFT is
      every arm's starting policy, so they change what the arms start from, not the arms).
  """

  rl_steps: int = 60
  gate_step: int = 60
  window: int = 15
  eval_problems: int = 256
  overrides: tuple[str, ...] = ()
  clean_sft_overrides: tuple[str, ...] = ()
  sft_overrides: tuple[str, ...] = ()


CAPACITY_GATE = "G0 capacity"
BASE_POLICY = "G1 base policy"  # the gate of the SFT policy every arm starts from
# The gates of the SFT policies: no arm is worth running from a policy that fails them, so
# `--past-failed-gates` never goes past these.
SFT_GATES = (CAPACITY_GATE, BASE_POLICY)

def _gate(name: str, value: float | None, threshold: str, passed: bool, knob: str) -> dict:
  return {"name": name, "value": value, "threshold": threshold, "passed": bool(passed),
          "knob": knob}


def capacity_gate(step_accuracy: float, minimum: float = 0.98) -> dict:
  return _gate(CAPACITY_GATE, step_accuracy, f">= {minimum:.0%} per-step greedy accuracy",
               step_accuracy >= minimum,
               "a larger model.preset or more sft.steps for the clean demonstrator")


def base_policy_gate(mean_at_8: float, pass_at_8: float, line_rates: Mapping[str, float],
                     *, slip_rate: float, bug_rate: float, band=(0.05, 0.15),
                     min_pass: float = 0.40, plain_margin: float = 0.03,
                     rule_margin: float = 0.15) -> dict:
  """G1: success sparse but reachable, and the policy errs the way the demonstrator does.

  `line_rates` is `register.line_error_rates` on the same samples: the plain-line error must stay
  within `plain_margin` of the demonstrator's slip_rate and the bug-rule rate within
  `rule_margin` of its bug_rate. A policy that slips on plain lines fails for noise rather than
  for the systematic errors a process reward can localise, whatever its success rate.
  """
  success_ok = band[0] <= mean_at_8 <= band[1] and pass_at_8 >= min_pass
  plain_ok = line_rates["plain"] <= slip_rate + plain_margin
  rule_ok = abs(line_rates["bug_rule"] - bug_rate) <= rule_margin
  knob = ("task.register.bug_rate / min_bugs / max_bugs (harder: more bugged steps)"
          if plain_ok and rule_ok else
          "the buggy SFT: more sft.steps, or start it from the clean SFT (init_from) so it "
          "learns the bugs, not the task")
  return _gate(BASE_POLICY,
               {"mean@8": mean_at_8, "pass@8": pass_at_8, "plain_error": line_rates["plain"],
                "bug_rule": line_rates["bug_rule"]},
               f"mean@8 in [{band[0]:.0%}, {band[1]:.0%}], pass@8 >= {min_pass:.0%}, plain-line "
               f"error <= {slip_rate + plain_margin:.0%}, bug-rule rate "
               f"{bug_rate:.0%} +- {rule_margin:.0%}",
               success_ok and plain_ok and rule_ok, knob)


MIN_T = 2.0


def _improved(first: Sequence[float], last: Sequence[float]) -> bool:
  """mean(last) > mean(first) with Welch's t = diff / sqrt(var_f/n_f + var_l/n_l) >= MIN_T over
  the per-step rewards of the two windows (any rise counts when both windows are constant)."""
  diff = float(np.mean(last) - np.mean(first))
  se = float(np.sqrt(np.var(first, ddof=1) / len(first) + np.var(last, ddof=1) / len(last)))
  return diff > 0 and (se == 0 or diff / se >= MIN_T)


def oracle_gate(rloo_rows: Sequence[Mapping], oracle_rows: Sequence[Mapping], *,
                at_step: int = 60, window: int = 15, max_ratio: float = 1 / 3) -> dict:
  """Steps the oracle needs to reach RLOO's trailing-`window` mean reward at `at_step`, over
  `at_step`; None (failed) when RLOO has not run that far or the oracle never gets there. The
  value also records both arms' steps to 90% of RLOO's gain (`lab_metrics.gain_level` from its
  first step's reward), which do not enter the verdict."""
  steps, rewards = series(rloo_rows, REWARD_KEY)
  upto = [r for s, r in zip(steps, rewards) if s <= at_step]
  if len(upto) < at_step:
    return _gate("G2 oracle control", None, f"<= {max_ratio:.2f} of RLOO's {at_step} steps",
                 False, f"run RLOO for at least {at_step} steps")
  target = final_reward(upto, window)
  if not _improved(upto[:window], upto[-window:]):
    # Reaching a reward RLOO never raised says nothing about the process reward: the oracle
    # would "pass" at its first window.
    return _gate("G2 oracle control", {"rloo_start": float(np.mean(upto[:window])),
                                       "rloo_target": target, "oracle_steps": None,
                                       "ratio": None},
                 f"RLOO improves over its {at_step} steps (t >= {MIN_T:g} between its first and "
                 f"last {window} steps), then <= {max_ratio:.2f} of its steps", False,
                 "optim.lr or the gate's rl_steps: RLOO itself must learn for the control to "
                 "mean anything")
  o_steps, o_rewards = series(oracle_rows, REWARD_KEY)
  reached = steps_to_reach(o_steps, o_rewards, target, window)
  ratio = None if reached is None else reached / at_step
  # For the record, not the verdict: both arms' steps to 90% of RLOO's gain, which a learning
  # rate that decays to 0 leaves reachable where RLOO's own last steps are not.
  level = gain_level(upto[0], target)
  rloo_level = steps_to_reach(steps[:len(upto)], upto, level, window)
  oracle_level = steps_to_reach(o_steps, o_rewards, level, window)
  return _gate("G2 oracle control", {"rloo_target": target, "oracle_steps": reached,
                                     "ratio": ratio, "gain_level": level,
                                     "rloo_steps_to_level": rloo_level,
                                     "oracle_steps_to_level": oracle_level},
               f"<= {max_ratio:.2f} of RLOO's {at_step} steps",
               ratio is not None and ratio <= max_ratio,
               "the task: longer chains (task.min_ops/max_ops) or sparser success "
               "(task.register.*), so the outcome carries less signal per step")


def prime_auroc_gate(prime_rows: Sequence[Mapping], *, window: int = 15,
                     minimum: float = 0.7) -> dict:
  _, values = series(prime_rows, AUROC_KEY)
  value = float(moving_average(values, min(window, len(values)))[-1]) if values else None
  return _gate("G3 PRIME step AUROC", value, f">= {minimum}",
               value is not None and value >= minimum,
               "algo.prime.* (beta, prm_mini_batch_size) or optim.prm_lr")
