"""The lab's gates on hand-made numbers and metric rows."""

import pytest

from prl_jax.reproduce import gates


def _rows(rewards, key="rollout/reward"):
  return [{"step": i + 1, key: r} for i, r in enumerate(rewards)]


def test_capacity_and_base_policy_gates():
  assert gates.capacity_gate(0.985)["passed"] and not gates.capacity_gate(0.97)["passed"]
  demo_like = {"plain": 0.03, "bug": 0.72, "bug_rule": 0.70}
  base = lambda mean, passed, rates=demo_like: gates.base_policy_gate(
      mean, passed, rates, slip_rate=0.02, bug_rate=0.7)
  assert base(0.10, 0.45)["passed"]
  assert not base(0.20, 0.60)["passed"]  # success not sparse
  failed = base(0.10, 0.30)
  assert not failed["passed"] and "task.register" in failed["knob"]
  # Success in the band, but the policy slips on plain lines (noise, not the demonstrator's
  # bugs) or has not learned the bugs' rule: failed, and the knob is the SFT.
  for rates in ({"plain": 0.23, "bug": 0.77, "bug_rule": 0.59},
                {"plain": 0.04, "bug": 0.9, "bug_rule": 0.45}):
    failed = base(0.09, 0.52, rates)
    assert not failed["passed"] and "sft" in failed["knob"]
    assert failed["value"]["plain_error"] == rates["plain"]


def test_oracle_gate_counts_steps_to_rloos_reward_at_step_60():
  rloo = _rows([0.1] * 45 + [0.4] * 15)  # trailing 15-step mean at step 60: 0.4
  fast = _rows([0.1] * 5 + [0.4] * 15 + [0.5] * 40)  # reaches 0.4 (15-step mean) at step 20
  gate = gates.oracle_gate(rloo, fast)
  assert gate["value"]["rloo_target"] == pytest.approx(0.4)
  assert gate["value"]["oracle_steps"] == 20 and gate["passed"]
  # 90% of RLOO's gain: 0.1 + 0.9 x 0.3 = 0.37, a 15-step mean that needs 14 steps at 0.4
  # (0.38; 13 give 0.36): RLOO's step 59, the oracle's 19. Recorded, not judged.
  assert gate["value"]["gain_level"] == pytest.approx(0.37)
  assert (gate["value"]["rloo_steps_to_level"], gate["value"]["oracle_steps_to_level"]) == (59, 19)
  slow = _rows([0.1] * 20 + [0.4] * 40)  # reaches it at step 35: 35/60 > 1/3
  assert not gates.oracle_gate(rloo, slow)["passed"]
  assert not gates.oracle_gate(rloo, _rows([0.1] * 60))["passed"]  # never
  # RLOO that never rose (noise around its start): the oracle would reach its "target" at once,
  # which proves nothing, so the gate fails and names the learning rate.
  flat = _rows([0.07, 0.06, 0.08] * 20)
  degenerate = gates.oracle_gate(flat, fast)
  assert not degenerate["passed"] and "optim.lr" in degenerate["knob"]
  short = gates.oracle_gate(rloo[:30], fast)
  assert not short["passed"] and "60 steps" in short["knob"]


def test_prime_auroc_gate_reads_the_last_window():
  rows = _rows([0.5] * 30 + [0.8] * 15, key="prm/step_auroc")
  assert gates.prime_auroc_gate(rows)["value"] == pytest.approx(0.8)
  assert gates.prime_auroc_gate(rows)["passed"]
  assert not gates.prime_auroc_gate(_rows([0.6] * 20, key="prm/step_auroc"))["passed"]
  assert gates.prime_auroc_gate([{"step": 1}])["value"] is None


def test_lab_gates_pipeline_stops_at_the_first_failing_gate(tmp_path):
  """A two-step capacity SFT cannot pass G0: the run stops there, naming the knob, with the gate
  in gates.json; a re-run reads the finished stage and the saved gate instead of redoing them."""
  import json
  import os

  from prl_jax.config import ConfigError
  from prl_jax.reproduce.lab import LabGates, run_lab_gates

  options = LabGates(eval_problems=4, overrides=(
      "sft.steps=2", "sft.batch_size=4", "sft.warmup_steps=1", "task.num_train=32",
      "mesh.num_devices=1", "checkpoint.every=2"))
  for _ in range(2):
    with pytest.raises(ConfigError, match="G0 capacity failed.*model.preset"):
      run_lab_gates(str(tmp_path), options)
  with open(tmp_path / "gates.json") as fh:
    saved = json.load(fh)["gates"]
  assert [g["name"] for g in saved] == ["G0 capacity"] and not saved[0]["passed"]
  assert 0 <= saved[0]["value"] <= 1
  assert os.path.exists(tmp_path / "capacity_sft" / "final_hf" / "config.json")


def test_capacity_is_judged_on_the_longest_chains_the_clean_sft_trains_on(monkeypatch):
  """The clean SFT trains on 2-12 operations; G0 evaluates 12-operation chains only (the held-out
  split's length), and the SFT's own config is left as it was."""
  from prl_jax.data import register
  from prl_jax.reproduce import lab

  config = lab.load(lab.config_file(lab.lab_configs_dir(), "sft_clean"), ["task.min_ops=2"])
  seen = {}

  def fake_evaluate(cfg, run_dir, hf_dir, n):
    seen["ops"] = (cfg.task.min_ops, cfg.task.max_ops)
    chains = register.generate(4, cfg.task.max_ops, seed=0)
    return {}, [{"greedy_response": ex["solution"]} for ex in chains], chains

  monkeypatch.setattr(lab, "_evaluate", fake_evaluate)
  gate = lab._capacity(config, "unused", "unused")
  assert seen["ops"] == (12, 12) == register.HELDOUT_OPS and config.task.min_ops == 2
  assert gate["passed"] and gate["value"] == 1.0


def test_past_failed_gates_goes_on_after_g2_and_g3_but_never_after_g1(tmp_path, monkeypatch):
  """`--past-failed-gates`: a failing G2 and G3 are recorded and the gates return (the arms run);
  without it G2 stops the run; a failing G1 stops it either way."""
  import json

  from prl_jax.config import ConfigError
  from prl_jax.reproduce import lab

  sft_passed = {"G0": True, "G1": True}
  monkeypatch.setattr(lab, "_sft_gate", lambda workdir, name, *a: {
      **gates.capacity_gate(0.99), "passed": sft_passed["G0"]} if name == lab.CAPACITY else {
      **gates.base_policy_gate(0.1, 0.5, {"plain": 0.02, "bug": 0.7, "bug_rule": 0.7},
                               slip_rate=0.02, bug_rate=0.7), "passed": sft_passed["G1"]})
  rising = _rows([0.1] * 15 + [0.5] * 45)  # both arms alike: the oracle needs 30 of 60 steps
  monkeypatch.setattr(lab, "_rl_rows", lambda workdir, method, *a: (
      _rows([0.5] * 60, key="prm/step_auroc") if method == "prime" else rising))
  with pytest.raises(ConfigError, match="G2 oracle control failed.*--past-failed-gates"):
    lab.run_lab_gates(str(tmp_path))
  measured = lab.run_lab_gates(str(tmp_path), past_failed_gates=True)
  assert [(g["name"], g["passed"]) for g in measured] == [
      ("G0 capacity", True), ("G1 base policy", True), ("G2 oracle control", False),
      ("G3 PRIME step AUROC", False)]
  with open(tmp_path / "gates.json") as fh:
    assert [g["passed"] for g in json.load(fh)["gates"]] == [True, True, False, False]
  sft_passed["G1"] = False
  with pytest.raises(ConfigError, match="G1 base policy failed"):
    lab.run_lab_gates(str(tmp_path), past_failed_gates=True)


def test_the_report_marks_claims_measured_past_a_failed_gate():
  from prl_jax.reproduce.lab_report import failed_gates_caveat
  assert failed_gates_caveat({"gates": [{"name": "G2 oracle control", "passed": True}]}) == []
  text = " ".join(failed_gates_caveat({"gates": [{"name": "G1 base policy", "passed": True},
                                                 {"name": "G2 oracle control", "passed": False}]}))
  assert "G2 oracle control failed" in text and "--past-failed-gates" in text


def test_each_gate_sft_gets_its_own_overrides_and_both_get_the_shared_ones():
  """clean_sft_overrides reach the G0 SFT only, sft_overrides the G1 SFT only (after the shared
  ones, so they win), and the G1 SFT continues WORKDIR/capacity_sft."""
  from prl_jax.reproduce.lab import LabGates, capacity_overrides, gate_sft_overrides

  options = LabGates(eval_problems=8, overrides=("a.b=1",), clean_sft_overrides=("sft.steps=9",),
                     sft_overrides=("sft.steps=7",))
  clean = capacity_overrides(options, verbose=False)
  buggy = gate_sft_overrides(options, verbose=False, workdir="w")
  assert clean[0] == buggy[0] == "a.b=1"
  assert "eval.num_problems=8" in clean and "eval.num_problems=8" in buggy
  assert "sft.steps=9" in clean and "sft.steps=7" not in clean
  assert "sft.steps=7" in buggy and "sft.steps=9" not in buggy
  assert clean[-1] == "sft.steps=9"
  assert buggy[-2:] == ["sft.steps=7", "init_from=w/capacity_sft/final_hf"]
