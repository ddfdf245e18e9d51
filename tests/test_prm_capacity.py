"""benchmarks/prm_capacity.py: its labelled lines, where it reads a line's value, and the PRM's
held-out probe during training (the readout must see the line: a PRM learns the parity of each
line's value, which sits in the token before the step end)."""

import json
import os
import random
import sys

import jax
import numpy as np

from prl_jax.config import apply_overrides, load_config_file
from prl_jax.data import register
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.models.transformer import init_params
from prl_jax.prm import imports
from prl_jax.prm import model as prm_model
from prl_jax.run.context import build_context

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
from benchmarks import prm_capacity  # noqa: E402

ERPRM = os.path.join(ROOT, "configs", "lab", "erprm.py")


def _problems(n):
  return register.generate(n, seed=5)


def test_uniform_lines_are_labelled_by_the_checker_at_the_slip_rate():
  settings = load_config_file(ERPRM).task.register
  problems = _problems(200)
  rows = prm_capacity.labelled_rows(problems, 4, "uniform", 0.25, settings, "line", seed=1)
  assert len(rows) == 800
  wrong = []
  for i, row in enumerate(rows):
    ex = problems[i // 4]
    text = "\n".join(row["completions"])
    assert row["labels"] == register.step_labels(text, ex)
    # Every line echoes its operation; a wrong one differs only in its value, and the next line
    # continues from the value written (so a line's label is its own, not its prefix's).
    start, ops = register.parse_question(ex["question"])
    previous = start
    for line, ok, op in zip(row["completions"], row["labels"], ops):
      assert line.startswith(f"{op[0]}{op[1]}=")
      assert ok == (int(line[-1]) == register.apply(previous, op))
      previous = int(line[-1])
      wrong.append(not ok)
  assert abs(np.mean(wrong) - 0.25) < 0.03  # 6,400 lines: 5 standard errors
  parity = prm_capacity.labelled_rows(problems[:3], 1, "uniform", 0.25, settings, "parity", 1)
  for row in parity:
    assert row["labels"] == [int(line[-1]) % 2 == 0 for line in row["completions"]]


def test_operation_prior_counts_the_training_lines():
  def rec(steps, labels):
    return imports.trl_record(0, {"prompt": "Q: 1:+2+3\nA: ", "completions": steps,
                                  "labels": labels})
  train = [rec(["+2=3", "+3=6"], [True, True]), rec(["+2=4", "+3=7"], [False, True])]
  heldout = [rec(["+2=3", "+3=6"], [True, True]), rec(["-4=0"], [False])]
  np.testing.assert_allclose(prm_capacity.operation_prior(train, heldout), [0.5, 1.0, 0.0])


def test_value_positions_hold_each_lines_written_value():
  tok = CharTokenizer()
  problems = _problems(6)
  texts = [register.demonstrate(ex["question"], random.Random(i), {}, slip_rate=0.3)
           for i, ex in enumerate(problems)]
  records = [imports.trl_record(i, {"prompt": ex["prompt"], "completions": t.split("\n"),
                                    "labels": register.step_labels(t, ex)})
             for i, (ex, t) in enumerate(zip(problems, texts))]
  batch = prm_model.prm_batch(tok, records, "prm", imports.DATA_LABEL, 40, 64)
  rows, at = prm_capacity.value_positions(batch)
  values = [line[-1] for t in texts for line in t.split("\n")]
  assert [tok.decode([batch.seq.tokens[r, a]]) for r, a in zip(rows, at)] == values
  # The right value of each line continues from the value written before it; on a clean chain
  # they are the chain's true values.
  right = prm_capacity.right_values(records, problems, 1)
  assert [v == int(w) for v, w in zip(right, values)] == [
      ok for r in records for ok in r["labels"][imports.DATA_LABEL]]
  clean = [imports.trl_record(0, {"prompt": ex["prompt"], "completions": ex["solution"].split(
      "\n"), "labels": [True] * ex["difficulty"]}) for ex in problems]
  assert prm_capacity.right_values(clean, problems, 1) == [
      v for ex in problems for v in register.values(*register.parse_question(ex["question"]))]


def test_a_prm_learns_what_its_readout_sees_and_the_probe_logs_it(tmp_path):
  """End to end on a random tiny model: the parity of each line's value is learnable from the
  step end (held-out AUROC well above chance), and the probe runs on its schedule."""
  config = apply_overrides(load_config_file(ERPRM), ["model.preset=tiny", "init_from=",
                                                     "mesh.num_devices=1"])
  ctx = build_context(config, str(tmp_path / "ctx"), reads_prm=False)
  init = str(tmp_path / "init")
  ctx.export_policy(init_params(ctx.model_cfg, jax.random.key(0)), init)
  out = str(tmp_path / "out")
  prm_capacity.main(["--init", init, "--out", out, "--target", "parity", "--problems", "96",
                     "--heldout", "16", "--steps", "60", "--probe-every", "20",
                     "--override", "mesh.num_devices=1"])
  with open(os.path.join(out, "capacity.json")) as fh:
    result = json.load(fh)
  assert [step for step, _ in result["prm_auroc_curve"]] == [20, 40, 60]
  assert result["prm"]["probe"]["heldout_auroc"] == result["prm_auroc_curve"][-1][1]
  assert result["prm_auroc_curve"][-1][1] > 0.8
  assert 0.3 < result["heldout_right"] < 0.7
  assert len(result["right_value_by_depth"]) == 2  # the tiny model's two layers
  assert all(0.0 <= share <= 1.0 for share in result["right_value_by_depth"])
  assert os.path.exists(os.path.join(out, "prm", prm_model.SPEC_FILE))

