"""Agreement of the math answer checker with public graders' verdicts, per class, with timing.

The cases (tests/fixtures/checker_cases.jsonl) come from public graders' test suites and graded
outputs, each naming its source; `expected` is the verdict taken as right (the source's, except
where the case's note says why it is overridden). Each case scores `response` against `gold` (a
bare answer or a solution with boxes) in a worker process with a per-case deadline, so a checker
that hangs costs its case, not the run.

  python benchmarks/checker_agreement.py                        # this checker
  python benchmarks/checker_agreement.py --module old/math_answer.py   # another math_answer.py
  python benchmarks/checker_agreement.py --math-verify         # math-verify alone on the texts
  ... --reference-golds   # hand the checker each gold's answer (this checker's gold extraction)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import time
from collections import defaultdict
from pathlib import Path

CASES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "checker_cases.jsonl"


def _checker(module: str | None, math_verify_alone: bool, reference_golds: bool = False):
  """The function (response, gold) -> bool under test."""
  if reference_golds:
    from prl_jax.rewards.verify_extract import reference_answer

    check = _checker(module, math_verify_alone)
    return lambda response, gold: check(response, reference_answer(gold))
  if math_verify_alone:
    from math_verify import parse, verify

    return lambda response, gold: bool(verify(parse(gold), parse(response)))
  if module:
    spec = importlib.util.spec_from_file_location("checker_under_test", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return lambda response, gold: mod.score_math(response, gold) == 1.0
  from prl_jax.rewards.math_answer import score_math

  return lambda response, gold: score_math(response, gold) == 1.0


def _worker(conn, module, math_verify_alone, reference_golds):
  check = _checker(module, math_verify_alone, reference_golds)
  check("\\boxed{\\frac{1}{2}}", "0.5")  # warm the imports outside the timed cases
  while (job := conn.recv()) is not None:
    start = time.perf_counter()
    try:
      verdict = bool(check(job["response"], job["gold"]))
    except Exception:
      verdict = False
    conn.send((verdict, time.perf_counter() - start))


def run(cases, module, math_verify_alone, reference_golds, deadline):
  """(verdict, seconds, timed_out) of each case."""
  ctx = mp.get_context("spawn")
  out, proc = [], None
  for case in cases:
    if proc is None:
      parent, child = ctx.Pipe()
      proc = ctx.Process(target=_worker, args=(child, module, math_verify_alone, reference_golds), daemon=True)
      proc.start()
    parent.send(case)
    if parent.poll(deadline + (60 if not out else 0)):  # the first case also waits for imports
      verdict, seconds = parent.recv()
      out.append((verdict, seconds, False))
    else:
      proc.kill()
      proc.join()
      proc = None
      out.append((False, deadline, True))
  if proc is not None:
    parent.send(None)
    proc.join(5)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--module", help="path of another math_answer.py to measure (e.g. an older version)")
  ap.add_argument("--math-verify", action="store_true", help="math-verify's parse/verify alone")
  ap.add_argument("--reference-golds", action="store_true",
                  help="pass each gold through this checker's gold extraction first (fair to checkers "
                  "that expect a bare answer, not '$...$' or a solution)")
  ap.add_argument("--deadline", type=float, default=10.0, help="seconds per case before it counts as a hang")
  ap.add_argument("--show", action="store_true", help="print every disagreement")
  args = ap.parse_args()
  cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
  results = run(cases, args.module, args.math_verify, args.reference_golds, args.deadline)
  by_class = defaultdict(lambda: [0, 0])
  false_pos = false_neg = hangs = 0
  for case, (verdict, _, timed_out) in zip(cases, results):
    ok = int(verdict) == case["expected"]
    by_class[case["cls"]][0] += ok
    by_class[case["cls"]][1] += 1
    false_pos += verdict and not case["expected"]
    false_neg += (not verdict) and bool(case["expected"])
    hangs += timed_out
    if args.show and not ok:
      print(f"  #{case['id']} [{case['cls']}] expected {case['expected']}: gold={case['gold'][:80]!r} "
            f"response=...{case['response'][-100:]!r}{' (timed out)' if timed_out else ''}")
  agree = sum(c[0] for c in by_class.values())
  times = sorted(s for _, s, t in results if not t)
  print(f"agreement {agree}/{len(cases)} = {agree / len(cases):.1%}  "
        f"(false positives {false_pos}, false negatives {false_neg}, over {args.deadline:g}s {hangs})")
  for cls, (ok, n) in sorted(by_class.items()):
    print(f"  {cls:<14} {ok:>3}/{n:<3} {ok / n:6.1%}")
  print(f"time per case: median {statistics.median(times) * 1e3:.1f} ms, mean "
        f"{statistics.fmean(times) * 1e3:.1f} ms, p95 {times[int(0.95 * (len(times) - 1))] * 1e3:.1f} ms, "
        f"max {times[-1] * 1e3:.0f} ms")


if __name__ == "__main__":
  main()
