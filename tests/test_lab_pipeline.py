"""`prl-jax reproduce --preset lab`: t-test verdicts by hand, sample efficiency with censoring, the
reward-hacking monitor, and the whole pipeline (gates -> arms -> claims -> report) on a tiny
model (`slow`)."""

import dataclasses
import glob
import json
import math
import os

import pytest
from scipy import stats

from prl_jax.config import ConfigError
from prl_jax.eval.prm_experiment import ErprmOptions
from prl_jax.reproduce import claims as claims_lib
from prl_jax.reproduce import gates, lab_claims, lab_metrics
from prl_jax.reproduce.presets import LAB_ARMS, Preset, get_preset


# ------------------------------------------------------------------------------------------------
# t-tests, by hand.


def test_paired_t_test_by_hand():
  # d = 2, 3, 4: mean 3, sd 1, t = 3 / (1 / sqrt 3) = 3 sqrt 3 with 2 degrees of freedom, whose
  # CDF is 1/2 + t / (2 sqrt(2 + t^2)): p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(27 / 29).
  result = lab_claims.t_test({0: 3.0, 1: 5.0, 2: 7.0}, {0: 1.0, 1: 2.0, 2: 3.0})
  assert result["test"] == lab_claims.PAIRED
  assert result["t"] == pytest.approx(3 * math.sqrt(3))
  assert result["p"] == pytest.approx(1 - math.sqrt(27 / 29))  # 0.0351
  assert result["diff"] == pytest.approx(3.0)
  assert lab_claims.t_verdict(result) == claims_lib.REPRODUCED


def test_welch_t_test_by_hand_when_seeds_differ():
  # a: mean 2, var 1 (n 3); b: mean 5.5, var 5/3 (n 4). se^2 = 1/3 + 5/12 = 3/4,
  # t = -3.5 / sqrt(3/4); Welch df = (3/4)^2 / ((1/3)^2 / 2 + (5/12)^2 / 3).
  a, b = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 4.0, 1: 5.0, 2: 6.0, 3: 7.0}
  result = lab_claims.t_test(a, b)
  t = -3.5 / math.sqrt(0.75)
  df = 0.75 ** 2 / ((1 / 3) ** 2 / 2 + (5 / 12) ** 2 / 3)
  assert result["test"] == lab_claims.WELCH
  assert result["t"] == pytest.approx(t)
  assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
  assert result["p"] < 0.05 and lab_claims.t_verdict(result) == claims_lib.REVERSED


def test_t_test_edge_cases():
  one = lab_claims.t_test({0: 1.0}, {0: 0.0})
  assert one["p"] is None and lab_claims.t_verdict(one) == claims_lib.UNDETERMINED
  same_shift = lab_claims.t_test({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # every pair +1
  assert same_shift["p"] == 0.0 and lab_claims.t_verdict(same_shift) == claims_lib.REPRODUCED
  equal = lab_claims.t_test({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
  assert equal["p"] == 1.0 and lab_claims.t_verdict(equal) == claims_lib.NOT_REPRODUCED
  noisy = lab_claims.t_test({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 1.0, 2: 2.5})
  assert noisy["p"] > 0.05 and lab_claims.t_verdict(noisy) == claims_lib.NOT_REPRODUCED
  # Lower is better (steps): the orientation flips, the verdict favours the faster arm.
  fast = lab_claims.compare("steps", {0: 10, 1: 12, 2: 11}, {0: 40, 1: 45, 2: 41}, scale=1.0,
                            units="steps", lower_is_better=True)
  assert fast["diff"] > 0 and fast["verdict"] == claims_lib.REPRODUCED
  assert lab_claims.compare("x", None, {0: 1.0})["verdict"] == claims_lib.NOT_RUN


def test_a_significant_difference_below_the_minimum_effect_is_not_a_reproduction():
  """Three paired seeds that differ alike are significant however small the gap: 0.3 points at
  98% is not reproduced, 2 points is; steps need 10% of the slower arm's."""
  tiny = lab_claims.compare("mean@16", {0: .983, 1: .984, 2: .982}, {0: .980, 1: .981, 2: .979})
  assert tiny["p"] < 0.05 and tiny["diff"] == pytest.approx(0.3)
  assert tiny["verdict"] == claims_lib.NOT_REPRODUCED and "minimum effect of 1" in tiny["note"]
  big = lab_claims.compare("mean@16", {0: .50, 1: .52, 2: .51}, {0: .48, 1: .49, 2: .495})
  assert big["p"] < 0.05 and big["verdict"] == claims_lib.REPRODUCED
  against = lab_claims.compare("mean@16", {0: .48, 1: .49, 2: .495}, {0: .50, 1: .52, 2: .51})
  assert against["verdict"] == claims_lib.REVERSED

  def steps(fast, slow):
    return lab_claims._cost({"oracle": {"steps": dict(enumerate(fast))},
                             "rloo": {"steps": dict(enumerate(slow))}},
                            "oracle", "rloo", "steps", "steps")

  few = steps([50, 51, 52], [53, 54.2, 55])  # ~3 steps of ~54: 5.7%
  assert few["p"] < 0.05 and few["min_effect"] == pytest.approx(0.1 * (53 + 54.2 + 55) / 3)
  assert few["verdict"] == claims_lib.NOT_REPRODUCED
  assert steps([40, 41, 43], [53, 54, 55])["verdict"] == claims_lib.REPRODUCED


def _costs(steps, censored, rollouts):
  """Per-seed costs to both targets (the same numbers: the claims read each)."""
  out = {}
  for suffix in ("", lab_metrics.LEVEL):
    out.update({"steps" + suffix: dict(enumerate(steps)),
                "censored" + suffix: dict(enumerate(censored)),
                "rollouts" + suffix: dict(enumerate(rollouts))})
  return out


def test_lab_claims_on_synthetic_seeds():
  per_seed = {
      "rloo": {**_costs([60, 60, 58], [True, True, False], [9000, 9100, 8800]),
               "eval mean@n": {0: .3, 1: .32, 2: .31}},
      "oracle": {**_costs([15, 18, 20], [False] * 3, [2000, 2500, 2600]),
                 "eval mean@n": {0: .5, 1: .6, 2: .55}},
  }
  claims = {c["key"]: c for c in lab_claims.evaluate_lab_claims({"per_seed": per_seed,
                                                                 "eval_n": 16})}
  control = claims["control"]
  assert control["verdict"] == claims_lib.REPRODUCED
  assert "2 run(s) never reached" in control["comparisons"][0]["note"]
  assert [c["label"].split(",")[0] for c in control["comparisons"]] == [
      "steps to RLOO's final training reward", "rollouts to RLOO's final training reward",
      "steps to 90% of RLOO's gain", "rollouts to 90% of RLOO's gain"]
  # Level at 90% of the gain (where a decaying rate leaves both arms uncensored): the control
  # holds only when it holds there too.
  per_seed["oracle"]["steps@90"] = {0: 30, 1: 28, 2: 33}
  per_seed["rloo"]["steps@90"] = {0: 29, 1: 31, 2: 30}
  claims = {c["key"]: c for c in lab_claims.evaluate_lab_claims({"per_seed": per_seed,
                                                                 "eval_n": 16})}
  assert claims["control"]["comparisons"][0]["verdict"] == claims_lib.REPRODUCED
  assert claims["control"]["comparisons"][2]["verdict"] == claims_lib.NOT_REPRODUCED
  assert claims["control"]["verdict"] == claims_lib.NOT_REPRODUCED
  assert claims["frpo"]["verdict"] == claims_lib.NOT_RUN
  text = "\n".join(lab_claims.claims_lines(list(claims.values())))
  assert "paired t-test over 3 vs 3 seeds" in text and "p = " in text


# ------------------------------------------------------------------------------------------------
# Sample efficiency, hacking monitor.


def _rows(rewards, sampled=100, **series):
  rows = [{"step": i + 1, "rollout/reward": r, "rollout/sampled": sampled}
          for i, r in enumerate(rewards)]
  for key, values in series.items():
    for row, v in zip(rows, values):
      row[key.replace("__", "/")] = v
  return rows


def test_cost_to_target_counts_rollouts_and_censors():
  rows = _rows([0.1, 0.2, 0.5, 0.6, 0.7])
  hit = lab_metrics.cost_to_target(rows, 0.55, window=2)  # 2-step means 0.15 .35 .55 .65
  assert hit == {"steps": 4, "rollouts": 400.0, "censored": False, "steps_run": 5,
                 "rollouts_run": 500.0}
  for row, total in zip(rows, (512, 1024, 1100, 1200, 1300)):  # refills: the logged total wins
    row["rollout/sampled_total"] = total
  assert lab_metrics.cost_to_target(rows, 0.55, window=2)["rollouts"] == 1200.0
  never = lab_metrics.cost_to_target(rows, 0.9, window=2)
  assert never["censored"] and never["steps"] is None and never["rollouts"] is None
  assert (never["steps_run"], never["rollouts_run"]) == (5, 1300.0)


def test_costs_to_90_percent_of_rloos_gain_from_the_runs_metrics(tmp_path):
  """The level is RLOO's first-step reward + 0.9 x (its final reward - that), over its seeds;
  every run's steps and rollouts to it are read from its own metrics, censored where it never
  got there, beside the costs to RLOO's final reward."""
  from prl_jax.reproduce.collect import collect
  curves = {("rloo", 0): [0.1, 0.3, 0.6, 0.8, 0.9, 0.9], ("rloo", 1): [0.1, 0.2, 0.4, 0.6, 0.7, 0.8],
            ("oracle", 0): [0.1, 0.6, 0.8, 0.9, 0.9, 0.9], ("oracle", 1): [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
  runs = []
  for (arm, seed), rewards in curves.items():
    path = tmp_path / arm / f"seed{seed}"
    os.makedirs(path)
    rows = _rows(rewards, time__step_s=[1.0] * len(rewards))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs.append({"method": arm, "seed": seed, "dir": f"{arm}/seed{seed}",
                 "metrics": f"{arm}/seed{seed}/metrics.jsonl", "evals": {},
                 "train": {"seconds": 1.0}})
  manifest = {"preset": {"eval_n": 4, "window": 2, "rl_steps": 6, "claims": "lab"}, "runs": runs}
  lab = collect(str(tmp_path), manifest)["lab"]
  assert lab["target"] == pytest.approx(0.825)  # RLOO's last 2-step means 0.9 and 0.75
  assert lab["start"] == pytest.approx(0.1)
  assert lab["level"] == pytest.approx(0.1 + 0.9 * (0.825 - 0.1))  # 0.7525
  p = lab["per_seed"]
  # 2-step means: rloo 0 0.7 at step 4, 0.85 at 5; rloo 1 0.75 at step 6 (below the level);
  # oracle 0 0.7 at step 3, 0.85 at 4; oracle 1 0.55 at step 6.
  assert p["rloo"]["steps@90"] == {0: 5, 1: 6} and p["rloo"]["censored@90"] == {0: False, 1: True}
  assert p["oracle"]["steps@90"] == {0: 4, 1: 6}
  assert p["oracle"]["censored@90"] == {0: False, 1: True}
  assert p["oracle"]["rollouts@90"] == {0: 400.0, 1: 600.0}
  assert p["rloo"]["steps"] == {0: 5, 1: 6} and p["rloo"]["censored"] == {0: False, 1: True}


def test_hacking_monitor_flags_rising_process_return_with_falling_outcome():
  steps = 30
  falling = [0.5 - 0.01 * i for i in range(steps)]
  rising = [0.1 * i for i in range(steps)]
  hacked = lab_metrics.hacking_monitor(_rows(falling, repirl__return_mean=rising), hack_window=10)
  assert hacked["key"] == "repirl/return_mean" and hacked["flagged"]
  assert hacked["windows"][0]["from"] == 1 and hacked["windows"][0]["to"] == 10
  honest = lab_metrics.hacking_monitor(_rows(rising, repirl__return_mean=rising), hack_window=10)
  assert honest["flagged"] is False and honest["windows"] == []
  flat = lab_metrics.hacking_monitor(_rows([0.5, 0.49] * 15, repirl__return_mean=rising),
                                     hack_window=10)  # noise, not a fall of > 0.02
  assert flat["flagged"] is False
  assert lab_metrics.hacking_monitor(_rows(falling))["flagged"] is None  # nothing to monitor
  # RAFT on a frozen PRM selects by the aggregated score, which a policy can raise by writing
  # fewer lines while the sum of its step scores falls: the score is what is monitored.
  shrinking = [3.0 - 0.1 * i for i in range(steps)]
  raft = lab_metrics.hacking_monitor(_rows(falling, erprm__score_mean=rising,
                                           process__return_mean=shrinking), hack_window=10)
  assert raft["key"] == "erprm/score_mean" and raft["flagged"]


def test_lab_preset():
  lab = get_preset("lab")
  assert lab.methods == LAB_ARMS and len(lab.seeds) >= 3 and lab.eval_n == 16
  assert lab.gates.rl_steps <= lab.rl_steps and lab.init_stage("sft_demos_rloo") == "sft_demos"
  assert lab.init_stage("rloo") is None and lab.claims == "lab"
  with pytest.raises(ConfigError, match="must not be shorter"):
    Preset(name="x", methods=("rloo",), seeds=(0,), rl_steps=10, window=1,
           gates=gates.LabGates(rl_steps=20))
  with pytest.raises(ConfigError, match="gates.overrides"):
    Preset(name="x", methods=("rloo",), seeds=(0,), rl_steps=10, window=1,
           gates=gates.LabGates(rl_steps=5), overrides=("a.b=1",))


def test_prm_arms_wait_for_the_erprm_stage_and_read_its_prms():
  from prl_jax.reproduce.pipeline import planned_jobs
  lab = get_preset("lab")
  assert dict(lab.prm_arms) == {"erprm": "prm_eta2", "erprm_hard": "prm_hard"}
  jobs = planned_jobs(lab, "/w", "configs/lab", "/w/sft/final_hf", lambda arm: f"/w/{arm}", False)
  assert jobs[0].kind == "erprm" and jobs[0].after == ""  # the longest job starts first
  assert len(jobs) == 1 + len(lab.methods) * len(lab.seeds)
  for job in jobs[1:]:
    if job.method in ("erprm", "erprm_hard"):
      prm = "prm_eta2" if job.method == "erprm" else "prm_hard"
      assert job.after == "erprm"
      assert job.overrides == (f"algo.erprm.prm_dir={os.path.join('/w', 'erprm', prm)}",)
    else:
      assert job.after == "" and job.overrides == ()
    assert job.sft_hf == f"/w/{job.method}"
  # --no-erprm leaves out the stage and the arms that need it, nothing else.
  lean = lab.without_erprm()
  assert lean.erprm is None and lean.prm_arms == ()
  assert lean.methods == tuple(m for m in lab.methods if not m.startswith("erprm"))
  assert all(j.kind == "rl" and not j.after for j in planned_jobs(lean, "/w", "c", "s",
                                                                 lambda a: "s", False))
  with pytest.raises(ConfigError, match="not among its methods"):
    Preset(name="x", methods=("rloo",), seeds=(0,), rl_steps=1, window=1,
           prm_arms=(("erprm", "prm_eta2"),))
  with pytest.raises(ConfigError, match="without_erprm"):
    Preset(name="x", methods=("erprm",), seeds=(0,), rl_steps=1, window=1, erprm=None,
           prm_arms=(("erprm", "prm_eta2"),))


def _scheduled(job):
  """A stand-in for pipeline.run_job (module level: worker processes import it by name)."""
  if job.kind == "erprm" and job.workdir == "fails":
    raise RuntimeError("the ER-PRM stage broke")
  return {"key": job.key}


# Two worker processes (slow: 20 s of process start-up) schedule as one does in-process.
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_run_jobs_starts_a_job_after_the_one_it_waits_for(workers):
  from prl_jax.reproduce.pipeline import Job, run_jobs
  lab = get_preset("lab")

  def jobs(workdir):
    rl = lambda method, after="": Job("rl", workdir, lab, "c", "s", False, method, 0, (), after)
    return [Job("erprm", workdir, lab, "c", "s", False), rl("erprm", "erprm"), rl("rloo"),
            rl("erprm_hard", "erprm")]

  done = []
  assert run_jobs(jobs("ok"), workers, lambda job, r: done.append(r["key"]), _scheduled) == []
  assert sorted(done) == ["erprm", "erprm/seed0", "erprm_hard/seed0", "rloo/seed0"]
  assert done.index("erprm") < min(done.index("erprm/seed0"), done.index("erprm_hard/seed0"))
  # A failed stage: the jobs waiting for it fail without running; the others run.
  done = []
  failures = run_jobs(jobs("fails"), workers, lambda job, r: done.append(r["key"]), _scheduled)
  assert done == ["rloo/seed0"]
  assert sorted(job.key for job, _ in failures) == ["erprm", "erprm/seed0", "erprm_hard/seed0"]
  assert {str(err) for job, err in failures if job.kind == "rl"} == {
      "not run: it needs the erprm stage, which failed"}
  with pytest.raises(ValueError, match="never run"):
    run_jobs(jobs("ok")[1:2], 1, lambda job, r: None, _scheduled)


def test_a_run_stopped_by_a_signal_stops_the_in_process_reproduction():
  """With one worker the reproduction's Ctrl-C or SIGTERM reaches the run under way, which saves
  and raises RunInterrupted: that ends the reproduction, the next stages do not start (they used
  to, one stage per signal, as if the stopped one had failed)."""
  import pickle

  from prl_jax.reproduce.pipeline import Job, run_jobs
  from prl_jax.run.interrupt import RunInterrupted
  lab = get_preset("lab")
  started = []

  def stopped(job):
    started.append(job.key)
    raise RunInterrupted("SIGTERM", 8, "w")

  jobs = [Job("rl", "w", lab, "c", "s", False, method, 0, ()) for method in ("rloo", "oracle")]
  with pytest.raises(RunInterrupted, match="after step 8"):
    run_jobs(jobs, 1, lambda job, r: None, stopped)
  assert started == ["rloo/seed0"]
  # It crosses from a worker process whole.
  err = pickle.loads(pickle.dumps(RunInterrupted("SIGTERM", 8, "w")))
  assert (err.signal_name, err.step, err.workdir) == ("SIGTERM", 8, "w") and "rerun" in str(err)


def test_best_of_n_runs_when_a_gate_after_the_sft_stops_the_arms(tmp_path, monkeypatch):
  # ER-PRM best-of-N needs the SFT policy only: it runs when G1 passed and a later gate failed,
  # never when the SFT itself failed its gate.
  from prl_jax.reproduce import pipeline
  ran = []
  monkeypatch.setattr(pipeline, "erprm_job", lambda job: ran.append(job) or
                      {"results": os.path.join("erprm", "best_of_n.json")})
  lab, work = get_preset("lab"), str(tmp_path)
  assert lab.erprm is not None and lab.erprm_config == "erprm"
  assert pipeline._best_of_n_without_rl(work, lab, "configs/lab", False) == ""  # no gates yet
  record = lambda passed: json.dump({"gates": [{"name": "G0 capacity", "passed": True},
                                               {"name": gates.BASE_POLICY, "passed": passed}]},
                                    open(os.path.join(work, "gates.json"), "w"))
  record(False)
  assert pipeline._best_of_n_without_rl(work, lab, "configs/lab", False) == "" and not ran
  record(True)
  message = pipeline._best_of_n_without_rl(work, lab, "configs/lab", False)
  assert len(ran) == 1 and ran[0].sft_hf == os.path.join(work, "sft", "final_hf")
  assert "best_of_n.md" in message
  no_erprm = Preset(name="x", methods=("rloo",), seeds=(0,), rl_steps=10, window=1, erprm=None)
  assert pipeline._best_of_n_without_rl(work, no_erprm, "configs/lab", False) == ""


def test_best_of_n_columns_are_the_seed_means():
  from prl_jax.reproduce.collect import _erprm_columns
  results = {"prms": {"ER-PRM (eta=2)": {"kind": "prm", "label": "2.0"},
                      "ER-PRM (eta=2) seed 1": {"kind": "prm", "label": "2.0"},
                      "ORM (outcome)": {"kind": "orm", "label": ""}},
             "seed_groups": {"ER-PRM (eta=2) [min], 2 seeds": {"kind": "prm", "label": "2.0"},
                             "ORM (outcome), 2 seeds": {"kind": "orm", "label": ""}},
             "methods": {m: {} for m in ("ER-PRM (eta=2) [min], 2 seeds", "ORM (outcome), 2 seeds",
                                         "majority vote", "oracle (pass@N)")}}
  columns = _erprm_columns(results, "min")
  assert columns["ER-PRM"] == "ER-PRM (eta=2) [min], 2 seeds"
  assert columns["ORM"] == "ORM (outcome), 2 seeds" and columns["majority"] == "majority vote"
  del results["seed_groups"]
  results["methods"]["ER-PRM (eta=2) [min]"] = {}
  assert _erprm_columns(results, "min")["ER-PRM"] == "ER-PRM (eta=2) [min]"


def test_a_preset_without_held_out_problems_evaluates_and_reports_the_eval_split_only():
  """heldout_problems=0 (the lab demo: its policy never saw a 12-operation chain): no held-out
  evaluation stage, and the report's table has no held-out columns (rather than a column of 0s)."""
  from prl_jax.reproduce.lab_report import main_table
  assert get_preset("lab-demo").splits == ("eval",)
  assert get_preset("lab").splits == ("eval", "heldout")
  with pytest.raises(ConfigError, match="heldout_problems must be >= 0"):
    dataclasses.replace(TINY_LAB, heldout_problems=-1)
  per_seed = {"rloo": {"final_reward": {0: 0.9}, "eval mean@n": {0: 0.8},
                       "heldout mean@n": {0: 0.1}}}
  agg = {"lab": {"per_seed": per_seed}, "eval_n": 4,
         "policies": {"sft": {"eval": {"eval": {"mean@n": [0.1]}, "heldout": {"mean@n": [0.0]}}}}}
  for heldout, split_columns in ((4, 6), (0, 3)):
    manifest = {"preset": {"methods": ["rloo"], "heldout_problems": heldout}}
    head, _, sft_row, rloo_row = main_table(agg, manifest).splitlines()
    # policy, seeds, the splits' mean@n / pass@n / greedy, entropy, KL
    assert head.count("|") - 1 == len(sft_row.split("|")) - 2 == split_columns + 4
    assert ("held-out" in head) == bool(heldout) and "80.0" in rloo_row


def test_the_budget_is_read_from_the_runs_saved_configs(tmp_path):
  """The report's budget line comes from what each run was configured with; a run not started
  yet (no config.json) is skipped, and arms that spent different budgets are all named."""
  from prl_jax.reproduce.collect import run_budgets, saved_configs
  for name, prompts, n in (("a", 4, 8), ("b", 4, 8), ("c", 16, 8)):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "config.json").write_text(
        json.dumps({"rollout": {"prompts_per_step": prompts, "n": n}}))
  runs = [{"dir": name} for name in ("a", "b", "missing")]
  assert run_budgets(saved_configs(str(tmp_path), runs)) == [[4, 8]]
  assert run_budgets(saved_configs(str(tmp_path), runs + [{"dir": "c"}])) == [[4, 8], [16, 8]]


def test_the_report_names_the_runs_learning_rate_schedule(tmp_path):
  """The deviation line on the optimizer says how the runs' learning rate moved, read from their
  saved configs: the lab decays it where the papers keep it constant."""
  from prl_jax.reproduce.collect import run_schedules, saved_configs
  from prl_jax.reproduce.lab_report import SCHEDULES
  for name, schedule in (("a", "cosine"), ("b", "cosine"), ("c", "constant")):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "config.json").write_text(json.dumps({"optim": {"schedule": schedule}}))
  runs = [{"dir": "a"}, {"dir": "b"}, {"dir": "x"}]
  assert run_schedules(saved_configs(str(tmp_path), runs)) == ["cosine"]
  assert run_schedules(saved_configs(str(tmp_path), [{"dir": d} for d in "abc"])) == [
      "constant", "cosine"]
  assert set(SCHEDULES) == {"constant", "cosine", "linear"}  # configs/base.py's choices


def test_saved_steps_reads_finished_step_directories_only(tmp_path):
  """The newest finished checkpoint step, as Orbax lays steps out: half-written (temporary) and
  `.broken` steps do not count; no checkpoints at all is None."""
  from prl_jax.reproduce.pipeline import saved_steps
  assert saved_steps(str(tmp_path)) is None
  for name in ("10", "20", "30.orbax-checkpoint-tmp-1733", "40.broken"):
    os.makedirs(tmp_path / "checkpoints" / name)
  assert saved_steps(str(tmp_path)) == 20


# ------------------------------------------------------------------------------------------------
# End to end on a tiny model.

TINY_OVERRIDES = ("model.preset=tiny", "sft.steps=4", "sft.batch_size=8", "sft.warmup_steps=1",
                  "task.num_train=64", "mesh.num_devices=1", "checkpoint.every=2",
                  "rollout.prompts_per_step=4", "rollout.n=4", "train.mini_batch_size=16",
                  "filter.max_rounds=1")
TINY_LAB = Preset(
    name="tiny-lab", methods=("rloo", "oracle", "prime", "sft_demos_rloo", "erprm"), seeds=(0, 1),
    rl_steps=4, window=2, eval_n=4, eval_problems=4, heldout_problems=4,
    heldout_max_new_tokens=64, heldout_overrides=("eval.heldout_max_new_tokens=64",),
    erprm=ErprmOptions(label_problems=4, solutions_per_problem=2, prm_steps=2, prm_batch_size=4,
                       eval_problems=4, n_max=2, draws=4),
    erprm_overrides=("algo.erprm.num_completions=2",), erprm_config="erprm",
    prm_arms=(("erprm", "prm_eta2"),), configs="lab", arm_stages=(("sft_demos_rloo", "sft_demos"),),
    gates=gates.LabGates(rl_steps=3, gate_step=3, window=2, eval_problems=4,
                         overrides=TINY_OVERRIDES),
    overrides=TINY_OVERRIDES, kl_problems=2, claims="lab")


@pytest.mark.slow
def test_lab_preset_end_to_end(tmp_path, monkeypatch):
  """Gates (made to pass: a 4-step SFT cannot reach them), arms x seeds with the seed-0 gate runs
  continued rather than retrained, KL stages, claims and the report; a re-run skips everything."""
  from prl_jax.reproduce.pipeline import reproduce
  from prl_jax.run.metrics_file import read_metrics

  for name in ("capacity_gate", "base_policy_gate", "oracle_gate", "prime_auroc_gate"):
    original = getattr(gates, name)
    monkeypatch.setattr(gates, name, lambda *a, _f=original, **k: {**_f(*a, **k), "passed": True})
  root = str(tmp_path / "work")
  results = reproduce(TINY_LAB, root)  # configs/lab of the checkout
  assert [g["name"] for g in results["gates"]] == ["G0 capacity", "G1 base policy",
                                                   "G2 oracle control", "G3 PRIME step AUROC"]
  # The gate's 3 steps were continued to 4, not retrained: one row per step.
  rows = read_metrics(os.path.join(root, "rl", "rloo", "seed0", "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  demos = next(r for r in results["runs"] if r["method"] == "sft_demos_rloo")
  assert demos["init"].endswith(os.path.join("sft_demos", "final_hf"))
  lab = results["aggregates"]["lab"]
  assert set(lab["per_seed"]) == {"rloo", "oracle", "prime", "sft_demos_rloo", "erprm"}
  # The ER-PRM arm picked with the PRM of this workdir's ER-PRM stage.
  with open(os.path.join(root, "rl", "erprm", "seed1", "config.json")) as fh:
    assert json.load(fh)["algo"]["erprm"]["prm_dir"] == os.path.join(root, "erprm", "prm_eta2")
  assert os.path.isfile(os.path.join(root, "erprm", "best_of_n.json"))
  for arm, values in lab["per_seed"].items():
    assert len(values["eval mean@n"]) == 2 and len(values["heldout pass@n"]) == 2
  kl_files = glob.glob(os.path.join(root, "rl", "*", "seed*", "kl_init.json"))
  assert len(kl_files) == 10  # 5 arms x 2 seeds
  for path in kl_files:
    with open(path) as fh:
      kl = json.load(fh)
    assert kl["kl_seq"] >= -3 * kl["kl_seq_se"] - 1e-6, path  # KL >= 0 up to sampling noise
  assert set(lab["per_seed"]["prime"]["auroc"]) == {0, 1}  # None where no batch could judge
  with open(os.path.join(root, "rl", "prime", "seed1", "eval_heldout", "results.json")) as fh:
    assert json.load(fh)["settings"]["max_new_tokens"] == 64
  assert {c["key"] for c in results["claims"]} >= {"control", "prime_speed", "repirl"}
  text = open(os.path.join(root, "report.md")).read()
  # The budget line names what the runs spent (the overrides' 4 x 4), not configs/lab's 16 x 8.
  assert results["aggregates"]["budgets"] == [[4, 4]]
  assert "every arm 4 prompts x 4 responses per step" in text
  assert results["aggregates"]["schedules"] == ["cosine"]  # configs/lab/budget.py's
  assert "its learning rate decaying to 0 over the run by a cosine" in text
  for part in ("## Gates", "G2 oracle control", "## Sample efficiency", "## Step AUROC",
               "## Reward-hacking monitor", "paired t-test", "## Deviations", "| sft_demos |",
               "| clean SFT (G0) |"):
    assert part in text
  # The seed-0 runs the gates trained count their steps' time, not only the continuation's.
  rows = read_metrics(os.path.join(root, "rl", "oracle", "seed0", "metrics.jsonl"))
  oracle_train = results["aggregates"]["policies"]["oracle"]["train_seconds"]
  assert oracle_train[0] >= sum(r["time/step_s"] for r in rows)
  # (No AUROC band here: a tiny batch rarely holds both a right and a first wrong line.)
  for png in ("lab_reward", "lab_entropy"):
    assert os.path.getsize(os.path.join(root, "plots", f"{png}.png")) > 0
  markers = os.stat(os.path.join(root, "stages", "rl", "prime", "seed1", "kl.json")).st_mtime_ns
  again = reproduce(TINY_LAB, root)
  assert again["aggregates"]["lab"]["per_seed"] == lab["per_seed"]
  assert os.stat(os.path.join(root, "stages", "rl", "prime", "seed1",
                              "kl.json")).st_mtime_ns == markers
