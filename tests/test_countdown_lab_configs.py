"""The countdown sub-lab (configs/lab/countdown, docs/lab_countdown.md): every config loads and
validates, the arms differ from GRPO in their KL term only, and the report's tests run."""

import dataclasses
import json
import os

import pytest

from prl_jax.config import load_config_file
from prl_jax.reproduce import lab_countdown_report as report
from prl_jax.reproduce.lab_countdown import ARMS, configs_dir
from prl_jax.run.config_checks import check_config
from prl_jax.run.context import validate

NAMES = ("budget", "sft", "grpo", "grpo_kl", "frpo")
# The KL term of each arm: all it may change against configs/lab/countdown/grpo.py.
KL_TERM = {"grpo": set(), "grpo_kl": {"algo.loss.kl_kind", "algo.loss.kl_coef"},
           "frpo": {"method", "algo.prl.eta"}}


def _load(name):
  return load_config_file(os.path.join(configs_dir(), f"{name}.py"))


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def _diff(a, b):
  fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
  return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def test_every_config_loads_and_validates(tmp_path):
  assert set(ARMS) <= set(NAMES)
  for name in NAMES:
    config = _load(name)
    assert (config.model.preset, config.task.name) == ("lab", "countdown"), name
    assert config.task.countdown.min_solutions >= 2, name
    check_config(config)
    config.init_from = str(tmp_path) if config.init_from else ""  # stand-in for the SFT's output
    validate(config)
  assert _load("sft").task.demonstrator == "uniform"


def test_arms_differ_from_grpo_only_in_their_kl_term():
  grpo = _load("grpo")
  for arm in ARMS:
    diff = _diff(_load(arm), grpo)
    assert diff <= KL_TERM[arm], (arm, diff - KL_TERM[arm])
  frpo, grpo_kl = _load("frpo"), _load("grpo_kl")
  assert grpo_kl.algo.loss.kl_coef * frpo.algo.prl.eta == pytest.approx(1.0)
  assert grpo_kl.algo.loss.kl_kind == "k3" and frpo.method == "frpo"
  assert {_load(a).algo.loss.dual_clip for a in ARMS} == {3.0}
  assert grpo.algo.loss.kl_coef == 0.0 and not grpo.filter.enable
  # The SFT shares the arms' task, model and budget.
  assert _diff(_load("sft"), grpo) <= {"method", "init_from", "algo.loss.dual_clip",
                                       "task.demonstrator", "sft.steps", "checkpoint.every"}


def _explore(pass1, pass64, distinct, entropy, kl):
  return {"pass@1": pass1, "pass@8": pass64, "pass@64": pass64, "distinct_mean": distinct,
          "distinct_share": 0.5, "greedy": 0.0, "solved": pass64, "pass_at_k": [pass1, pass64],
          "kl": {"entropy_token": entropy, "kl_seq": kl, "kl_token": kl / 40}}


def test_report_pairs_seeds_and_orients_the_claims(tmp_path):
  wd = str(tmp_path)
  def put(rel, explore, rows=()):
    os.makedirs(os.path.join(wd, rel), exist_ok=True)
    with open(os.path.join(wd, rel, "explore.json"), "w") as fh:
      json.dump(explore, fh)
    with open(os.path.join(wd, rel, "metrics.jsonl"), "w") as fh:
      fh.writelines(json.dumps(r) + "\n" for r in rows)

  put("sft", _explore(0.2, 0.9, 5.0, 0.5, 0.0))
  for seed in range(3):
    rows = [{"step": 1, "rollout/reward": 0.5, "policy/entropy": 0.3 + seed}]
    put(f"rl/grpo/seed{seed}", _explore(0.6, 0.8 + 0.01 * seed, 2.0 + 0.1 * seed, 0.2, 9.0),
        rows)
    put(f"rl/grpo_kl/seed{seed}", _explore(0.5, 0.85, 3.0, 0.3, 4.0 + seed), rows)
    put(f"rl/frpo/seed{seed}", _explore(0.55, 0.9 + 0.02 * seed, 4.0 + 0.3 * seed, 0.4, 2.0),
        rows)
  results = report.write(wd, ARMS, (0, 1, 2, 3), {"window": 5})
  tests = {(t["control"], t["metric"]): t for t in results["tests"]}
  t = tests[("grpo", "pass@64")]
  assert t["test"] == "paired t" and t["n"] == [3, 3] and t["diff"] == pytest.approx(10 + 1)
  assert tests[("grpo", "kl_seq")]["diff"] == pytest.approx(7.0)  # lower KL favours FRPO
  assert tests[("grpo", "kl_seq")]["verdict"] == "reproduced"
  assert tests[("grpo", "pass@1")]["diff"] == pytest.approx(-5.0)
  assert results["per_seed"]["frpo"]["train_entropy"] == {0: 0.3, 1: 1.3, 2: 2.3}
  text = open(os.path.join(wd, "report.md")).read()
  assert "| pass@64 (%) | 90 |" in text and "frpo" in text
  assert "| SFT (1) | 20.0 | 90.0 |" in text and "| frpo (3) | 55.0 |" in text


@pytest.mark.slow  # ~35-95 s: the sampler, the KL's forward passes and the problem set compile
def test_explore_command_measures_a_policy_against_itself(tmp_path, capsys):
  # A tiny random policy explored against itself: every measure is written, the KL is zero.
  import jax
  from prl_jax import cli
  from prl_jax.models import hf
  from prl_jax.models.config import preset
  from prl_jax.models.tokenizer import CharTokenizer
  from prl_jax.models.transformer import init_params
  tok = CharTokenizer()
  cfg = preset("tiny", vocab_size=tok.vocab_size)
  policy = str(tmp_path / "policy")
  hf.save_hf(policy, cfg, init_params(cfg, jax.random.key(0)))
  tok.save(policy)
  out = tmp_path / "explore" / "x.json"
  assert cli.main(["explore", "--config", os.path.join(configs_dir(), "grpo.py"),
                   f"--config.init_from={policy}", "--config.task.num_train=32",
                   "--config.task.num_eval=8", "--config.mesh.num_devices=1",
                   "--config.rollout.max_new_tokens=12", "--workdir", str(tmp_path / "explore"),
                   "--model", policy, "--reference", policy, "--problems", "3", "--n", "4",
                   "--kl-problems", "2", "--kl-n", "2", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["problems"] == 3 and len(result["pass_at_k"]) == 4
  assert abs(result["kl"]["kl_seq"]) < 1e-5
  assert "distinct correct solutions" in capsys.readouterr().out


def test_kl_weight_sets_both_kl_arms_and_leaves_grpo_alone():
  from prl_jax.config import ConfigError
  from prl_jax.reproduce.lab_countdown import CountdownLab, kl_weight_overrides
  from prl_jax.reproduce.stages import load
  configs = {arm: load(os.path.join(configs_dir(), f"{arm}.py"), kl_weight_overrides(arm, 0.03))
             for arm in ARMS}
  assert configs["frpo"].algo.prl.eta == pytest.approx(1 / 0.03)
  assert configs["grpo_kl"].algo.loss.kl_coef == pytest.approx(0.03)
  assert _diff(configs["grpo"], _load("grpo")) == set()
  assert kl_weight_overrides("frpo", None) == []  # the configs' own 0.1
  for bad in (0.0, -0.1):
    with pytest.raises(ConfigError, match="1/eta must be > 0"):
      CountdownLab(kl_weight=bad)


def _fake_stages(monkeypatch, trained):
  """train, sft and the exploration measures replaced by writers of their output files."""
  from prl_jax.reproduce import lab_countdown

  def fake_train(config, run_dir):
    parts = run_dir.split(os.sep)
    trained.append("/".join(parts[-2:]) if "rl" in parts else "sft")  # arm/seed<S>
    os.makedirs(os.path.join(run_dir, "final_hf"), exist_ok=True)
    for name in ("config.json", "model.safetensors"):
      open(os.path.join(run_dir, "final_hf", name), "w").close()
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as fh:
      fh.write(json.dumps({"step": 1, "rollout/reward": 0.5, "policy/entropy": 0.2}) + "\n")

  def fake_explore(config, workdir, model_dir, reference_dir, out_path, **sizes):
    with open(out_path, "w") as fh:
      json.dump(_explore(0.3, 0.8, 3.0, 0.2, 1.0), fh)

  monkeypatch.setattr(lab_countdown, "train", fake_train)
  monkeypatch.setattr(lab_countdown, "sft", fake_train)
  monkeypatch.setattr(lab_countdown, "run_exploration", fake_explore)


def test_a_variant_links_the_sft_and_the_runs_it_leaves_unchanged(tmp_path, monkeypatch):
  """--kl-weight with --from: GRPO (no weight) and the SFT are linked from the main workdir, the
  two KL arms train again; a second call of the variant trains nothing; a variant with more
  steps retrains every arm."""
  from prl_jax.reproduce.lab_countdown import CountdownLab, run_lab_countdown
  trained = []
  _fake_stages(monkeypatch, trained)
  main, sweep, longer = (str(tmp_path / n) for n in ("main", "sweep", "longer"))
  options = CountdownLab(seeds=(0, 1))
  run_lab_countdown(main, options)
  assert trained[0] == "sft" and len(trained) == 1 + 3 * 2
  trained.clear()
  weight = dataclasses.replace(options, kl_weight=0.03)
  results = run_lab_countdown(sweep, weight, base=main)
  assert sorted(trained) == [f"{a}/seed{s}" for a in ("frpo", "grpo_kl") for s in (0, 1)]
  assert os.path.realpath(os.path.join(sweep, "rl", "grpo", "seed0")) == os.path.join(
      main, "rl", "grpo", "seed0")
  assert os.path.islink(os.path.join(sweep, "sft")) and set(results["per_seed"]) == set(ARMS)
  with open(os.path.join(sweep, "stages", "rl", "frpo", "seed0", "train.json")) as fh:
    assert f"algo.prl.eta={1 / 0.03!r}" in json.load(fh)["inputs"]["overrides"]
  trained.clear()
  run_lab_countdown(sweep, weight, base=main)
  assert trained == []
  run_lab_countdown(longer, dataclasses.replace(options, rl_steps=5), base=main)
  assert len(trained) == 3 * 2 and not os.path.islink(os.path.join(longer, "rl", "grpo"))
  assert os.path.islink(os.path.join(longer, "sft"))


def test_variant_options_belong_to_the_countdown_preset(tmp_path, capsys):
  from prl_jax.reproduce.command import reproduce_command
  with pytest.raises(SystemExit) as exc:
    reproduce_command(["--preset", "lab", "--workdir", str(tmp_path), "--kl-weight", "0.03",
                       "--from", str(tmp_path)])
  assert exc.value.code == 2
  assert "--kl-weight, --from: options of --preset lab-countdown only" in capsys.readouterr().err
