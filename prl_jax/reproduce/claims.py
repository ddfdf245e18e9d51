"""The papers' claims checked from the numbers: small statistics, training curves, verdicts.

Statistics. Per policy, a number is the mean over seeds ± the sample standard deviation over
seeds (ddof = 1), with the number of seeds beside it. A claim compares two means: the difference
d = mean_a - mean_b against the Welch standard error se = sqrt(s_a^2 / n_a + s_b^2 / n_b) over
seeds (for best-of-N, one experiment: the standard errors over problems, combined the same way).
With z = d / se (oriented so that z > 0 favours the claim), a comparison is

    reproduced       z >= 2
    reversed         z <= -2
    not reproduced   |z| < 2 (the spreads overlap)
    undetermined     a side has fewer than 2 seeds: no spread to judge by

and a claim is reproduced only when all its comparisons are.

Sample efficiency (PRIME section 4.2, "2.5x"): the training reward of a step is `rollout/reward`,
the mean outcome of every response sampled that step (before any filter). It is smoothed by a
trailing moving average over `window` steps (defined from step `window` on). The target is RLOO's
final training reward: the mean over its seeds of the mean of its last `window` steps. A run's
steps-to-target is the first step at which its smoothed reward reaches the target; a run that
never does counts as rl_steps + 1 in the claim (a lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

Z_THRESHOLD = 2.0
ERPRM_ROLES = ("ER-PRM", "hard", "soft", "ORM", "majority", "oracle")
BASELINE = "rloo"  # the outcome-only baseline of PRIME's sample-efficiency claim
REPRODUCED, REVERSED, NOT_REPRODUCED = "reproduced", "reversed", "not reproduced"
UNDETERMINED, NOT_RUN = "undetermined", "not run"


# ------------------------------------------------------------------------------------------------
# Small statistics.


class Spread(NamedTuple):
  """Mean and sample standard deviation (ddof = 1; None for fewer than 2 values) of n values."""

  mean: float
  std: float | None
  n: int


def mean_std(values: Sequence[float]) -> Spread:
  """Spread of `values` (at least one)."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("mean_std: no values")
  std = float(np.std(x, ddof=1)) if x.size > 1 else None
  return Spread(float(np.mean(x)), std, int(x.size))


def format_spread(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
  """"mean ± std" of `values` times `scale` ("mean" alone for one value; "-" for none)."""
  if not len(values):
    return "-"
  s = mean_std(values)
  text = f"{scale * s.mean:.{digits}f}"
  return text if s.std is None else f"{text} ± {scale * s.std:.{digits}f}"


def erprm_table(e: Mapping) -> str:
  """Best-of-N accuracy (% ± standard error over problems) against N, one column per role (the
  aggregate of `collect.collect_erprm`)."""
  roles = list(e["columns"])
  lines = ["| N | " + " | ".join(e["columns"][r] for r in roles) + " |",
           "|---:|" + "---:|" * len(roles)]
  for i, n in enumerate(e["budgets"]):
    cells = [f"{100 * e['accuracy'][r][i]:.1f} ± {100 * e['stderr'][r][i]:.1f}" for r in roles]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
  """(mean(a) - mean(b), Welch standard error sqrt(s_a^2/n_a + s_b^2/n_b)); None with < 2 seeds."""
  sa, sb = mean_std(a), mean_std(b)
  if sa.std is None or sb.std is None:
    return sa.mean - sb.mean, None
  return sa.mean - sb.mean, math.sqrt(sa.std ** 2 / sa.n + sb.std ** 2 / sb.n)


def verdict(diff: float, se: float | None, z: float = Z_THRESHOLD) -> str:
  """Whether a difference oriented in the claim's favour (> 0 supports it) is clear of its noise."""
  if se is None:
    return UNDETERMINED
  if se == 0:
    score = 0.0 if diff == 0 else math.copysign(math.inf, diff)
  else:
    score = diff / se
  if score >= z:
    return REPRODUCED
  if score <= -z:
    return REVERSED
  return NOT_REPRODUCED


def combine_verdicts(verdicts: Sequence[str]) -> str:
  """A claim's verdict from its comparisons': reproduced only when every comparison is."""
  if not verdicts or NOT_RUN in verdicts:
    return NOT_RUN
  if all(v == REPRODUCED for v in verdicts):
    return REPRODUCED
  for v in (REVERSED, UNDETERMINED):
    if v in verdicts:
      return v
  return NOT_REPRODUCED


# ------------------------------------------------------------------------------------------------
# Training curves.


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing mean over `window` values: out[i] = mean(values[i : i + window]), len - window + 1."""
  x = np.asarray(values, np.float64)
  if window < 1 or window > x.size:
    raise ValueError(f"moving_average: window must lie in [1, {x.size}], got {window}")
  sums = np.cumsum(np.concatenate([[0.0], x]))
  return (sums[window:] - sums[:-window]) / window


def final_reward(rewards: Sequence[float], window: int) -> float:
  """Mean of the last `window` values (all of them when there are fewer)."""
  x = np.asarray(rewards, np.float64)
  return float(x[-window:].mean())


def steps_to_reach(steps: Sequence[int], rewards: Sequence[float], target: float,
                   window: int) -> int | None:
  """First step whose trailing `window`-step mean reward reaches `target`; None if none does."""
  if len(rewards) < window:
    return None
  smooth = moving_average(rewards, window)
  hits = np.nonzero(smooth >= target - 1e-12)[0]
  return None if hits.size == 0 else int(steps[hits[0] + window - 1])


# ------------------------------------------------------------------------------------------------
# Claims (docs/algorithms.md: Sources, paper settings and headline results).


def compare(label: str, favoured: Sequence[float] | None, other: Sequence[float] | None, *,
            scale: float = 100.0, units: str = "points") -> dict:
  """One comparison: favoured - other over seeds, with its verdict (see the module docstring)."""
  if not favoured or not other:
    return {"label": label, "verdict": NOT_RUN}
  diff, se = difference(favoured, other)
  return {"label": label, "diff": scale * diff, "se": None if se is None else scale * se,
          "n": [len(favoured), len(other)], "units": units, "spread": "seeds",
          "verdict": verdict(diff, se)}


def compare_stats(label: str, a: tuple[float, float], b: tuple[float, float], *,
                  scale: float = 100.0, units: str = "points") -> dict:
  """favoured (mean, se) - other (mean, se) with se = sqrt(se_a^2 + se_b^2) (one experiment)."""
  diff, se = a[0] - b[0], math.sqrt(a[1] ** 2 + b[1] ** 2)
  return {"label": label, "diff": scale * diff, "se": scale * se, "units": units,
          "spread": "problems", "verdict": verdict(diff, se)}


def _metric(agg: Mapping, policy: str, split: str, key: str) -> list[float] | None:
  entry = agg["policies"].get(policy)
  return entry["eval"].get(split, {}).get(key) if entry else None


def _censored_steps(agg: Mapping, method: str) -> list[float] | None:
  """Steps to the target per seed, a run that never reached it counted as rl_steps + 1."""
  entry = agg["policies"].get(method)
  if not entry or not entry["steps_to_target"]:
    return None
  return [float(agg["rl_steps"] + 1 if s is None else s) for s in entry["steps_to_target"]]


def _claim(key: str, claim: str, paper: str, comparisons: list[dict]) -> dict:
  return {"key": key, "claim": claim, "paper": paper, "comparisons": comparisons,
          "verdict": combine_verdicts([c["verdict"] for c in comparisons])}


def _accuracy_claim(agg: Mapping, key: str, claim: str, paper: str, method: str, baseline: str,
                    metrics: Sequence[str]) -> dict:
  n = agg["eval_n"]
  comparisons = [compare(f"{name.replace('@n', f'@{n}')} (eval split), {method} - {baseline}",
                         _metric(agg, method, "eval", name), _metric(agg, baseline, "eval", name))
                 for name in metrics]
  return _claim(key, claim, paper, comparisons)


def _erprm_claim(agg: Mapping) -> dict:
  claim = "ER-PRM best-of-N beats PRMs trained on hard and on soft labels"
  paper = ("ER-PRM: +1% on GSM8K and +2-3% on MATH500 best-of-N over other PRMs")
  e = agg.get("erprm")
  if not e or not {"ER-PRM", "hard", "soft"} <= set(e["accuracy"]):
    return _claim("erprm", claim, paper, [{"label": "ER-PRM best-of-N", "verdict": NOT_RUN}])
  i = len(e["budgets"]) - 1
  stat = lambda role: (e["accuracy"][role][i], e["stderr"][role][i])
  comparisons = [compare_stats(f"best-of-{e['budgets'][i]} accuracy ({e['agg']}), ER-PRM - "
                               f"{role}-label PRM", stat("ER-PRM"), stat(role))
                 for role in ("hard", "soft")]
  return _claim("erprm", claim, paper, comparisons)


def evaluate_claims(agg: Mapping) -> list[dict]:
  """The papers' headline claims (docs/algorithms.md: Sources, paper settings and headline results) checked against these numbers."""
  steps = compare("steps to RLOO's final training reward, RLOO - PRIME",
                  _censored_steps(agg, BASELINE), _censored_steps(agg, "prime"), scale=1.0,
                  units="steps")
  return [
      _claim("prime", "PRIME reaches RLOO's final training reward in fewer steps",
             "PRIME: RLOO's training reward in 40% of the steps (2.5x sample efficiency)",
             [steps]),
      _accuracy_claim(agg, "prl", "PRL improves pass@n as well as mean@n over GRPO",
                      "PRL/FRPO: pass@16 on MATH500 78.62 (GRPO) -> 85.30 (FRPO)", "prl", "grpo",
                      ("pass@n", "mean@n")),
      _accuracy_claim(agg, "frpo", "FRPO improves pass@n as well as mean@n over GRPO",
                      "PRL/FRPO: pass@16 on MATH500 78.62 (GRPO) -> 85.30 (FRPO)", "frpo", "grpo",
                      ("pass@n", "mean@n")),
      _erprm_claim(agg),
      _accuracy_claim(agg, "repirl", "rePIRL beats RLOO",
                      "rePIRL: math average 33.5 vs 31.7 for RLOO (Qwen2.5-3B-Instruct)",
                      "repirl", "rloo", ("mean@n",)),
  ]


