"""The run experience (issue: every command explains itself, nothing is silently wrong).

Eval splits that never repeat training prompts, refusal to mix two runs in one workdir, and the
other guarantees a user meets before any model is compiled.
"""

import os

import pytest

from prl_jax.config import ConfigError, apply_overrides, load_config_file
from prl_jax.data import arithmetic, countdown
from prl_jax.eval import evaluate
from prl_jax.run import context

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "mini")


def _config(name="rloo", *overrides):
  return apply_overrides(load_config_file(os.path.join(CONFIGS, f"{name}.py")), list(overrides))


# ----------------------------------------------------------------- eval splits vs training


@pytest.mark.parametrize("task,extra", [("arithmetic", ()), ("countdown", ("task.min_ops=3", "task.max_ops=4", "task.max_prompt_len=48"))])
def test_every_synthetic_eval_split_is_disjoint_from_training(task, extra, tmp_path):
  # The mini preset's sizes: 2000 training problems, 256 eval, 128 held out; max_ops up to the
  # held-out lengths for arithmetic so that only the exclusion (not the length) separates them.
  overrides = [f"task.name={task}", "task.num_eval=256", "eval.num_problems=128", *extra]
  if task == "arithmetic":
    overrides += ["task.max_ops=6", "task.max_prompt_len=32"]
  config = _config("rloo", *overrides)
  tokenizer = context._tokenizer(config)
  train, evals, _ = context.split_examples(config, tokenizer)
  seen = {ex["question"] for ex in train}
  assert len(evals) == 256
  assert not seen & {ex["question"] for ex in evals}
  heldout = evaluate.split_examples(config, "heldout", train, evals, tokenizer)
  assert len(heldout) == 128
  assert not seen & {ex["question"] for ex in heldout}
  assert all(ex["id"].startswith(f"{task}-eval-") for ex in evals)


def test_default_eval_split_had_overlapped_training_before():
  """The old eval split (the training stream, seed + 1) repeated most training questions: the
  count the fix removes, computed by an independent loop."""
  train = {ex["question"] for ex in arithmetic.generate(2000, (1, 2), 1234, high=9)}
  old_eval = arithmetic.generate(64, (1, 2), 1235, high=9)
  assert sum(ex["question"] in train for ex in old_eval) > 32


@pytest.mark.parametrize("module", [arithmetic, countdown])
def test_exclusion_keeps_the_stream_and_stops_when_nothing_is_left(module):
  plain = module.generate(20, seed=3, split="eval")
  assert module.generate(20, seed=3, split="eval", exclude=()) == plain
  skip = {plain[0]["question"], plain[5]["question"]}
  kept = module.generate(18, seed=3, split="eval", exclude=skip)
  assert [ex["question"] for ex in kept] == [ex["question"] for ex in plain if ex["question"] not in skip]
  everything = {ex["question"] for ex in module.generate(3000, 2 if module is countdown else 1,
                                                          seed=0, low=1, high=2)}
  with pytest.raises(ValueError, match="num_eval"):
    module.generate(len(everything) + 1, 2 if module is countdown else 1, seed=0, low=1, high=2,
                    exclude=everything)


def test_too_small_a_task_for_its_eval_split_is_a_config_error():
  config = _config("rloo", "task.max_operand=2", "task.max_ops=1", "task.num_train=200")
  with pytest.raises(ConfigError, match="task.num_eval"):
    context.split_examples(config, context._tokenizer(config))


# ----------------------------------------------------------------- one run per workdir


from tests.test_run_config import Built, no_build  # noqa: E402,F401  (no_build is a fixture)


def _used_workdir(path):
  """A workdir as a finished run leaves it."""
  os.makedirs(path / "checkpoints" / "10")
  (path / "metrics.jsonl").write_text('{"step": 1}\n')
  os.makedirs(path / "final_hf")
  (path / "notes.txt").write_text("mine")


@pytest.mark.parametrize("entry", ["train", "sft"])
def test_resume_false_on_an_earlier_run_is_refused_and_overwrite_clears_it(entry, tmp_path,
                                                                          no_build):
  from prl_jax.train import loop, sft
  run = {"train": loop.train, "sft": sft.sft}[entry]
  _used_workdir(tmp_path)
  with pytest.raises(ConfigError, match="checkpoint.overwrite=true") as err:
    run(_config("rloo", "checkpoint.resume=false"), str(tmp_path))
  assert "checkpoints" in str(err.value) and "metrics.jsonl" in str(err.value)
  assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'  # nothing touched
  with pytest.raises(Built):
    run(_config("rloo", "checkpoint.resume=false", "checkpoint.overwrite=true"), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "notes.txt"]  # the user's file stays


def test_resume_false_on_a_fresh_or_refused_workdir_runs(tmp_path, no_build):
  from prl_jax.train import loop
  (tmp_path / "config.json").write_text("{}")  # a run refused before its first step
  with pytest.raises(Built):
    loop.train(_config("rloo", "checkpoint.resume=false"), str(tmp_path))


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unusable_workdir_is_a_config_error(kind, tmp_path, no_build):
  from prl_jax.train import loop
  if kind == "file":
    workdir = tmp_path / "afile"
    workdir.write_text("")
  else:
    if os.geteuid() == 0:
      pytest.skip("root writes everywhere")
    workdir = tmp_path / "ro"
    workdir.mkdir()
    workdir.chmod(0o500)
  with pytest.raises(ConfigError, match="--workdir"):
    loop.train(_config(), str(workdir))


# ----------------------------------------------------------------- each split its token budget


def test_heldout_split_gets_its_budget_and_unfit_solutions_are_reported(tmp_path, monkeypatch,
                                                                       capsys):
  """The mini configs allow 32 new tokens; held-out solutions need 46-80 (counted here with the
  character tokenizer, one token per character plus EOS)."""
  from prl_jax.run.context import _tokenizer
  seen = {}

  def fake_evaluate(params, model_cfg, tokenizer, examples, verifier, **kwargs):
    seen["max_new_tokens"] = kwargs["max_new_tokens"]
    return {"settings": {}, "summary": {}, "records": []}

  monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
  monkeypatch.setattr(evaluate, "write_results", lambda *a: None)
  config = _config("rloo", "eval.num_problems=32", "mesh.num_devices=1")
  tok = _tokenizer(config)
  monkeypatch.setattr(evaluate, "load_policy", lambda ctx, model_dir: evaluate.Policy(
      "x", ctx.model_cfg, tok, None))
  for split, budget in (("eval", 32), ("heldout", 96)):
    evaluate.run_eval(config, str(tmp_path), split=split)
    assert seen["max_new_tokens"] == budget
  assert "warning" not in capsys.readouterr().out
  heldout = evaluate.split_examples(config, "heldout", [], [], tok)
  need = [len(ex["solution"]) + 1 for ex in heldout]
  assert min(need) > 32
  short = _config("rloo", "eval.num_problems=32", "mesh.num_devices=1",
                  "eval.heldout_max_new_tokens=60")
  evaluate.run_eval(short, str(tmp_path), split="heldout")
  out = capsys.readouterr().out
  assert f"{sum(n > 60 for n in need)} of 32 reference solutions" in out
  assert "eval.heldout_max_new_tokens" in out


# ----------------------------------------------------------------- docs are self-contained


def test_docs_and_configs_cite_only_files_in_the_repository():
  """README, docs, configs, code and tests cite docs/algorithms.md (which carries the sources and
  the papers' settings and results), never a specification file outside the repository."""
  root = os.path.join(os.path.dirname(__file__), "..")
  outside = "ALGORITHMS" + ".md"  # spelled in two pieces so this file does not cite it
  paths = [os.path.join(root, "README.md")]
  for folder in ("docs", "configs", "prl_jax", "tests", "benchmarks"):
    for base, _, names in os.walk(os.path.join(root, folder)):
      paths += [os.path.join(base, n) for n in names if n.endswith((".md", ".py"))]
  citing = [os.path.relpath(p, root) for p in paths
            if outside in open(p, encoding="utf-8").read()]
  assert citing == []
  spec = open(os.path.join(root, "docs", "algorithms.md"), encoding="utf-8").read()
  for source in ("2502.01456", "2601.10201", "2412.11006", "2602.07832", "github.com/PRIME-RL/PRIME",
                 "Headline results"):
    assert source in spec


# ----------------------------------------------------------------- progress lines and plots


def test_progress_line_shows_accepted_groups_and_prm_accuracy(tmp_path, capsys, monkeypatch):
  from prl_jax import progress
  from prl_jax.run.metrics_file import MetricsWriter
  monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
  writer = MetricsWriter(str(tmp_path), tensorboard=False, total=2)
  for step in (1, 2):  # PRIME with every group filtered out: the line must say so
    writer.write(step, {"rollout/reward": 0.0, "filter/accepted": 0.0,
                        "prm/pairwise_accuracy": 0.61, "prm/loss": 0.69})
  writer.close()
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert "accepted=0" in last and "prm_acc=0.61" in last
  assert "s/step" in last or "step/s" in last  # the rate (and the ETA before it)


def test_accuracy_plot_has_a_chance_line_and_the_legend_off_the_curves():
  from prl_jax.eval import plots
  fig = plots.line_figure({"prime": ([1, 2, 3], [0.5, 0.7, 0.9]), "prl": ([1, 2, 3], [0.4, 0.6, 1.0])},
                          ylim=(0, 1.02), hlines={"chance (0.5)": 0.5})
  fig.canvas.draw()
  ax = fig.axes[0]
  flat = [line for line in ax.get_lines() if set(line.get_ydata()) == {0.5}]
  assert [line.get_label() for line in flat] == ["chance (0.5)"]
  legend = ax.get_legend().get_window_extent()
  assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, not over a curve


def test_pass_at_k_plot_is_in_percent_as_the_tables(monkeypatch, tmp_path):
  from prl_jax.eval import plots
  seen = {}
  monkeypatch.setattr(plots, "line_plot", lambda series, path, **kw: seen.update(series, **kw))
  plots.pass_at_k_plot({"rloo": [0.25, 0.5]}, str(tmp_path / "p.png"))
  assert list(seen["rloo"][1]) == [25.0, 50.0] and "%" in seen["ylabel"]


def test_reproduce_runs_write_tensorboard():
  from prl_jax.reproduce import pipeline
  assert "log.tensorboard=true" in pipeline.logging_overrides(False)
