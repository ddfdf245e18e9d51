"""The lab's per-run numbers from metrics.jsonl: sample efficiency, step AUROC, reward hacking.

All pure functions of a run's metric rows (`prl_jax.run.metrics_file.read_metrics`).

Sample efficiency. The target is RLOO's final training reward (the mean over its seeds of the
mean `rollout/reward` of its last `window` steps). A run reaches it at the first step s whose
trailing `window`-step mean reward is >= the target; its cost is s steps and the responses it
sampled up to s, refills of the accuracy filter included (`rollout/sampled_total` at s, or the
sum of the per-step `rollout/sampled`). A run that never gets there is *censored*: its value is
unknown but larger than what it ran (steps_run, rollouts_run), and it says so. With a learning
rate that decays to 0 (the lab's arms) RLOO's own smoothed reward reaches its final value only at
its last steps, so most runs are censored there; the same costs are also taken to the level
GAIN_SHARE of the way from RLOO's start (its first step's reward: the SFT policy's) to its final
reward (`gain_level`), which every arm that learns as fast as RLOO passes mid-run.

Reward hacking. A process reward can be maximised without the outcome following. Over windows of
`hack_window` consecutive steps (stride hack_window // 2), the least-squares slopes of the
process return and of the outcome reward `rollout/reward` are computed; a window is flagged when
the process return rises (slope > 0) while the outcome falls by more than `min_drop` over the
window (slope * (hack_window - 1) < -min_drop), so noise around a flat outcome is not flagged. A
run is flagged when any window is. The process return of a step is the first metric present of
PROCESS_RETURN_KEYS (a method without one is not monitored, and the report says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from prl_jax.reproduce.claims import final_reward, moving_average, steps_to_reach

REWARD_KEY, AUROC_KEY, ENTROPY_KEY = "rollout/reward", "prm/step_auroc", "policy/entropy"
SAMPLED_TOTAL, SAMPLED = "rollout/sampled_total", "rollout/sampled"
# Per-step mean process return of a batch's responses, by preference: what a frozen PRM's RAFT
# selects by (the aggregated solution score: with min aggregation, shorter responses can raise
# it while the sum of step scores falls), then a generic one if the training loop logs it, then
# the methods' own.
PROCESS_RETURN_KEYS = ("erprm/score_mean", "process/return_mean", "repirl/return_mean",
                       "repirl/prm_return", "oracle/step_accuracy")
GAIN_SHARE = 0.9
LEVEL = "@90"  # suffix of the per-seed costs to the gain level: "steps@90", "rollouts@90", ...


def gain_level(start: float, final: float, share: float = GAIN_SHARE) -> float:
  """The reward `share` of the way from RLOO's start to its final reward:
  start + share * (final - start)."""
  return start + share * (final - start)


def series(rows: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the rows that logged `key`."""
  pairs = [(int(r["step"]), float(r[key])) for r in rows if key in r]
  return [s for s, _ in pairs], [v for _, v in pairs]


def cumulative_sampled(rows: Sequence[Mapping]) -> list[float]:
  """Responses sampled up to each row's step: `rollout/sampled_total` (a resumed run keeps its
  running total) or the running sum of `rollout/sampled`."""
  if rows and all(SAMPLED_TOTAL in r for r in rows):
    return [float(r[SAMPLED_TOTAL]) for r in rows]
  return [float(v) for v in np.cumsum([r.get(SAMPLED, 0.0) for r in rows])]


def cost_to_target(rows: Sequence[Mapping], target: float, window: int) -> dict:
  """{"steps", "rollouts", "censored", "steps_run", "rollouts_run"} of one run (module docstring).

  steps / rollouts are None when censored (the target was never reached)."""
  rows = [r for r in rows if REWARD_KEY in r]
  steps = [int(r["step"]) for r in rows]
  rewards = [float(r[REWARD_KEY]) for r in rows]
  sampled = cumulative_sampled(rows)
  reached = steps_to_reach(steps, rewards, target, window) if rows else None
  out = {"steps_run": steps[-1] if steps else 0, "rollouts_run": sampled[-1] if sampled else 0.0,
         "censored": reached is None, "steps": reached, "rollouts": None}
  if reached is not None:
    out["rollouts"] = sampled[steps.index(reached)]
  return out


def tail_mean(rows: Sequence[Mapping], key: str, window: int) -> float | None:
  """Mean of `key` over the last `window` rows that logged it (None when none did)."""
  _, values = series(rows, key)
  return final_reward(values, window) if values else None


def smoothed(rows: Sequence[Mapping], key: str, window: int) -> tuple[list[int], list[float]]:
  """(steps, trailing `window`-step mean) of `key`; empty when fewer rows logged it."""
  steps, values = series(rows, key)
  if len(values) < window or window < 1:
    return [], []
  return steps[window - 1:], [float(v) for v in moving_average(values, window)]


def slope(values: Sequence[float]) -> float:
  """Least-squares slope of values against 0, 1, ..., len - 1 (per step)."""
  y = np.asarray(values, np.float64)
  x = np.arange(y.size, dtype=np.float64)
  x -= x.mean()
  return float(np.dot(x, y - y.mean()) / np.dot(x, x)) if y.size > 1 else 0.0


def process_return_key(rows: Sequence[Mapping]) -> str | None:
  """The first of PROCESS_RETURN_KEYS the run logged."""
  return next((k for k in PROCESS_RETURN_KEYS if any(k in r for r in rows)), None)


def hacking_monitor(rows: Sequence[Mapping], hack_window: int = 30, min_drop: float = 0.02
                    ) -> dict:
  """Windows where the process return rises while the outcome falls (module docstring)."""
  key = process_return_key(rows)
  if key is None:
    return {"key": None, "flagged": None, "windows": []}
  both = [r for r in rows if key in r and REWARD_KEY in r]
  flagged = []
  stride = max(1, hack_window // 2)
  for start in range(0, max(len(both) - hack_window + 1, 0), stride):
    part = both[start:start + hack_window]
    process = slope([r[key] for r in part])
    outcome = slope([r[REWARD_KEY] for r in part])
    if process > 0 and outcome * (len(part) - 1) < -min_drop:
      flagged.append({"from": int(part[0]["step"]), "to": int(part[-1]["step"]),
                      "process_slope": process, "outcome_slope": outcome})
  return {"key": key, "flagged": bool(flagged), "windows": flagged}


def run_summary(rows: Sequence[Mapping], target: float | None, window: int,
                hack_window: int) -> dict:
  """Every lab number of one run from its metric rows."""
  out = {"final_reward": tail_mean(rows, REWARD_KEY, window),
         "entropy": tail_mean(rows, ENTROPY_KEY, window),
         "auroc": tail_mean(rows, AUROC_KEY, window),
         "hacking": hacking_monitor(rows, hack_window)}
  if target is not None:
    out["cost"] = cost_to_target(rows, target, window)
  return out
