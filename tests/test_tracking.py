"""Experiment tracking: rollout samples, the applied learning rate, log.every, eval tags with n,
and wandb (a recording stand-in module; the real package offline when installed)."""

import json
import sys
import types

import numpy as np
import pytest

from prl_jax.run import tracking
from prl_jax.run.metrics_file import read_metrics


def test_step_values_sum_each_step_and_drop_the_tail():
  x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
  step_end = np.array([0, 1, 0, 0, 1, 0])
  mask = np.array([1, 1, 1, 0, 1, 1])  # token 3 is padding; token 5 follows the last step end
  assert tracking.step_values(x, step_end, mask) == [3.0, 8.0]


def test_sample_rows_spread_over_the_batch():
  rows = tracking.sample_rows([f"p{i}" for i in range(8)], [f"r{i}" for i in range(8)],
                              np.arange(8) / 10, None, np.zeros((8, 3)), np.ones((8, 3)), 3)
  assert [r["prompt"] for r in rows] == ["p0", "p4", "p7"]
  assert rows[1] == {"prompt": "p4", "response": "r4", "reward": 0.4, "process_rewards": []}


class _FakeWandb(types.ModuleType):
  """Records what the run sends: init arguments, logged rows by step, tables, finish."""

  def __init__(self):
    super().__init__("wandb")
    self.inits, self.logged, self.finished = [], [], 0
    fake = self

    class Run:
      def log(self, data, step):
        fake.logged.append((step, data))

      def finish(self):
        fake.finished += 1

    class Table:
      def __init__(self, columns, data):
        self.columns, self.data = columns, data

    self.Table, self._run = Table, Run()

  def init(self, **kwargs):
    self.inits.append(kwargs)
    return self._run


def test_rl_run_logs_samples_lr_every_and_eval_tags_to_files_and_wandb(tmp_path, monkeypatch):
  from prl_jax.run.state import learning_rate_schedule
  from prl_jax.train.loop import train
  from tests.test_train_loop import tiny_config

  fake = _FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  config = tiny_config("prime", **{
      "train.steps": 4, "log.every": 3, "log.samples_every": 2, "log.num_samples": 2,
      "log.wandb": True, "log.wandb_mode": "offline", "eval.every": 4, "eval.n": 2,
      "eval.num_problems": 2, "optim.schedule": "linear", "checkpoint.every": 4})
  workdir = str(tmp_path / "run")
  train(config, workdir)

  rows = read_metrics(f"{workdir}/metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 3, 4]  # every 3rd, plus the first and the last
  assert {"eval/pass@2", "eval/mean@2", "eval/greedy"} <= set(rows[-1])
  assert "eval/pass_at_n" not in rows[-1]
  assert all("policy/entropy" in r for r in rows)
  schedule = learning_rate_schedule(config.optim.lr, "linear", config.optim.warmup_steps, 4)
  for r in rows:  # the schedule advances once per RL step (tests/test_lr_schedule.py)
    assert r["optim/lr"] == pytest.approx(float(schedule(r["step"] - 1)))
  assert rows[-1]["optim/lr"] > 0
  assert "optim/prm_lr" in rows[0]

  samples = [json.loads(line) for line in open(f"{workdir}/samples.jsonl")]
  assert [s["step"] for s in samples] == [2, 2, 4, 4]
  assert all(set(s) == {"step", "prompt", "response", "reward", "process_rewards"}
             for s in samples)
  assert all(s["process_rewards"] for s in samples)  # PRIME's implicit PRM scores every step

  (init,) = fake.inits
  assert init["mode"] == "offline" and init["resume"] == "allow" and init["config"]["method"] == "prime"
  scalars = [step for step, data in fake.logged if "samples" not in data]
  tables = [(step, data["samples"]) for step, data in fake.logged if "samples" in data]
  assert scalars == [1, 3, 4] and [step for step, _ in tables] == [2, 4]
  assert tables[0][1].columns == ["prompt", "response", "reward", "process_rewards"]
  assert len(tables[0][1].data) == 2 and fake.finished == 1


def test_wandb_missing_or_bad_mode_is_a_config_error(tmp_path, monkeypatch):
  from prl_jax.config import ConfigError
  from prl_jax.run.metrics_file import MetricsWriter
  from tests.test_train_loop import tiny_config

  config = tiny_config("rloo", **{"log.wandb": True, "log.wandb_mode": "sometimes"})
  with pytest.raises(ConfigError, match="log.wandb_mode='sometimes'"):
    tracking.wandb_settings(config, "runs/x")
  config.log.wandb_mode = "offline"
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
  with pytest.raises(ConfigError, match="pip install wandb"):
    MetricsWriter(str(tmp_path), progress=False, tensorboard=False,
                  wandb=tracking.wandb_settings(config, str(tmp_path)))


def test_real_wandb_offline_run_needs_no_network(tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  from prl_jax.run.metrics_file import MetricsWriter
  from tests.test_train_loop import tiny_config

  monkeypatch.setenv("WANDB_SILENT", "true")
  config = tiny_config("rloo", **{"log.wandb": True, "log.wandb_mode": "offline"})
  workdir = str(tmp_path / "run")
  writer = MetricsWriter(workdir, progress=False, tensorboard=False,
                         wandb=tracking.wandb_settings(config, workdir))
  writer.write(1, {"train/reward": 0.5})
  writer.write_samples(1, [{"prompt": "p", "response": "r", "reward": 1.0,
                            "process_rewards": [0.5]}])
  writer.close()
  assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))



def test_raft_logs_the_entropy_of_the_tokens_it_trains_on():
  """RAFT's weighted NLL reports policy/entropy like the PPO objectives: after the update's
  division by its denominator, the mean entropy over the tokens with a nonzero weight."""
  import jax
  import jax.numpy as jnp
  from prl_jax.models.config import preset
  from prl_jax.models.logprobs import response_logprobs
  from prl_jax.models.transformer import init_params
  from prl_jax.run.batch import PolicyBatch, make_sequences
  from prl_jax.train.objectives import PolicyLossConfig, policy_loss_fn

  cfg = preset("tiny", vocab_size=40)
  params = init_params(cfg, jax.random.key(0))
  seq = make_sequences([[1, 2, 3], [4, 5]], [[6, 7, 8, 9], [10, 11]], 4, 5)
  seq = jax.tree_util.tree_map(jnp.asarray, seq)
  mask = np.asarray(seq.response_mask, bool)
  weights = np.zeros(mask.shape, np.float32)
  weights[0] = 1.0  # RAFT keeps the first response only
  batch = PolicyBatch(seq=seq, old_logp=jnp.zeros(mask.shape), ref_logp=jnp.zeros(mask.shape),
                      advantages=jnp.asarray(weights))
  _, (den, metrics) = policy_loss_fn(cfg, PolicyLossConfig(kind="nll"))(params, batch)
  _, entropy = response_logprobs(cfg, params, seq.tokens, seq.token_mask, seq.prompt_len,
                                 with_entropy=True)
  kept = mask & (weights != 0)
  assert float(den) == kept.sum() == 4
  assert float(metrics["entropy"] / den) == pytest.approx(float(np.asarray(entropy)[kept].mean()),
                                                          rel=1e-5)
