"""The process-reward lab's arms (configs/lab/*.py, docs/lab.md, Arms): every config loads and
validates on the lab preset, the arms differ from RLOO only in the knobs their docstrings name,
the demonstrations of rePIRL and of its SFT control are the solver's clean chains, and FRPO's
scale benchmark runs."""

import glob
import os
import sys
import types

import jax
import numpy as np
import pytest

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms import repirl
from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.data import register
from prl_jax.data.demonstrations import demonstrator
from prl_jax.rewards.kl_to_go import kl_to_go
from prl_jax.run.config_checks import check_config
from prl_jax.run.context import build_context, validate

ROOT = os.path.join(os.path.dirname(__file__), "..")
LAB = os.path.join(ROOT, "configs", "lab")
SFT_CONFIGS = ("sft_clean", "sft", "sft_demos")
RL_ARMS = ("rloo", "grpo", "grpo_kl", "oracle", "prime", "prl", "frpo", "repirl",
           "sft_demos_rloo", "erprm", "erprm_hard")

# Keys every non-RLOO arm may differ in: the method, and RLOO's own whitening switch, which no
# other method reads.
COMMON = {"method", "algo.rloo.whiten"}
# Per arm, the keys allowed to differ from configs/lab/rloo.py (each must also be named in the
# arm's docstring). Anything else (rollout, optim, train, filter, task, model) must be equal.
ALLOWED = {
    "rloo": set(),
    "oracle": COMMON,  # only the process reward (the step checker) differs
    "prime": COMMON | {"optim.prm_lr", "algo.prime.beta"},  # the PRM scaled to 40-token chains
    "grpo": COMMON | {"algo.loss.dual_clip"},  # PRL/FRPO's dual clip, FRPO's fair control
    "grpo_kl": COMMON | {"algo.loss.dual_clip", "algo.loss.kl_coef"},  # + FRPO-matched k3 loss
    "prl": COMMON | {"algo.loss.dual_clip", "algo.prl.eta", "algo.steps.mode"},
    "frpo": COMMON | {"algo.loss.dual_clip", "algo.prl.eta"},
    "repirl": COMMON | {"algo.repirl.head_width", "algo.repirl.pool_size"},
    "sft_demos_rloo": {"init_from"},  # the policy SFT'd on the clean demonstrations
    "erprm": COMMON | {"algo.erprm.prm_dir", "algo.erprm.plus_token", "algo.erprm.minus_token"},
}
ALLOWED["erprm_hard"] = ALLOWED["erprm"]  # the same RAFT with the hard-label PRM


def _path(name):
  return os.path.join(LAB, f"{name}.py")


def _load(name, arg=""):
  return load_config_file(_path(name) + (f":{arg}" if arg else ""))


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def _diff(a, b):
  fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
  return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def _lab_module(name):
  """configs/lab/<name>.py imported as a module (its docstring, helpers such as budget.common)."""
  sys.path.insert(0, ROOT)
  try:
    import importlib
    return importlib.import_module(f"configs.lab.{name}")
  finally:
    sys.path.remove(ROOT)


def _docstring(name):
  return _lab_module(name).__doc__


def test_every_lab_config_loads_and_validates_on_the_lab_preset(tmp_path):
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(LAB, "*.py"))
                 if not p.endswith("__init__.py"))
  assert set(RL_ARMS) | set(SFT_CONFIGS) | {"budget"} == set(names)
  for name in names:
    config = _load(name)
    assert config.model.preset == "lab", name
    assert config.task.name == "register", name
    check_config(config)
    if name != "budget":
      assert config.init_from or name == "sft_clean", name
    # validate() wants the starting policy and the PRM on disk: stand-ins for the runs' outputs.
    config.init_from = str(tmp_path) if config.init_from else ""
    if config.algo.erprm.prm_dir:
      config.algo.erprm.prm_dir = str(tmp_path)
    validate(config)


def test_arms_differ_from_rloo_only_in_the_knobs_their_docstrings_name():
  rloo = _load("rloo")
  for arm in RL_ARMS:
    diff = _diff(_load(arm), rloo)
    assert diff <= ALLOWED[arm], (arm, diff - ALLOWED[arm])
    doc = _docstring(arm)
    for key in diff - COMMON:
      assert key.rsplit(".", 1)[-1] in doc, (arm, key)
  # Every RL arm starts from the lab SFT but the demonstrations control.
  assert {_load(a).init_from for a in RL_ARMS if a != "sft_demos_rloo"} == {
      "runs/lab/sft/final_hf"}
  assert _load("sft_demos_rloo").init_from == "runs/lab/sft_demos/final_hf"
  # The demonstrations control keeps the training split's lengths (rePIRL's experts solve it),
  # where the lab SFT demonstrates the held-out split's longer chains as well.
  demos, sft = _load("sft_demos"), _load("sft")
  lengths = {"sft.max_ops", "task.max_prompt_len", "rollout.max_new_tokens"}
  assert _diff(demos, sft) <= {
      "init_from", "task.demonstrator", "sft.batch_size", "sft.steps", "sft.warmup_steps"} | lengths
  rloo = _load("rloo")
  assert (demos.sft.max_ops or demos.task.max_ops) == rloo.task.max_ops
  assert demos.task.max_prompt_len == rloo.task.max_prompt_len
  for key in lengths:
    assert key.rsplit(".", 1)[-1] in _docstring("sft_demos"), key


def test_fair_controls_match_frpo():
  frpo, grpo_kl, prl = _load("frpo"), _load("grpo_kl"), _load("prl")
  # The k3 loss weight of GRPO + KL is FRPO's 1/eta; PRL reads the same KL-to-go at line ends.
  assert grpo_kl.algo.loss.kl_coef * frpo.algo.prl.eta == pytest.approx(1.0)
  assert grpo_kl.algo.loss.kl_kind == "k3"
  assert prl.algo.prl.eta == frpo.algo.prl.eta
  assert prl.algo.steps.delimiter == "\n" and prl.algo.steps.mode == "delimiter"
  assert {c.algo.loss.dual_clip for c in (frpo, grpo_kl, prl, _load("grpo"))} == {3.0}


def test_erprm_names_its_three_prms():
  roots = {p: _load("erprm", f"prm={p}").algo.erprm.prm_dir for p in ("er", "hard", "soft")}
  assert roots == {"er": "runs/lab/erprm/erprm/prm_eta2", "hard": "runs/lab/erprm/erprm/prm_hard",
                   "soft": "runs/lab/erprm/erprm/prm_soft"}
  assert _load("erprm", "prm_dir=/x").algo.erprm.prm_dir == "/x"
  assert _load("erprm").algo.erprm.eta == 2.0
  assert _diff(_load("erprm_hard"), _load("erprm")) == {"algo.erprm.prm_dir"}
  assert _load("erprm_hard").algo.erprm.prm_dir == roots["hard"]
  with pytest.raises(ConfigError, match="prm="):
    _load("erprm", "prm=medium")


def _context(config, tmp_path):
  config.init_from = ""
  config.task.num_train, config.task.num_eval = 48, 8
  config.mesh.num_devices = 1
  return build_context(config, str(tmp_path))


def test_sft_demos_trains_on_the_solvers_demonstrations_as_many_as_repirl_sees(tmp_path):
  config = _load("sft_demos")
  ctx = _context(config, tmp_path / "sft_demos")
  rng = np.random.default_rng(0)
  demos = [demonstrator(config.task)(ex, rng) for ex in ctx.train_examples]
  assert all(register.first_error(d["solution"], d) is None for d in demos)
  # The lab SFT's buggy demonstrator on the same problems does write wrong lines.
  buggy = [demonstrator(_load("sft").task)(ex, rng) for ex in ctx.train_examples]
  assert any(register.first_error(d["solution"], d) is not None for d in buggy)
  # As many demonstrations as rePIRL's RM gets: one per accepted prompt per RL step, over the
  # lab preset's RL steps (or those passed).
  from prl_jax.reproduce.presets import PRESETS
  arm = _load("repirl")
  lab_steps = PRESETS["lab"].rl_steps
  for demo_config, steps in ((config, lab_steps), (_load("sft_demos", "rl_steps=150"), 150)):
    assert demo_config.sft.steps * demo_config.sft.batch_size == (
        steps * arm.rollout.prompts_per_step)
    assert 1 <= demo_config.sft.warmup_steps < demo_config.sft.steps


def test_repirl_demonstrations_are_the_solvers_clean_chains(tmp_path):
  config = _load("repirl")
  ctx = _context(config, tmp_path / "repirl")
  n = config.rollout.n
  examples = [ex for ex in ctx.train_examples[:4] for _ in range(n)]
  tok = ctx.tokenizer
  x = types.SimpleNamespace(
      group_size=n, examples=examples, tokenizer=tok, max_new_tokens=config.rollout.max_new_tokens,
      prompt_ids=[tok.encode(ex["prompt"]) for ex in examples],
      pack=lambda prompts, rows: (prompts, rows))
  _, rows = repirl.demonstrations(x, n)
  assert len(rows) == len(examples)
  for row, ex in zip(rows, examples):
    assert row[-1] == tok.eos_id  # the whole chain fits: nothing cut at max_new_tokens
    text = tok.decode(row[:-1])
    assert register.first_error(text, ex) is None and register.check(text, ex) == 1.0


def test_frpo_scale_table_is_the_kl_to_go_over_the_grpo_advantage():
  sys.path.insert(0, ROOT)
  from benchmarks import frpo_scale
  rng = np.random.default_rng(0)
  mask = (np.arange(6)[None, :] < rng.integers(2, 7, size=8)[:, None]).astype(np.float32)
  old = rng.normal(-1.0, 0.3, size=mask.shape).astype(np.float32)
  ref = old - rng.normal(0.05, 0.2, size=mask.shape).astype(np.float32)
  outcome = np.asarray([1, 0, 0, 1, 1, 1, 0, 0], np.float32)
  rows = frpo_scale.scale_table(outcome, old, ref, mask, 4, etas=(1.0, 10.0))
  valid = mask > 0
  grpo = np.asarray(adv.grpo(outcome, 4))[:, None] * mask
  kl = np.asarray(kl_to_go(old, ref, mask))
  for row, eta in zip(rows, (1.0, 10.0)):
    assert row["ratio"] == pytest.approx((kl / eta)[valid].std() / grpo[valid].std(), rel=1e-5)
    frpo = grpo - kl / eta  # FRPO with every token a step, written out independently
    assert row["sign_flips"] == pytest.approx(np.mean(frpo[valid] * grpo[valid] < 0))
  assert rows[0]["ratio"] == pytest.approx(10 * rows[1]["ratio"], rel=1e-5)


@pytest.mark.slow  # the benchmark end to end: a sampler and two log-prob programs (~20 s)
def test_frpo_scale_runs_on_a_tiny_random_model(tmp_path, capsys):
  """The benchmark end to end: two random tiny policies as pi_ref and pi_old."""
  sys.path.insert(0, ROOT)
  from benchmarks import frpo_scale
  from prl_jax.models.transformer import init_params
  overrides = ["model.preset=tiny", "task.num_train=32", "task.num_eval=4",
               "filter.enable=false"]
  config = apply_overrides(_load("frpo"), overrides)
  ctx = _context(config, tmp_path / "ctx")
  dirs = {}
  for name, seed in (("sft", 0), ("policy", 1)):
    dirs[name] = str(tmp_path / name)
    ctx.export_policy(init_params(ctx.model_cfg, jax.random.key(seed)), dirs[name])
  args = ["--sft", dirs["sft"], "--policy", dirs["policy"], "--prompts", "4", "--etas", "1,10"]
  for item in overrides:
    args += ["--override", item]
  rows = frpo_scale.main(args)
  out = capsys.readouterr().out
  assert "4 of 4 groups" in out and "| eta |" in out
  assert [r["eta"] for r in rows] == [1.0, 10.0]
  assert rows[0]["kl_term_std"] > 0  # two different policies: the KL-to-go is not zero
  assert rows[0]["kl_term_std"] == pytest.approx(10 * rows[1]["kl_term_std"], rel=1e-5)


@pytest.mark.parametrize("name", RL_ARMS + SFT_CONFIGS)
def test_cli_dry_run_accepts_every_lab_config(name, tmp_path, capsys):
  from prl_jax import cli
  command = "sft" if name in SFT_CONFIGS else "train"
  args = [command, "--config", _path(name), "--dry-run", "--config.init_from="]
  if name.startswith("erprm"):
    args.append(f"--config.algo.erprm.prm_dir={tmp_path}")  # a stand-in for the trained PRM
  assert cli.main(args) in (0, None)
  assert "the config is valid" in capsys.readouterr().out


def test_the_lab_demo_preset_runs_every_config_it_needs_with_its_overrides():
  """`make demo`'s preset: its overrides load and validate in the SFTs, both arms and the gate's
  PRIME run, and they change the step's batch, not the arms' math."""
  from prl_jax.reproduce.presets import get_preset
  demo = get_preset("lab-demo")
  assert demo.methods == ("rloo", "oracle") and demo.gates.overrides == demo.overrides
  own = {"sft_clean": demo.gates.clean_sft_overrides, "sft": demo.gates.sft_overrides}
  for name in ("sft_clean", "sft", "rloo", "oracle", "prime"):
    config = _load(name)
    apply_overrides(config, [*demo.overrides, *own.get(name, ())])
    check_config(config)
    assert config.rollout.prompts_per_step * config.rollout.n % config.train.mini_batch_size == 0
  rloo, oracle = _load("rloo"), _load("oracle")
  for c in (rloo, oracle):
    apply_overrides(c, list(demo.overrides))
  assert _diff(oracle, rloo) <= ALLOWED["oracle"]


def test_the_lab_demo_sfts_demonstrate_the_arms_chains_in_the_arms_shapes(tmp_path):
  """The demo's two SFTs train on chains of at most the arms' 8 operations, padded to the arms'
  prompt and response lengths (72 positions, not the lab SFTs' 100), and every demonstration
  of either demonstrator fits in them."""
  import numpy as np

  from prl_jax.data.demonstrations import demonstrator
  from prl_jax.reproduce.presets import get_preset
  from prl_jax.run.context import build_context
  from prl_jax.train.sft import demonstration_batch, demonstration_problems

  demo, arm = get_preset("lab-demo"), _load("rloo")
  for name, own in (("sft_clean", demo.gates.clean_sft_overrides),
                    ("sft", demo.gates.sft_overrides)):
    config = _load(name)
    apply_overrides(config, [*demo.overrides, *own, "init_from=", "task.num_train=256",
                             "mesh.num_devices=1"])
    assert config.task.max_prompt_len == arm.task.max_prompt_len
    assert config.rollout.max_new_tokens == arm.rollout.max_new_tokens
    ctx = build_context(config, str(tmp_path / name))
    problems = demonstration_problems(config, ctx)
    assert max(len(p["solution"].splitlines()) for p in problems) == 8
    demo_fn, rng = demonstrator(config.task), np.random.default_rng(0)
    batch = demonstration_batch(ctx, [demo_fn(p, rng) for p in problems],
                                config.rollout.max_new_tokens)
    assert batch.tokens.shape == (len(problems), 72)


def test_the_rl_arms_decay_their_learning_rate_and_the_sfts_do_not_read_it():
  """Every RL arm decays its rate to 0 over its run (configs/lab/budget.py: late collapses at a
  constant rate). The SFTs start from `budget.common()`: they train on their own sft.* schedule,
  and an RL optimizer setting in their resolved configs would change their stage inputs, so a
  reproduction would retrain them for nothing."""
  assert {_load(arm).optim.schedule for arm in RL_ARMS} == {"cosine"}
  budget = _lab_module("budget")
  assert budget.common().optim.schedule == "constant"
  for name in SFT_CONFIGS:
    assert _load(name).optim.to_dict() == budget.common().optim.to_dict(), name
