"""Ctrl-C or SIGTERM in a run saves the step under way and exits in one line; a rerun resumes,
and a rerun of a finished run says there is nothing to do (its final export untouched)."""

import os
import signal

import pytest

from prl_jax import cli
from prl_jax.run import interrupt, metrics_file
from prl_jax.train import sft

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "sft.py")
TINY = ["--config.sft.steps=4", "--config.sft.batch_size=4", "--config.task.num_train=16",
        "--config.task.num_eval=4", "--config.mesh.num_devices=1", "--config.log.progress=false",
        "--config.rollout.max_new_tokens=32"]


def test_stop_signals_turn_the_first_signal_into_a_request():
  with interrupt.StopSignals() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM"
    with pytest.raises(interrupt.RunInterrupted, match="after step 3"):
      stop.raise_if_requested(3, "/w")
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) is not stop._handle  # handlers given back


@pytest.mark.slow  # three SFT runs of a tiny model: about 25 s on 2 cores
def test_sft_interrupted_saves_resumes_and_then_has_nothing_to_do(tmp_path, capsys, monkeypatch):
  workdir = str(tmp_path / "sft")
  argv = ["sft", "--config", CONFIG, *TINY, "--workdir", workdir]
  write = metrics_file.MetricsWriter.write

  def write_then_interrupt(self, step, metrics):
    write(self, step, metrics)
    if step == 2:
      os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C, in the middle of the run

  monkeypatch.setattr(sft.MetricsWriter, "write", write_then_interrupt)
  assert cli.main(argv) == 128 + signal.SIGINT
  err = capsys.readouterr().err
  assert "prl-jax sft: stopped by SIGINT after step 2" in err and "Traceback" not in err
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))  # checkpoint.every is 10
  assert not os.path.exists(os.path.join(workdir, "final_hf"))
  monkeypatch.setattr(sft.MetricsWriter, "write", write)
  assert cli.main(argv) == 0  # resumes from step 2
  rows = metrics_file.read_metrics(os.path.join(workdir, "sft_metrics.jsonl"))
  assert [row["step"] for row in rows] == [1, 2, 3, 4]
  final = os.path.join(workdir, "final_hf", "config.json")
  before = os.stat(final).st_mtime_ns
  capsys.readouterr()
  assert cli.main(argv) == 0
  assert "nothing to do" in capsys.readouterr().out
  assert os.stat(final).st_mtime_ns == before  # the export RL runs start from is not rewritten


def test_tensorboard_purges_the_old_run_past_the_resumed_step(tmp_path, monkeypatch):
  made = []

  class Writer:
    def __init__(self, logdir, **kwargs):
      made.append(kwargs)

    def close(self):
      pass

  import tensorboardX
  monkeypatch.setattr(tensorboardX, "SummaryWriter", Writer)
  metrics_file.MetricsWriter(str(tmp_path), progress=False, resume_step=7).close()
  metrics_file.MetricsWriter(str(tmp_path), progress=False).close()
  assert made == [{"purge_step": 8}, {"purge_step": None}]


@pytest.mark.slow  # three short GRPO runs of a tiny model: about 25 s on 2 cores
def test_train_sigterm_saves_the_step_and_the_rerun_finishes(tmp_path, capsys, monkeypatch):
  from prl_jax.train import loop
  workdir = str(tmp_path / "rl")
  grpo = os.path.join(os.path.dirname(CONFIG), "grpo.py")
  argv = ["train", "--config", grpo, "--config.train.steps=3", "--config.rollout.prompts_per_step=4",
          "--config.rollout.n=2", "--config.train.mini_batch_size=0", "--config.log.progress=false",
          "--config.mesh.num_devices=1", "--config.log.tensorboard=false", "--workdir", workdir]
  write = metrics_file.MetricsWriter.write

  def write_then_preempt(self, step, metrics):
    write(self, step, metrics)
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # as a preemption notice

  monkeypatch.setattr(loop.MetricsWriter, "write", write_then_preempt)
  assert cli.main(argv) == 128 + signal.SIGTERM
  assert "stopped by SIGTERM after step 1" in capsys.readouterr().err
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["1"]
  monkeypatch.setattr(loop.MetricsWriter, "write", write)
  assert cli.main(argv) == 0
  rows = metrics_file.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [row["step"] for row in rows] == [1, 2, 3]
  capsys.readouterr()
  assert cli.main(argv) == 0
  assert "nothing to do" in capsys.readouterr().out
  # `reproduce` continues finished runs on purpose (the lab's gate runs): it says so instead.
  from prl_jax.reproduce import pipeline, stages
  overrides = [a.removeprefix("--config.") for a in argv if a.startswith("--config.")]
  pipeline.train_or_export(stages.load(grpo, overrides), workdir, "rl/grpo/seed0")
  out = capsys.readouterr().out
  assert "rl/grpo/seed0: trained its 3 steps earlier" in out and "nothing to do" not in out
