"""The lab's claims, judged by t-tests over seeds (`prl-jax reproduce --preset lab`).

Every lab arm of a seed starts from the same SFT policy and draws its prompts in the same order,
so two arms' runs of one seed are a pair. A comparison of `favoured` against `other` (values per
seed, oriented so that favoured > other supports the claim) uses

    paired t-test   (scipy.stats.ttest_rel)  on the seeds both arms ran, when they ran the same
                    seeds (at least 2): t = mean(d) / (sd(d) / sqrt(n)), d = favoured - other;
    Welch's t-test  (scipy.stats.ttest_ind, equal_var=False) otherwise:
                    t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b),

two-sided, and its verdict at ALPHA = 0.05 with a minimum effect m is

    reproduced       p < ALPHA and the difference favours the claim by at least m
    reversed         p < ALPHA and the difference goes against it by at least m
    not reproduced   p >= ALPHA, or |difference| < m (significant but too small to matter)
    undetermined     fewer than 2 seeds on a side (no spread to test)

m is MIN_POINTS (1 point) for accuracies and MIN_COST_SHARE (10%) of the slower arm's mean for
steps and rollouts to the target (RLOO's final reward, and 90% of its gain: the speed claims
hold only when both do); entropy and KL, whose claims are about a direction, have none.
Why a minimum: with 3 paired seeds whose differences are nearly equal, a t-test calls a 0.3-point
gap between two policies at 98% significant.

A claim is reproduced only when all its comparisons are (`claims.combine_verdicts`). With no
spread at all (every difference equal) the test is degenerate: p = 1 for a zero difference and
p = 0 otherwise. Steps and rollouts to the target of a run that never reached it are its run's
length (a lower bound), which can only shrink a difference in favour of the faster arm when the
slower one is the censored one; the comparison says how many runs were censored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from prl_jax.reproduce.claims import (NOT_REPRODUCED, NOT_RUN, REPRODUCED, REVERSED,
                                      UNDETERMINED, combine_verdicts)
from prl_jax.reproduce.lab_metrics import GAIN_SHARE, LEVEL

ALPHA = 0.05
MIN_POINTS = 1.0  # accuracy points
MIN_COST_SHARE = 0.10  # of the slower arm's steps or rollouts to the target
PAIRED, WELCH = "paired t", "Welch t"


def _p_value(t: float, p: float, diff: float) -> float:
  """scipy's p, or the degenerate one when the spread is zero (module docstring)."""
  if math.isnan(p):
    return 1.0 if diff == 0 else 0.0
  return float(p)


def t_test(favoured: Mapping[int, float], other: Mapping[int, float]) -> dict:
  """{"test", "diff", "t", "p", "n"} of favoured - other; paired when both hold the same seeds.

  `favoured`, `other`: seed -> value. "diff" is mean(favoured) - mean(other).
  """
  a, b = list(favoured.values()), list(other.values())
  diff = float(np.mean(a) - np.mean(b))
  if len(a) < 2 or len(b) < 2:
    return {"test": None, "diff": diff, "t": None, "p": None, "n": [len(a), len(b)]}
  if set(favoured) == set(other):
    seeds = sorted(favoured)
    x, y = [favoured[s] for s in seeds], [other[s] for s in seeds]
    if np.allclose(np.subtract(x, y), np.subtract(x, y)[0]):
      t, p = math.nan, math.nan  # every pair differs alike: no spread to test against
    else:
      t, p = stats.ttest_rel(x, y)
    test = PAIRED
  else:
    if np.std(a) == 0 and np.std(b) == 0:
      t, p = math.nan, math.nan
    else:
      t, p = stats.ttest_ind(a, b, equal_var=False)
    test = WELCH
  t = None if math.isnan(t) else float(t)
  return {"test": test, "diff": diff, "t": t, "p": _p_value(t, p, diff), "n": [len(a), len(b)]}


def t_verdict(result: Mapping, alpha: float = ALPHA, min_effect: float = 0.0) -> str:
  """The verdict of a t_test result whose |diff| must reach `min_effect` (module docstring)."""
  if result["p"] is None:
    return UNDETERMINED
  if result["p"] < alpha and abs(result["diff"]) >= min_effect:
    return REPRODUCED if result["diff"] > 0 else REVERSED
  return NOT_REPRODUCED


def compare(label: str, favoured: Mapping[int, float] | None, other: Mapping[int, float] | None,
            *, scale: float = 100.0, units: str = "points", lower_is_better: bool = False,
            min_effect: float | None = None, note: str = "") -> dict:
  """One comparison with its test and verdict; `lower_is_better` flips the orientation (steps,
  KL) so that a positive diff always favours the claim. `min_effect` is in the diff's units
  (after `scale`); None: MIN_POINTS for points, none otherwise."""
  if not favoured or not other:
    return {"label": label, "verdict": NOT_RUN}
  if min_effect is None:
    min_effect = MIN_POINTS if units == "points" else 0.0
  if lower_is_better:
    favoured, other = other, favoured
  result = t_test(favoured, other)
  result["diff"] *= scale
  out = {"label": label, **result, "units": units, "min_effect": min_effect,
         "verdict": t_verdict(result, min_effect=min_effect)}
  if out["p"] is not None and out["p"] < ALPHA and abs(out["diff"]) < min_effect:
    unit = units[:-1] if min_effect == 1 and units.endswith("s") else units  # "1 point"
    note = "; ".join(x for x in (note, f"below the minimum effect of {min_effect:.3g} {unit}") if x)
  if note:
    out["note"] = note
  return out


def _claim(key: str, claim: str, paper: str, comparisons: list[dict]) -> dict:
  return {"key": key, "claim": claim, "paper": paper, "comparisons": comparisons,
          "verdict": combine_verdicts([c["verdict"] for c in comparisons])}


def _get(per_seed: Mapping, arm: str, metric: str) -> dict[int, float] | None:
  values = per_seed.get(arm, {}).get(metric)
  return {int(s): v for s, v in values.items() if v is not None} if values else None


def _cost(per_seed: Mapping, fast: str, slow: str, metric: str, units: str,
          suffix: str = "") -> dict:
  """Steps or rollouts to RLOO's final reward (suffix "") or to 90% of its gain (LEVEL),
  slow - fast, censored runs at their length."""
  censored = sum(sum(per_seed.get(a, {}).get("censored" + suffix, {}).values())
                 for a in (fast, slow))
  note = f"{censored} run(s) never reached the target, counted at their length" if censored else ""
  fast_values = _get(per_seed, fast, metric + suffix)
  slow_values = _get(per_seed, slow, metric + suffix)
  slower = max((float(np.mean(list(v.values()))) for v in (fast_values, slow_values) if v),
               default=0.0)
  target = f"{GAIN_SHARE:.0%} of RLOO's gain" if suffix else "RLOO's final training reward"
  return compare(f"{metric} to {target}, {slow} - {fast}", fast_values,
                 slow_values, scale=1.0, units=units, lower_is_better=True,
                 min_effect=MIN_COST_SHARE * slower, note=note)


def _costs(per_seed: Mapping, fast: str, slow: str) -> list[dict]:
  """Steps and rollouts to RLOO's final reward and to 90% of its gain, slow - fast."""
  return [_cost(per_seed, fast, slow, metric, metric, suffix)
          for suffix in ("", LEVEL) for metric in ("steps", "rollouts")]


def _acc(per_seed: Mapping, n: int, metric: str, arm: str, other: str,
         split: str = "eval") -> dict:
  name = metric.replace("@n", f"@{n}")
  return compare(f"{name} ({split}), {arm} - {other}", _get(per_seed, arm, f"{split} {metric}"),
                 _get(per_seed, other, f"{split} {metric}"))


def evaluate_lab_claims(lab: Mapping) -> list[dict]:
  """The lab's claims from `lab["per_seed"]` (arm -> metric -> seed -> value)."""
  p, n = lab["per_seed"], lab["eval_n"]
  return [
      _claim("control", "The oracle process reward reaches RLOO's final reward in fewer steps",
             "the lab's positive control (docs/lab.md): a perfect process reward must help",
             _costs(p, "oracle", "rloo")),
      _claim("prime_speed", "PRIME reaches RLOO's final training reward in fewer steps",
             "PRIME: RLOO's training reward in 40% of the steps (2.5x sample efficiency)",
             _costs(p, "prime", "rloo")),
      _claim("prime_accuracy", "PRIME's final policy beats RLOO's",
             "PRIME Table 1: greedy pass@1 36.9 (RLOO) -> 41.0 (PRIME) at 240 steps",
             [_acc(p, n, "greedy", "prime", "rloo"), _acc(p, n, "mean@n", "prime", "rloo")]),
      _claim("frpo", "FRPO improves pass@n over GRPO and over GRPO with a KL loss",
             "PRL v2 / FRPO: pass@16 on MATH500 78.62 (GRPO), 77.07 (GRPO + KL), 85.30 (FRPO)",
             [_acc(p, n, "pass@n", "frpo", "grpo"), _acc(p, n, "pass@n", "frpo", "grpo_kl")]),
      _claim("frpo_mechanism", "FRPO keeps more entropy and stays closer to the SFT policy than "
             "GRPO", "FRPO's advantage holds a per-token KL penalty (beta = 1/eta); the paper "
             "credits its pass@k to preserved diversity",
             [compare("policy entropy (last window), frpo - grpo", _get(p, "frpo", "entropy"),
                      _get(p, "grpo", "entropy"), scale=1.0, units="nats/token"),
              compare("KL to the SFT policy, grpo - frpo", _get(p, "frpo", "kl"),
                      _get(p, "grpo", "kl"), scale=1.0, units="nats/sequence",
                      lower_is_better=True)]),
      _claim("repirl_demos", "rePIRL beats RLOO started from an SFT on the same clean "
             "demonstrations", "rePIRL learns its PRM from demonstrations; this arm controls "
             "for what the demonstrations alone give", [_acc(p, n, "mean@n", "repirl",
                                                            "sft_demos_rloo")]),
      _claim("erprm_raft", "RAFT on the ER-PRM's pick beats RAFT on the hard-label PRM's",
             "ER-PRM: over 1% above PRMs of other labels under RAFT (GSM8K, MATH500)",
             [_acc(p, n, "mean@n", "erprm", "erprm_hard"),
              _acc(p, n, "greedy", "erprm", "erprm_hard")]),
      _claim("repirl", "rePIRL beats RLOO",
             "rePIRL: math average 33.5 vs 31.7 for RLOO (Qwen2.5-3B-Instruct)",
             [_acc(p, n, "mean@n", "repirl", "rloo")]),
  ]


def format_p(p: float | None) -> str:
  """p to two significant digits ("<1e-4" below that)."""
  if p is None:
    return "-"
  return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def comparison_text(c: Mapping) -> str:
  """One line per comparison: difference, test, t, p, verdict."""
  if c["verdict"] == NOT_RUN:
    return f"{c['label']}: not run"
  digits = 0 if c["units"] in ("steps", "rollouts") else (3 if c["units"].startswith("n") else 1)
  head = f"{c['label']}: {c['diff']:+.{digits}f} {c['units']}"
  note = f"; {c['note']}" if c.get("note") else ""
  if c["test"] is None:
    return (f"{head} with {c['n'][0]} vs {c['n'][1]} seeds, no spread to test{note} -> "
            f"{c['verdict']}")
  t = "t undefined (no spread)" if c["t"] is None else f"t = {c['t']:+.2f}"
  return (f"{head} ({c['test']}-test over {c['n'][0]} vs {c['n'][1]} seeds, {t}, "
          f"p = {format_p(c['p'])}{note}) -> {c['verdict']}")


def claims_lines(claims: Sequence[Mapping]) -> list[str]:
  """The claims table and each comparison's test (markdown lines)."""
  lines = ["| claim | paper | verdict | p |", "|---|---|---|---|"]
  for c in claims:
    ps = [format_p(x.get("p")) for x in c["comparisons"] if x["verdict"] != NOT_RUN]
    lines.append(f"| {c['claim']} | {c['paper']} | **{c['verdict']}** | {', '.join(ps) or '-'} |")
  lines.append("")
  for c in claims:
    lines.append(f"- {c['claim']}: **{c['verdict']}**")
    lines += [f"  - {comparison_text(comp)}" for comp in c["comparisons"]]
  return lines
