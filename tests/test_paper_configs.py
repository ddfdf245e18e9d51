"""Paper configs (configs/paper/*) and the abstract per-device memory report (prl_jax.train.memory).

The expected hyperparameters are copied by hand from docs/algorithms.md (sections named per entry), and
the expected parameter bytes are counted by hand from the published model shapes, so neither side
is read from the code under test.
"""

import os

import jax
import jax.numpy as jnp
import pytest

from prl_jax import cli
from prl_jax.config import ConfigError, load_config_file, parse_config_arg
from prl_jax.models.config import preset
from prl_jax.models.logprobs import response_logprobs
from prl_jax.models.transformer import init_params
from prl_jax.train import memory
from prl_jax.run.context import validate

PAPER = os.path.join(os.path.dirname(__file__), "..", "configs", "paper")
NAMES = ("prime_eurus2_7b", "rloo_eurus2_7b", "prl_llama32_3b", "prl_qwen25math_7b",
         "frpo_qwen3_1p7b", "erprm_llama31_8b", "repirl_qwen25_3b")

# Published shapes (config.json of each model): vocab, width, layers, heads, KV heads, head dim,
# MLP width, q/k/v biases, tied embeddings.
SHAPES = {
    "qwen2.5-math-7b": (152064, 3584, 28, 28, 4, 128, 18944, True, False),
    "llama-3.2-3b": (128256, 3072, 28, 24, 8, 128, 8192, False, True),
    "qwen3-1.7b": (151936, 2048, 28, 16, 8, 128, 6144, False, True),
    "llama-3.1-8b": (128256, 4096, 32, 32, 8, 128, 14336, False, False),
    "qwen2.5-3b": (151936, 2048, 36, 16, 2, 128, 11008, True, True),
}

# Hyperparameters as docs/algorithms.md states them.
EXPECTED = {
    "prime_eurus2_7b": {  # section 3 (+ section 8 for the step count and evaluation)
        "method": "prime", "model.preset": "qwen2.5-math-7b",
        "algo.prime.beta": 0.05, "optim.lr": 5e-7, "optim.prm_lr": 1e-6,
        "optim.schedule": "constant", "rollout.prompts_per_step": 256, "rollout.n": 4,
        "rollout.temperature": 1.0, "task.max_prompt_len": 1024, "rollout.max_new_tokens": 3072,
        "train.mini_batch_size": 256, "optim.grad_clip": 1.0, "optim.prm_grad_clip": 10.0,
        "algo.gamma": 1.0, "train.steps": 592, "filter.enable": True, "filter.acc_lo": 0.2,
        "filter.acc_hi": 0.8, "algo.loss.clip_low": 0.2, "algo.loss.clip_high": 0.2,
        "algo.loss.kl_coef": 0.0, "algo.loss.entropy_coef": 0.0, "train.ppo_epochs": 1,
        "algo.prime.mode": "code", "algo.prime.granularity": "token", "algo.prime.base": "rloo",
        "eval.n": 1, "eval.temperature": 0.0,
        # The official trainer (run_prime_main.sh, its config and workers): PRM mini-batches of
        # 256, single forward, normalisation per 8 data-parallel shards, AdamW weight decay 1e-2
        # for the policy and 0 for the PRM.
        "algo.prime.prm_mini_batch_size": 256, "algo.prime.double_forward": False,
        "algo.prime.norm_shards": 8, "optim.weight_decay": 0.01, "optim.prm_weight_decay": 0.0,
    },
    "rloo_eurus2_7b": {  # section 3: the same trainer with the PRM off; section 8: 240 steps
        "method": "rloo", "algo.rloo.whiten": True, "train.steps": 240, "filter.enable": True,
        "filter.acc_lo": 0.2, "filter.acc_hi": 0.8, "optim.lr": 5e-7, "optim.weight_decay": 0.01,
        "rollout.prompts_per_step": 256, "rollout.n": 4, "train.mini_batch_size": 256,
    },
    "prl_qwen25math_7b": {  # section 4
        # runs/run_grpo-3.sh: adv=prm (raw outcome, no group normalisation), eta 100
        "method": "prl", "model.preset": "qwen2.5-math-7b", "algo.prl.mode": "prm",
        "algo.prl.eta": 100.0, "optim.weight_decay": 0.01,
        "algo.steps.mode": "fixed", "algo.steps.length": 64, "rollout.n": 5,
        "rollout.prompts_per_step": 128, "optim.lr": 1e-6, "rollout.temperature": 1.0,
        "algo.loss.clip_low": 0.2, "algo.loss.clip_high": 0.2, "algo.loss.dual_clip": 3.0,
        "algo.loss.agg": "token-mean", "algo.loss.kl_coef": 0.0, "algo.loss.entropy_coef": 0.0,
        "eval.n": 8, "eval.temperature": 1.0,
    },
    "prl_llama32_3b": {  # section 4
        # runs/run_grpo.sh: adv=orm, eta 200, fixed 256-token steps
        "method": "prl", "model.preset": "llama-3.2-3b", "algo.prl.mode": "orm",
        "algo.prl.eta": 200.0, "optim.weight_decay": 0.01,
        "algo.steps.mode": "fixed", "algo.steps.length": 256, "rollout.n": 5,
        "rollout.prompts_per_step": 128, "optim.lr": 1e-6, "rollout.temperature": 1.0,
        "algo.loss.dual_clip": 3.0, "algo.loss.clip_low": 0.2, "algo.loss.agg": "token-mean",
        "algo.loss.kl_coef": 0.0, "algo.loss.entropy_coef": 0.0, "eval.n": 8,
        "eval.temperature": 1.0,
    },
    "frpo_qwen3_1p7b": {  # sections 4 and 8: step length 1, beta = 1/eta = 0.01, pass@16
        # and FRPO v2's setting: 256 prompts x 5, mini-batch 64 prompts, 2048/8192 tokens
        "method": "frpo", "model.preset": "qwen3-1.7b", "algo.prl.eta": 100.0,
        "algo.loss.dual_clip": 3.0, "algo.loss.clip_low": 0.2, "rollout.n": 5,
        "optim.lr": 1e-6, "rollout.prompts_per_step": 256, "train.mini_batch_size": 320,
        "task.max_prompt_len": 2048, "rollout.max_new_tokens": 8192, "train.ppo_epochs": 1,
        "algo.steps.mode": "token", "optim.weight_decay": 0.01, "eval.n": 16,
    },
    "erprm_llama31_8b": {  # section 5: RAFT, 16 samples per prompt, min over step scores
        "method": "erprm", "rollout.n": 16, "rollout.temperature": 1.0, "algo.erprm.agg": "min",
        "algo.erprm.plus_token": "+", "algo.erprm.minus_token": "-",
        "algo.raft.keep_per_prompt": 1, "algo.erprm.num_completions": 16,
    },
    "repirl_qwen25_3b": {  # section 6: the official run script's settings
        "method": "repirl", "model.preset": "qwen2.5-3b", "rollout.n": 4,
        "algo.repirl.mode": "code", "algo.repirl.lam": 0.05, "algo.repirl.head_width": 1024,
        "algo.repirl.pool_size": 1, "algo.repirl.rm_mini_batch_size": 32,
        "algo.repirl.pseudo_experts": True, "optim.prm_grad_clip": 10.0,
        "optim.prm_weight_decay": 0.0, "optim.schedule": "constant",
        "algo.loss.clip_low": 0.2, "algo.loss.clip_high": 0.2, "algo.loss.dual_clip": 3.0,
        "algo.loss.agg": "seq-mean-token-mean", "algo.loss.entropy_coef": 0.001,
        "algo.loss.kl_coef": 0.0, "optim.lr": 5e-7, "optim.weight_decay": 0.01,
        "rollout.temperature": 1.0, "filter.enable": True, "filter.acc_lo": 0.2,
        "filter.acc_hi": 0.8, "filter.oversample": 2, "rollout.prompts_per_step": 64,
        "train.mini_batch_size": 128, "train.ppo_epochs": 1, "task.max_prompt_len": 1536,
        "rollout.max_new_tokens": 3100, "eval.every": 5, "eval.temperature": 0.0,
    },
}

# Evaluation suites (docs/algorithms.md: PRL, Sources, paper settings and headline results; ER-PRM: GSM8K and MATH500).
SUITES = {
    "prime_eurus2_7b": {"aime24", "amc", "math500", "minerva", "olympiadbench"},
    "rloo_eurus2_7b": {"aime24", "amc", "math500", "minerva", "olympiadbench"},
    "prl_qwen25math_7b": {"math500", "minerva", "olympiadbench", "aime24", "amc23"},
    "prl_llama32_3b": {"math500", "minerva", "olympiadbench", "aime24", "amc23"},
    "frpo_qwen3_1p7b": {"math500"},
    "erprm_llama31_8b": {"gsm8k", "math500"},
}


def _get(config, key):
  for part in key.split("."):
    config = config[part]
  return config


def _paths(tmp_path, name):
  """A config argument naming existing (dummy) checkpoint and data paths."""
  hf_dir, data = tmp_path / "ckpt", tmp_path / "data"
  hf_dir.mkdir(exist_ok=True)
  data.mkdir(exist_ok=True)
  (data / "train.parquet").write_bytes(b"")
  (data / "test.jsonl").write_text("")
  arg = f"hf_dir={hf_dir},train_file={data / 'train.parquet'},eval_file={data / 'test.jsonl'}"
  if name.startswith("erprm"):
    (tmp_path / "prm").mkdir(exist_ok=True)
    arg += f",prm_dir={tmp_path / 'prm'}"
  return arg


def _load(name, arg=""):
  path = os.path.join(PAPER, f"{name}.py")
  return load_config_file(f"{path}:{arg}" if arg else path)


# ------------------------------------------------------------------------------------------------
# The configs.


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_with_paths_and_validates(name, tmp_path):
  config = _load(name, _paths(tmp_path, name))
  assert config.model.hf_dir == str(tmp_path / "ckpt")
  assert config.model.tokenizer == str(tmp_path / "ckpt")  # defaults to hf_dir
  assert config.task.train_file.endswith("train.parquet")
  assert config.model.dtype == "bfloat16" and config.model.remat == "full"
  assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (1, -1, 1)
  if name.startswith("erprm"):
    assert config.algo.erprm.prm_dir == str(tmp_path / "prm")
  validate(config)  # 8 simulated devices: FSDP over 8, batches and micro-batches split 8 ways


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hyperparameters_are_the_papers(name):
  config = _load(name)
  for key, want in EXPECTED[name].items():
    got = _get(config, key)
    if isinstance(want, float):
      assert got == pytest.approx(want), key
    else:
      assert got == want, key


def test_paper_ranges_and_derived_settings():
  prl = _load("prl_qwen25math_7b")
  assert 100 <= prl.algo.prl.eta <= 200  # docs/algorithms.md: PRL: eta 100-200
  assert 1 / _load("frpo_qwen3_1p7b").algo.prl.eta == pytest.approx(0.01)  # FRPO beta
  assert 0.05 <= _load("repirl_qwen25_3b").algo.repirl.lam <= 0.1  # section 6
  # rePIRL: 2x oversampling keeps 64 of 128 prompts; 256 rollouts + 256 demonstrations in RM
  # mini-batches of 32 rows are 16 RM steps, and mini-batches of 128 responses 2 policy steps.
  repirl = _load("repirl_qwen25_3b")
  rows = repirl.rollout.prompts_per_step * repirl.rollout.n
  assert repirl.rollout.prompts_per_step * repirl.filter.oversample == 128
  assert 2 * rows // repirl.algo.repirl.rm_mini_batch_size == 16
  assert rows // repirl.train.mini_batch_size == 2
  # "One update per rollout" (section 4): the mini-batch is the whole batch.
  for name in ("prl_qwen25math_7b", "prl_llama32_3b"):
    c = _load(name)
    assert c.train.mini_batch_size in (0, c.rollout.prompts_per_step * c.rollout.n)
    assert c.train.ppo_epochs == 1
  # FRPO v2: 1280 responses in mini-batches of 64 prompts are 4 updates per rollout.
  frpo = _load("frpo_qwen3_1p7b")
  assert frpo.rollout.prompts_per_step * frpo.rollout.n // frpo.train.mini_batch_size == 4
  assert frpo.train.mini_batch_size == 64 * frpo.rollout.n
  # PRIME: 1024 rollouts, 4 PRM steps per RL step (as many as the policy's), 8 shards of 128.
  prime = _load("prime_eurus2_7b")
  rows = prime.rollout.prompts_per_step * prime.rollout.n
  assert rows // prime.algo.prime.prm_mini_batch_size == rows // prime.train.mini_batch_size == 4
  assert rows // prime.algo.prime.norm_shards == 128


def test_primes_rloo_baseline_is_primes_trainer_without_the_prm():
  prime, rloo = _load("prime_eurus2_7b"), _load("rloo_eurus2_7b")
  assert rloo.filter.to_dict() == prime.filter.to_dict()
  for section in ("rollout", "optim", "train", "eval", "model", "task"):
    a, b = prime[section].to_dict(), rloo[section].to_dict()
    if section == "train":
      a.pop("steps"), b.pop("steps")
    assert a == b, section
  assert prime.algo.loss.to_dict() == rloo.algo.loss.to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_answers_are_checked_in_the_killable_pool(name):
  """The inline check cannot interrupt C-level big-integer arithmetic; long runs meet it."""
  assert _load(name).task.verify_workers > 0


@pytest.mark.parametrize("name", sorted(SUITES))
def test_evaluation_suites(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location("paper_cfg", os.path.join(PAPER, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert set(module.BENCHMARKS) == SUITES[name]


@pytest.mark.parametrize("name,preset_name", [
    ("prime_eurus2_7b", "qwen2.5-math-7b"), ("prl_llama32_3b", "llama-3.2-3b"),
    ("frpo_qwen3_1p7b", "qwen3-1.7b"), ("erprm_llama31_8b", "llama-3.1-8b"),
    ("repirl_qwen25_3b", "qwen2.5-3b")])
def test_presets_have_the_published_shapes(name, preset_name):
  assert _load(name).model.preset == preset_name
  v, d, layers, heads, kv, hd, f, bias, tied = SHAPES[preset_name]
  cfg = preset(preset_name)
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
          cfg.resolved_head_dim, cfg.intermediate_size, cfg.qkv_bias, cfg.tie_embeddings) == \
      (v, d, layers, heads, kv, hd, f, bias, tied)


# ------------------------------------------------------------------------------------------------
# Config arguments.


def test_config_arg_parsing():
  defaults = {"hf_dir": "", "steps": 3, "lr": 0.5, "flag": False}
  assert parse_config_arg(None, defaults) == defaults
  got = parse_config_arg("hf_dir=gs://b/ckpt, steps=7,lr=1,flag=true", defaults)
  assert got == {"hf_dir": "gs://b/ckpt", "steps": 7, "lr": 1.0, "flag": True}
  with pytest.raises(ConfigError, match="known keys: flag, hf_dir, lr, steps"):
    parse_config_arg("hfdir=/x", defaults)
  with pytest.raises(ConfigError, match="key=value"):
    parse_config_arg("hf_dir", defaults)
  with pytest.raises(ConfigError, match="int"):
    parse_config_arg("steps=many", defaults)


def test_config_file_argument_keeps_colons_in_values():
  config = _load("prl_qwen25math_7b", "train_file=gs://bucket/train.parquet,layout=numina")
  assert config.task.train_file == "gs://bucket/train.parquet"
  assert config.task.name == "numina"
  with pytest.raises(ConfigError, match="Unknown config argument 'prm_dir'"):
    _load("prl_qwen25math_7b", "prm_dir=/x")  # only the ER-PRM config takes a PRM


# ------------------------------------------------------------------------------------------------
# Memory.


QK_NORM = {"qwen3-1.7b"}  # Qwen3: an RMSNorm scale of head_dim on every query and key head


def _hand_count(shape, qk_norm=False):
  """(all parameters, parameters without a width axis: q/k/v biases and q/k norm scales) from
  the published shapes."""
  v, d, layers, heads, kv, hd, f, bias, tied = shape
  attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
  whole = ((heads + 2 * kv) * hd if bias else 0) + (2 * hd if qk_norm else 0)
  per_layer = attention + whole + 3 * d * f + 2 * d  # + two RMSNorm scales
  total = layers * per_layer + v * d * (1 if tied else 2) + d  # + the final norm
  return total, layers * whole


@pytest.mark.parametrize("name,preset_name", [
    ("prime_eurus2_7b", "qwen2.5-math-7b"), ("prl_llama32_3b", "llama-3.2-3b"),
    ("prl_qwen25math_7b", "qwen2.5-math-7b"), ("frpo_qwen3_1p7b", "qwen3-1.7b"),
    ("erprm_llama31_8b", "llama-3.1-8b"), ("repirl_qwen25_3b", "qwen2.5-3b")])
@pytest.mark.parametrize("devices", [64, 8])
def test_parameter_bytes_equal_a_hand_count(name, preset_name, devices):
  """FSDP over every device splits each weight along its width d (which every one of these
  shapes divides into 64); only q/k/v biases and q/k norm scales, which have no width axis,
  stay whole."""
  total, biases = _hand_count(SHAPES[preset_name], preset_name in QK_NORM)
  assert (total - biases) % devices == 0
  want = 4 * ((total - biases) // devices + biases)  # float32
  report = memory.memory_report(_load(name), devices=devices)
  assert report["mesh"] == {"data": 1, "fsdp": devices, "tensor": 1}
  assert report["model"]["num_params"] == total
  state = report["state"]
  assert state["policy_params"] == want
  # AdamW: two moments per parameter, split like it, plus replicated step counts.
  assert 0 <= state["policy_opt"] - 2 * want <= 64
  if _load(name).method in ("prime", "prl", "frpo"):
    assert state["ref_params"] == want
  if name.startswith("repirl"):  # a reward head (replicated) on a copy of the policy, no reference
    d, w = SHAPES[preset_name][1], 1024
    assert "ref_params" not in state
    assert state["prm_params"] == want + 4 * (d * w + w * w + 3 * w + 1)
  elif "prm_params" in state:
    assert state["prm_params"] == want
  if name.startswith("erprm"):
    assert "prm_params" not in state and "ref_params" not in state
    assert state["frozen_prm"] == want  # the ER-PRM has the policy's shapes here
  assert report["persistent"] == sum(state.values())
  assert report["peak"] >= report["persistent"]
  assert report["replicated_params"] == []  # every rule's mesh axis divides its dimension


def test_indivisible_dimensions_are_reported():
  """Qwen2.5-3B has 2 KV heads: a tensor axis of 4 cannot split them, so the k/v kernels keep
  every head on each device (split over fsdp only)."""
  report = memory.memory_report(_load("repirl_qwen25_3b"), mesh_shape=(1, 16, 4))
  assert report["mesh"] == {"data": 1, "fsdp": 16, "tensor": 4}
  assert {"params/layers/attn/k/kernel", "params/layers/attn/v/kernel"} <= set(
      report["replicated_params"])
  assert "params/layers/attn/q/kernel" not in report["replicated_params"]  # 16 heads split


def test_state_parts_follow_the_method():
  prime = memory.memory_report(_load("prime_eurus2_7b"), devices=8)["state"]
  prl = memory.memory_report(_load("prl_qwen25math_7b"), devices=8)["state"]
  assert {"policy_params", "policy_opt", "ref_params", "prm_params", "prm_opt"} <= set(prime)
  assert "prm_params" not in prl and "ref_params" in prl
  # PRIME keeps a second trained model (the implicit PRM and its AdamW moments).
  assert prime["prm_opt"] == prime["policy_opt"]


def test_fits_follows_hbm():
  config = _load("prl_llama32_3b")
  small = memory.memory_report(config, devices=64, hbm_bytes=1e9)
  large = memory.memory_report(config, devices=64, hbm_bytes=1e13)
  assert small["peak"] == large["peak"] and not small["fits"] and large["fits"]


def test_a_mesh_that_does_not_divide_is_a_clear_error():
  config = _load("prl_qwen25math_7b")  # 128 x 5 = 640 responses per step
  with pytest.raises(ConfigError, match="does not divide the batch of 640"):
    memory.memory_report(config, devices=48)
  with pytest.raises(ConfigError, match="mesh"):
    memory.memory_report(config, mesh_shape=(1, 3, 1), devices=64)
  config.mesh.data = -1  # two axes to fill
  with pytest.raises(ConfigError, match="At most one mesh axis"):
    memory.memory_report(config, devices=64)
  config = _load("prime_eurus2_7b")
  config.train.micro_batch_size = 32  # 64 devices cannot split 32 rows
  with pytest.raises(ConfigError, match="micro-batch of 32"):
    memory.memory_report(config, devices=64)


def test_more_devices_never_need_more_memory_per_device():
  config = _load("prime_eurus2_7b")
  a, b = (memory.memory_report(config, devices=n) for n in (16, 64))
  for key in ("params", "optimizer", "frozen", "persistent", "peak"):
    assert b[key] < a[key], key


@pytest.mark.parametrize("remat", ["full", "none"])
def test_activation_estimates_match_xla_buffer_assignment(remat):
  """forward_bytes / backward_bytes against XLA's compiled memory analysis (CPU, one device):
  an estimate, so within a factor of 1.5 either way."""
  cfg = preset("tiny", dtype="bfloat16", remat=remat)
  rows, prompt, new, chunk = 2, 128, 384, 128
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((rows, prompt + new), jnp.int32)
  mask = jax.ShapeDtypeStruct((rows, prompt + new), jnp.bool_)
  logp = lambda p, t, m: response_logprobs(cfg, p, t, m, prompt, chunk)
  fwd = jax.jit(logp).lower(params, tokens, mask).compile()
  grad = jax.jit(jax.grad(lambda p, t, m: jnp.sum(logp(p, t, m)))).lower(params, tokens,
                                                                        mask).compile()
  measured_fwd = fwd.memory_analysis().temp_size_in_bytes
  measured_bwd = grad.memory_analysis().temp_size_in_bytes
  est_fwd = memory.forward_bytes(cfg, rows, prompt + new, chunk)
  est_bwd = memory.backward_bytes(cfg, rows, prompt + new, chunk)
  assert 1 / 1.5 < est_fwd / measured_fwd < 1.5
  assert 1 / 1.5 < est_bwd / measured_bwd < 1.5


def test_memory_command_prints_the_table(capsys):
  path = os.path.join(PAPER, "prl_llama32_3b.py")
  assert cli.main(["memory", "--config", path, "--devices", "8", "--hbm-gib", "80"]) == 0
  out = capsys.readouterr().out
  assert "trained params" in out and "fits" in out and "8 devices" in out
  expected = 4 * _hand_count(SHAPES["llama-3.2-3b"])[0] / 8 / memory.GIB
  assert f"{expected:.2f}" in out.splitlines()[[l.startswith("trained params")
                                                for l in out.splitlines()].index(True)]
  assert cli.main(["memory", "--config", path, "--devices", "48"]) == 2
  assert "does not divide" in capsys.readouterr().err
