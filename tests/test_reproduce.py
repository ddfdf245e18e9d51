"""`prl-jax reproduce` and its report: statistics, claims, caching, and an end-to-end run.

The statistics are checked against values computed by hand; the claims logic on synthetic numbers
whose verdict is obvious; the report on a workdir of hand-written JSON files (it must be a pure
function of them); the pipeline end to end on a tiny preset (`slow`: it compiles every program of
two RL methods, the evaluations and the ER-PRM experiment).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from prl_jax import cli
from prl_jax.config import ConfigError
from prl_jax.eval.best_of_n import MAJORITY, ORACLE
from prl_jax.eval.prm_experiment import ErprmOptions
from prl_jax.reproduce import claims as claims_lib
from prl_jax.reproduce import collect, report
from prl_jax.reproduce.pipeline import reproduce, run_stage, stage_marker
from prl_jax.reproduce.presets import PRESETS, Preset, get_preset
from prl_jax.run.metrics_file import read_metrics


# ------------------------------------------------------------------------------------------------
# Statistics, by hand.


def test_mean_std_by_hand():
  # values 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9; / (n - 1) = 7/3.
  s = claims_lib.mean_std([1.0, 2.0, 4.0])
  assert s.mean == pytest.approx(7 / 3)
  assert s.std == pytest.approx(math.sqrt(7 / 3))
  assert s.n == 3
  one = claims_lib.mean_std([0.5])
  assert one == (0.5, None, 1)
  with pytest.raises(ValueError, match="no values"):
    claims_lib.mean_std([])


def test_format_spread():
  assert claims_lib.format_spread([0.25, 0.35]) == "30.0 ± 7.1"  # std = 0.1 / sqrt(2)
  assert claims_lib.format_spread([0.5]) == "50.0"
  assert claims_lib.format_spread([]) == "-"
  assert claims_lib.format_spread([10, 20, 30], 1.0, 0) == "20 ± 10"


def test_welch_difference_by_hand():
  # a: mean 2, var (1 + 0 + 1) / 2 = 1 (n 3); b: mean 1, var (1 + 1) / 1 = 2 (n 2):
  # se = sqrt(1/3 + 2/2) = sqrt(4/3).
  diff, se = claims_lib.difference([1.0, 2.0, 3.0], [0.0, 2.0])
  assert diff == pytest.approx(1.0)
  assert se == pytest.approx(math.sqrt(4 / 3))
  assert claims_lib.difference([1.0], [0.0, 2.0]) == (0.0, None)


def test_moving_average_and_final_reward_by_hand():
  x = [0.0, 1.0, 2.0, 3.0, 4.0]
  np.testing.assert_allclose(claims_lib.moving_average(x, 2), [0.5, 1.5, 2.5, 3.5])
  np.testing.assert_allclose(claims_lib.moving_average(x, 5), [2.0])
  np.testing.assert_allclose(claims_lib.moving_average(x, 1), x)
  with pytest.raises(ValueError, match="window"):
    claims_lib.moving_average(x, 6)
  assert claims_lib.final_reward(x, 2) == pytest.approx(3.5)
  assert claims_lib.final_reward(x, 10) == pytest.approx(2.0)  # fewer values than the window


def test_steps_to_reach_by_hand():
  steps = [1, 2, 3, 4, 5, 6]
  rewards = [0.1, 0.5, 0.2, 0.6, 0.7, 0.9]
  # 3-step trailing means, at steps 3..6: 0.2667, 0.4333, 0.5, 0.7333.
  assert claims_lib.steps_to_reach(steps, rewards, 0.5, 3) == 5
  assert claims_lib.steps_to_reach(steps, rewards, 0.25, 3) == 3
  assert claims_lib.steps_to_reach(steps, rewards, 0.8, 3) is None
  assert claims_lib.steps_to_reach(steps, rewards, 0.5, 1) == 2  # no smoothing: the first hit
  assert claims_lib.steps_to_reach([1, 2], [1.0, 1.0], 0.0, 3) is None  # shorter than the window
  # Steps are read from the rows, not counted: a run that starts at step 11.
  assert claims_lib.steps_to_reach([11, 12, 13], [0.0, 1.0, 1.0], 1.0, 2) == 13


# ------------------------------------------------------------------------------------------------
# Claims on synthetic numbers.


def test_verdict_thresholds():
  assert claims_lib.verdict(3.0, 1.0) == claims_lib.REPRODUCED
  assert claims_lib.verdict(2.0, 1.0) == claims_lib.REPRODUCED  # z = 2 exactly
  assert claims_lib.verdict(1.9, 1.0) == claims_lib.NOT_REPRODUCED
  assert claims_lib.verdict(-1.9, 1.0) == claims_lib.NOT_REPRODUCED
  assert claims_lib.verdict(-2.5, 1.0) == claims_lib.REVERSED
  assert claims_lib.verdict(5.0, None) == claims_lib.UNDETERMINED
  assert claims_lib.verdict(0.1, 0.0) == claims_lib.REPRODUCED  # no spread at all, a real difference
  assert claims_lib.verdict(0.0, 0.0) == claims_lib.NOT_REPRODUCED


def test_combine_verdicts():
  r, n, u = claims_lib.REPRODUCED, claims_lib.NOT_REPRODUCED, claims_lib.UNDETERMINED
  assert claims_lib.combine_verdicts([r, r]) == r
  assert claims_lib.combine_verdicts([r, n]) == n
  assert claims_lib.combine_verdicts([r, u]) == u
  assert claims_lib.combine_verdicts([r, claims_lib.REVERSED, u]) == claims_lib.REVERSED
  assert claims_lib.combine_verdicts([r, claims_lib.NOT_RUN]) == claims_lib.NOT_RUN


def _agg(policies, target=None, erprm=None, rl_steps=100):
  """A synthetic aggregate: policy -> {"eval": {metric: per-seed values}, "steps": per seed}."""
  out = {}
  for name, p in policies.items():
    evals = {key: list(v) for key, v in p.get("eval", {}).items()}
    out[name] = {"seeds": list(range(len(p.get("steps", [0])))), "eval": {"eval": evals},
                 "steps_to_target": list(p.get("steps", []))}
  return {"eval_n": 8, "window": 10, "rl_steps": rl_steps, "target": target, "policies": out,
          "prm_accuracy": {}, "erprm": erprm, "times": {}}


def _claim(claims, key):
  return next(c for c in claims if c["key"] == key)


def test_claims_clear_win_reproduces_and_overlap_does_not():
  clear = {"pass@n": [0.80, 0.81, 0.82], "mean@n": [0.50, 0.51, 0.52]}
  base = {"pass@n": [0.70, 0.71, 0.72], "mean@n": [0.40, 0.41, 0.42]}
  noisy = {"pass@n": [0.60, 0.80, 0.95], "mean@n": [0.30, 0.50, 0.61]}
  worse = {"pass@n": [0.60, 0.61, 0.62], "mean@n": [0.30, 0.31, 0.32]}
  claims = claims_lib.evaluate_claims(_agg({
      "grpo": {"eval": base}, "prl": {"eval": clear}, "frpo": {"eval": noisy},
      "rloo": {"eval": base, "steps": [80, 90, 100]}, "repirl": {"eval": worse},
      "prime": {"steps": [30, 35, 40]}}, target={"value": 0.5}))
  assert _claim(claims, "prl")["verdict"] == claims_lib.REPRODUCED
  prl = _claim(claims, "prl")["comparisons"]
  assert [c["diff"] for c in prl] == pytest.approx([10.0, 10.0])  # percentage points
  assert _claim(claims, "frpo")["verdict"] == claims_lib.NOT_REPRODUCED  # spreads overlap
  assert _claim(claims, "repirl")["verdict"] == claims_lib.REVERSED
  prime = _claim(claims, "prime")
  assert prime["verdict"] == claims_lib.REPRODUCED
  assert prime["comparisons"][0]["diff"] == pytest.approx(55.0)  # 90 - 35 steps
  assert _claim(claims, "erprm")["verdict"] == claims_lib.NOT_RUN


def test_claims_one_seed_is_undetermined_and_unreached_runs_count_as_censored():
  claims = claims_lib.evaluate_claims(_agg({
      "grpo": {"eval": {"pass@n": [0.5], "mean@n": [0.3]}},
      "prl": {"eval": {"pass@n": [0.9], "mean@n": [0.6]}},
      "rloo": {"steps": [50, 60]}, "prime": {"steps": [None, None]}}, rl_steps=100))
  assert _claim(claims, "prl")["verdict"] == claims_lib.UNDETERMINED
  prime = _claim(claims, "prime")["comparisons"][0]
  assert prime["diff"] == pytest.approx(55.0 - 101.0)  # never reached: rl_steps + 1
  assert _claim(claims, "repirl")["verdict"] == claims_lib.NOT_RUN


def test_erprm_claim_uses_the_largest_budget_and_problem_standard_errors():
  erprm = {"budgets": [1, 4, 16], "agg": "min",
           "accuracy": {"ER-PRM": [0.2, 0.3, 0.40], "hard": [0.2, 0.3, 0.30],
                        "soft": [0.2, 0.3, 0.39]},
           "stderr": {"ER-PRM": [0.01, 0.01, 0.03], "hard": [0.01, 0.01, 0.04],
                      "soft": [0.01, 0.01, 0.03]}}
  claim = _claim(claims_lib.evaluate_claims(_agg({}, erprm=erprm)), "erprm")
  hard, soft = claim["comparisons"]
  assert hard["diff"] == pytest.approx(10.0) and hard["se"] == pytest.approx(5.0)  # 3-4-5
  assert hard["verdict"] == claims_lib.REPRODUCED
  assert soft["verdict"] == claims_lib.NOT_REPRODUCED
  assert claim["verdict"] == claims_lib.NOT_REPRODUCED


# ------------------------------------------------------------------------------------------------
# The report from hand-written JSON files.


def _write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as fh:
    json.dump(value, fh)


def _eval_results(accuracy, n=4):
  curve = {f"pass@{k}": min(1.0, accuracy * k) for k in range(1, n + 1)}
  return {"settings": {"n": n}, "summary": {f"mean@{n}": accuracy, "greedy": accuracy, **curve},
          "records": []}


def _stage(name, seconds):
  return {"stage": name, "command": f"prl-jax {name}", "seconds": seconds, "inputs": {}}


def _fake_workdir(root, methods=("rloo", "prime"), seeds=(0, 1), steps=6):
  """A reproduce workdir written by hand: two methods, two seeds, an ER-PRM result."""
  preset = {"name": "fake", "methods": list(methods), "seeds": list(seeds), "rl_steps": steps,
            "window": 2, "eval_n": 4, "eval_problems": 8, "heldout_problems": 8,
            "heldout_max_new_tokens": 96,
            "erprm": {"label_problems": 8, "solutions_per_problem": 2, "prm_steps": 4,
                      "eval_problems": 8, "n_max": 4}}
  evals = lambda rel, acc: {split: {**_stage(f"{rel}/{split}", 1.0),
                                    "results": f"{rel}/eval_{split}.json"} for split in acc}
  for rel, acc in [("sft", {"eval": 0.3, "heldout": 0.05})]:
    for split, a in acc.items():
      _write(os.path.join(root, rel, f"eval_{split}.json"), _eval_results(a))
  runs = []
  for m, method in enumerate(methods):
    for seed in seeds:
      rel = f"rl/{method}/seed{seed}"
      rows = [{"step": s, "rollout/reward": 0.1 * s + 0.05 * m + 0.01 * seed, "time/step_s": 0.5}
              for s in range(1, steps + 1)]
      if method == "prime":
        for row in rows:
          row["prm/pairwise_accuracy"] = 0.5 + 0.05 * row["step"]
      os.makedirs(os.path.join(root, rel), exist_ok=True)
      with open(os.path.join(root, rel, "metrics.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
      acc = {"eval": 0.4 + 0.1 * m + 0.01 * seed, "heldout": 0.1}
      for split, a in acc.items():
        _write(os.path.join(root, rel, f"eval_{split}.json"), _eval_results(a))
      runs.append({"method": method, "seed": seed, "dir": rel,
                   "metrics": f"{rel}/metrics.jsonl", "train": _stage(f"{rel}/train", 3.0),
                   "evals": evals(rel, acc)})
  names = {"ER-PRM (eta=2) [min]": 0.5, "hard PRM (eta=inf) [min]": 0.4,
           "soft PRM (eta->0) [min]": 0.45, "ORM (outcome)": 0.3, MAJORITY: 0.35, ORACLE: 0.9}
  _write(os.path.join(root, "erprm", "best_of_n.json"), {
      "budgets": [1, 2, 4], "num_problems": 8, "n_max": 4, "draws": 10, "mean_accuracy": 0.3,
      "methods": {k: {"accuracy": [0.3, 0.3, v], "stderr": [0.01, 0.01, 0.02]}
                  for k, v in names.items()},
      "prms": {"ER-PRM (eta=2)": {"kind": "prm", "label": "2.0"},
               "hard PRM (eta=inf)": {"kind": "prm", "label": "inf"},
               "soft PRM (eta->0)": {"kind": "prm", "label": "0.0"},
               "ORM (outcome)": {"kind": "orm", "label": ""}}})
  manifest = {"preset": preset, "command": "prl-jax reproduce --preset fake", "workdir": root,
              "runs": runs,
              "sft": {"dir": "sft", "hf": "sft/final_hf", "train": _stage("sft/train", 5.0),
                      "evals": evals("sft", {"eval": 0, "heldout": 0})},
              "erprm": {"results": "erprm/best_of_n.json", "agg": "min", "eta": 2.0,
                        "stage": _stage("erprm", 7.0)}}
  return collect.save_results(root, manifest)


def test_report_from_json_alone(tmp_path):
  root = str(tmp_path)
  results = _fake_workdir(root)
  agg = results["aggregates"]
  # RLOO's final training reward: last 2 steps of seeds 0 and 1 -> mean of 0.55, 0.56 (+0.01 each).
  assert agg["target"]["value"] == pytest.approx(np.mean([0.55, 0.56]))
  # 2-step means of RLOO seed 0 are 0.15, 0.25, ..., 0.55 at steps 2..6: the target is first
  # reached at step 6 by seed 1 (0.56 >= 0.555) and never by seed 0 (0.55 < 0.555).
  assert agg["policies"]["rloo"]["steps_to_target"] == [None, 6]
  # PRIME is 0.05 higher: its 2-step means reach 0.555 at step 6 (0.60), 6 (0.61).
  assert agg["policies"]["prime"]["steps_to_target"] == [6, 6]
  assert agg["policies"]["prime"]["eval"]["eval"]["mean@n"] == pytest.approx([0.5, 0.51])
  assert agg["prm_accuracy"]["prime"]["last"] == pytest.approx([0.775, 0.775])
  assert agg["erprm"]["accuracy"]["ER-PRM"][-1] == 0.5
  assert list(agg["erprm"]["columns"]) == list(claims_lib.ERPRM_ROLES)

  path = report.write_report(root)
  text = open(path).read()
  for name in ("| sft |", "| rloo | 2 |", "| prime | 2 |", "ER-PRM (eta=2) [min]",
               "PRIME reaches RLOO's final training reward in fewer steps"):
    assert name in text
  for png in ("train_reward", "prm_accuracy", "pass_at_k_eval", "pass_at_k_heldout",
              "best_of_n"):
    assert os.path.getsize(os.path.join(root, "plots", f"{png}.png")) > 0
  # Deleting the report and the plots regenerates the same text from the JSON files.
  os.remove(path)
  for name in os.listdir(os.path.join(root, "plots")):
    os.remove(os.path.join(root, "plots", name))
  assert cli.main(["report", root]) == 0
  assert open(path).read() == text


def test_report_without_results_json_says_what_to_run(tmp_path, capsys):
  assert cli.main(["report", str(tmp_path)]) == 2
  assert "run `prl-jax reproduce" in capsys.readouterr().err


def test_report_of_a_partial_reproduction(tmp_path):
  """After SFT alone (a killed run) the report still renders, the rest marked as not run."""
  root = str(tmp_path)
  results = _fake_workdir(root)
  manifest = {k: results[k] for k in ("preset", "command", "workdir", "sft")}
  manifest.update(runs=[], erprm=None)
  collect.save_results(root, manifest)
  text = open(report.write_report(root)).read()
  assert "| sft | 1 |" in text and "Not run yet." in text
  assert "**not run**" in text


# ------------------------------------------------------------------------------------------------
# Presets and stage markers.


def test_presets():
  demo, mini = get_preset("demo"), get_preset("mini")
  assert set(demo.methods) == set(mini.methods) == {"rloo", "grpo", "reinforce", "ppo", "raft",
                                                    "prime", "prl", "frpo", "repirl"}
  assert len(mini.seeds) >= 3 and mini.rl_steps >= 60
  assert not demo.overrides and not mini.overrides  # the configs/mini budget, unchanged
  with pytest.raises(ConfigError, match="choose one of"):
    get_preset("huge")
  with pytest.raises(ConfigError, match="unknown methods"):
    Preset(name="x", methods=("dpo",), seeds=(0,), rl_steps=1, window=1)
  with pytest.raises(ConfigError, match="repeats a seed"):
    Preset(name="x", methods=("rloo",), seeds=(0, 0), rl_steps=1, window=1)
  assert set(PRESETS) == {"demo", "mini", "lab", "lab-demo"}


def test_training_time_counts_the_steps_an_earlier_call_trained():
  from prl_jax.reproduce.collect import _train_seconds
  rows = [{"step": 1, "time/step_s": 5.0}, {"step": 2, "time/step_s": 2.0}]
  # A lab gate trained both steps; the arm's stage only found them done.
  assert _train_seconds({"train": {"seconds": 1.5}, "rows": rows}) == 7.0
  # The stage trained them itself: its wall time also holds compilation and the export.
  assert _train_seconds({"train": {"seconds": 30.0}, "rows": rows}) == 30.0


def test_run_stage_skips_only_a_finished_stage_with_the_same_inputs(tmp_path):
  root, calls = str(tmp_path), []
  run = lambda inputs, outputs=(): run_stage(root, "a/b", inputs, "cmd",
                                             lambda: calls.append(1), outputs)
  first = run({"x": 1})
  assert not first["cached"] and os.path.exists(stage_marker(root, "a/b"))
  again = run({"x": 1})
  assert again["cached"] and again["seconds"] == first["seconds"] and len(calls) == 1
  run({"x": 2})  # other inputs: runs again
  assert len(calls) == 2
  run({"x": 2}, outputs=["missing.txt"])  # an output is gone: runs again
  assert len(calls) == 3


def test_stage_inputs_change_when_a_config_file_or_one_it_imports_changes(tmp_path, monkeypatch):
  """Editing a config (here the budget the arm's file imports) reruns the stages that read it;
  logging overrides do not."""
  from prl_jax.reproduce.stages import stage_inputs
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(sys, "dont_write_bytecode", True)
  (tmp_path / "budget_x.py").write_text(
      "from configs import base\ndef get_config():\n  c = base.get_config()\n"
      "  c.optim.lr = 1e-3\n  return c\n")
  arm = tmp_path / "arm.py"
  arm.write_text("import budget_x\ndef get_config():\n  return budget_x.get_config()\n")
  before = stage_inputs(["seed=1"], str(arm))
  assert before == stage_inputs(["seed=1", "log.progress=true"], str(arm))
  assert before["overrides"] == ["seed=1"] and before != stage_inputs(["seed=2"], str(arm))
  (tmp_path / "budget_x.py").write_text((tmp_path / "budget_x.py").read_text()
                                        .replace("1e-3", "0.003"))
  monkeypatch.delitem(sys.modules, "budget_x")  # a reproduction reads it in a fresh process
  assert stage_inputs(["seed=1"], str(arm))["config"] != before["config"]
  assert "config" not in stage_inputs(["seed=1"])  # no file: the overrides alone


_ORPHAN_PARENT = """
import os, sys, time
from prl_jax.reproduce.stages import worker_pool
from tests.test_reproduce import _write_pid_and_sleep
with worker_pool(1) as pool:
  pool.submit(_write_pid_and_sleep, sys.argv[1])
  while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
  os._exit(0)  # killed: no shutdown of the pool
"""


def _write_pid_and_sleep(path):
  with open(path + ".tmp", "w") as fh:
    fh.write(str(os.getpid()))
  os.replace(path + ".tmp", path)
  time.sleep(600)


def test_workers_end_when_the_reproduction_is_killed(tmp_path):
  """A killed `prl-jax reproduce` must not leave workers training on into its workdir."""
  pid_file = str(tmp_path / "worker.pid")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", _ORPHAN_PARENT, pid_file], cwd=root, check=True,
                 timeout=120)
  worker = int(open(pid_file).read())
  deadline = time.time() + 30
  while time.time() < deadline and _alive(worker):
    time.sleep(0.2)
  assert not _alive(worker), "the orphaned worker kept running"


def _touch_or_fail(path):
  if path is None:
    raise ValueError("this call fails")
  open(path, "w").close()


def test_in_parallel_runs_every_call_then_raises_the_first_error(tmp_path):
  from prl_jax.reproduce.stages import in_parallel
  paths = [str(tmp_path / f"call{i}") for i in range(3)]
  with pytest.raises(ValueError, match="this call fails"):
    in_parallel(_touch_or_fail, [(paths[0],), (None,), (paths[1],), (paths[2],)], 2)
  assert all(os.path.exists(p) for p in paths)


class _Interrupted(Exception):
  pass


def _mark_and_sleep_until_terminated(path):
  """A stand-in for a training run: SIGTERM makes it stop (as a run stops after saving its step)
  and leaves the worker alive to take the next queued call."""
  def stop(signum, frame):
    raise _Interrupted
  signal.signal(signal.SIGTERM, stop)
  open(path, "w").close()
  try:
    time.sleep(600)
  except _Interrupted:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    open(path + ".stopped", "w").close()


def test_an_interrupted_reproduction_stops_its_workers_and_drops_queued_calls(tmp_path):
  """Ctrl-C of `prl-jax reproduce` (or `kill -INT` of it alone) with more runs than workers: the
  running calls stop and the queued ones never start, instead of the pool running every queued
  call before the interpreter could exit (as it did: the reproduction went on after printing
  "interrupted")."""
  from prl_jax.reproduce.stages import in_parallel
  marks = [str(tmp_path / f"call{i}") for i in range(5)]

  def interrupt_once_two_run():
    while sum(map(os.path.exists, marks)) < 2:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR1)

  def raise_interrupted(signum, frame):
    raise KeyboardInterrupt
  previous = signal.signal(signal.SIGUSR1, raise_interrupted)
  threading.Thread(target=interrupt_once_two_run, daemon=True).start()
  start = time.time()
  try:
    with pytest.raises(KeyboardInterrupt):
      in_parallel(_mark_and_sleep_until_terminated, [(m,) for m in marks], 2)
  finally:
    signal.signal(signal.SIGUSR1, previous)
  assert time.time() - start < 90  # the calls sleep 600 s each
  started = [m for m in marks if os.path.exists(m)]
  assert len(started) == 2 and all(os.path.exists(m + ".stopped") for m in started)
  time.sleep(2)  # the workers are gone: the three queued calls never run
  assert sum(map(os.path.exists, marks)) == 2


_STOPPED_WORKER = """
import os, signal, threading
from prl_jax.reproduce import stages
stopping = threading.Event()
stages._end_with_parent(os.getppid(), stopping)

def run():  # a stand-in training run: SIGTERM makes it finish its step and return
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  threading.Timer(0.5, stopping.set).start()  # the reproduction is interrupted
  stop.wait(600)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)

stages._unless_stopping(run)
threading.Event().wait()  # the next call never comes: the pool's queue lock is a dead worker's
"""


def test_a_stopping_worker_ends_once_its_call_returned():
  """An interrupted reproduction waited two minutes for a worker whose run had already stopped:
  the worker waited for its next call on a queue lock that a killed sibling held, and its hard
  exit came KILL_AFTER_S (120 s) after the SIGTERM. It now ends once its call has returned."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  start = time.time()
  done = subprocess.run([sys.executable, "-c", _STOPPED_WORKER], cwd=root, timeout=60)
  assert done.returncode == 1 and time.time() - start < 30


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not yet reaped) is not running
    return fh.read().split(")")[-1].split()[0] != "Z"


def test_a_stage_that_fails_leaves_no_marker(tmp_path):
  def boom():
    raise RuntimeError("killed")
  with pytest.raises(RuntimeError):
    run_stage(str(tmp_path), "s", {}, "cmd", boom)
  assert not os.path.exists(stage_marker(str(tmp_path), "s"))


# ------------------------------------------------------------------------------------------------
# End to end.

TINY = Preset(
    name="test", methods=("rloo", "prime"), seeds=(0, 1), rl_steps=3, window=2, eval_n=4,
    eval_problems=8, heldout_problems=8,
    erprm=ErprmOptions(label_problems=8, solutions_per_problem=2, prm_steps=4, prm_batch_size=8,
                       eval_problems=8, n_max=4, draws=10),
    erprm_overrides=("algo.erprm.num_completions=4",),
    overrides=("mesh.num_devices=1", "rollout.prompts_per_step=8", "rollout.n=4",
               "train.mini_batch_size=16"),
    sft_overrides=("sft.steps=40",))


def _mtimes(directory):
  return {name: os.stat(os.path.join(directory, name)).st_mtime_ns
          for name in sorted(os.listdir(directory))}


@pytest.mark.slow
def test_reproduce_end_to_end(tmp_path):
  root = str(tmp_path / "work")
  results = reproduce(TINY, root)
  assert [(r["method"], r["seed"]) for r in results["runs"]] == [
      ("rloo", 0), ("rloo", 1), ("prime", 0), ("prime", 1)]
  for run in results["runs"]:
    assert os.path.isdir(os.path.join(root, run["dir"], "final_hf"))
    rows = read_metrics(os.path.join(root, run["metrics"]))
    assert [r["step"] for r in rows] == [1, 2, 3]
  text = open(os.path.join(root, "report.md")).read()
  for name in ("sft", "rloo", "prime"):
    assert f"| {name} |" in text
  assert set(results["aggregates"]["policies"]) == {"sft", "rloo", "prime"}
  for png in ("train_reward", "prm_accuracy", "pass_at_k_eval", "pass_at_k_heldout",
              "best_of_n"):
    assert os.path.exists(os.path.join(root, "plots", f"{png}.png"))
  assert results["aggregates"]["erprm"]["n_max"] == 4

  # The report regenerates identically from the JSON files.
  os.remove(os.path.join(root, "report.md"))
  report.write_report(root)
  assert open(os.path.join(root, "report.md")).read() == text

  # A second call skips every finished stage: SFT is not retrained, nothing is re-evaluated.
  sft_files = _mtimes(os.path.join(root, "sft", "final_hf"))
  markers = _mtimes(os.path.join(root, "stages", "rl", "prime", "seed1"))
  again = reproduce(TINY, root)
  assert _mtimes(os.path.join(root, "sft", "final_hf")) == sft_files
  assert _mtimes(os.path.join(root, "stages", "rl", "prime", "seed1")) == markers
  assert again["aggregates"] == results["aggregates"]

  # A run killed after its last checkpoint but before its export resumes there: no step is
  # trained again (metrics.jsonl keeps its 3 rows) and the export is written.
  run_dir = os.path.join(root, "rl", "rloo", "seed0")
  shutil.rmtree(os.path.join(run_dir, "final_hf"))
  os.remove(stage_marker(root, "rl/rloo/seed0/train"))
  metrics = open(os.path.join(run_dir, "metrics.jsonl")).read()
  reproduce(TINY, root)
  assert os.path.isdir(os.path.join(run_dir, "final_hf"))
  assert open(os.path.join(run_dir, "metrics.jsonl")).read() == metrics
