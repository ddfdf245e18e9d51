"""Progress bars: silent when off or on a non-main process; rate, ETA and the key metrics when on;
plain lines (no carriage returns) in a log file; evaluation counts its problems."""

import io
import re
import types

import jax
import numpy as np

from prl_jax import progress, sampling
from prl_jax.data import arithmetic
from prl_jax.eval import evaluate as ev
from prl_jax.models.config import preset
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.rewards.verify import Verifier
from prl_jax.run.metrics_file import MetricsWriter

# tqdm's "[elapsed<remaining, rate" block, e.g. "[00:01<00:02,  1.50step/s" or "2.10s/step".
RATE_ETA = r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step)"
METRICS = {"train/reward": 0.25, "rollout/reward": 0.5, "policy/loss": -0.0123,
           "time/tokens_per_s": 812.0, "other/number": 7.0}


def _write_steps(writer, steps):
  for step in steps:
    writer.write(step, METRICS)
  writer.close()


def test_no_output_when_progress_is_off(tmp_path, capfd):
  _write_steps(MetricsWriter(str(tmp_path), tensorboard=False, progress=False, total=3), [1, 2, 3])
  assert capfd.readouterr().err == ""
  assert len(open(tmp_path / "metrics.jsonl").readlines()) == 3


def test_no_output_on_a_process_that_does_not_write(tmp_path, capfd):
  # The loop passes enabled=is_main_process(): another process writes no file and draws no bar.
  _write_steps(MetricsWriter(str(tmp_path), enabled=False, tensorboard=False, total=3), [1, 2, 3])
  assert capfd.readouterr().err == ""


def test_no_bar_on_a_non_main_process_of_a_job(tmp_path, capfd, monkeypatch):
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  _write_steps(MetricsWriter(str(tmp_path), tensorboard=False, total=3), [1, 2, 3])
  with progress.progress_bar(4, "eval") as bar:
    bar.update(4)
  assert capfd.readouterr().err == ""


def test_bar_shows_rate_eta_and_metrics_once_per_log_interval(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # a log line for every write
  writer = MetricsWriter(str(tmp_path), tensorboard=False, total=5, resume_step=1)
  _write_steps(writer, [2, 3, 4, 5])
  err = capsys.readouterr().err
  assert "\r" not in err  # stderr is not a terminal here: one plain line per redraw
  lines = err.splitlines()
  assert lines[0].startswith("train:") and "1/5" in lines[0]  # a resumed run starts at its step
  shown = [line for line in lines if "reward=0.25" in line]
  assert len(shown) >= 4, err
  for line in shown:
    assert re.search(RATE_ETA, line), line
    assert "sampled=0.5" in line and "loss=-0.0123" in line and "tok/s=812" in line
    assert "other" not in line
  assert "5/5" in lines[-1] and "100%" in lines[-1]


def test_log_file_gets_few_lines_and_steps_between_writes_count(tmp_path, capsys):
  # The default interval: a fast run leaves its first and last line, not one per step.
  writer = MetricsWriter(str(tmp_path), tensorboard=False, total=40,
                         filename="sft_metrics.jsonl")
  _write_steps(writer, range(10, 41, 10))  # log.every = 10
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) <= 3, lines
  assert lines[0].startswith("sft:") and "40/40" in lines[-1] and "loss=" in lines[-1]
  assert re.search(RATE_ETA, lines[-1]), lines[-1]


def test_terminal_redraws_in_place_and_say_keeps_the_bar_intact(capsys):
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  screen = Terminal()
  with progress.progress_bar(3, "work", unit="problem", file=screen) as bar:
    bar.update(1)
    progress.say("a message")
    bar.update(2)
  assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
  assert capsys.readouterr().out == "a message\n"


def test_evaluate_counts_problems_in_two_bars(monkeypatch, capsys):
  tok = CharTokenizer()
  verifier = Verifier(workers=0)

  def fake_sample(params, model_cfg, prompts, key, scfg, *, mesh=None, **_):
    tokens = np.full((len(prompts) * scfg.n, 2), tok.eos_id, np.int32)
    mask = np.ones(tokens.shape, bool)
    return types.SimpleNamespace(tokens=tokens, mask=mask, truncated=np.zeros(len(tokens), bool),
                                 lengths=mask.sum(axis=1),
                                 logprobs=np.zeros(tokens.shape, np.float32))

  monkeypatch.setattr(sampling, "sample", fake_sample)  # under every chunked sampler call
  examples = arithmetic.generate(5, (1, 2), seed=0)
  ev.evaluate(None, preset("tiny"), tok, examples, verifier, n=2,
              temperature=1.0, max_new_tokens=2, seed=0, batch_prompts=2, progress=True)
  lines = capsys.readouterr().err.splitlines()
  for desc in ("eval: 2 samples", "eval: greedy"):
    final = [line for line in lines if line.startswith(desc)][-1]
    assert "5/5" in final and re.search(r"(problem/s|s/problem)", final), final
