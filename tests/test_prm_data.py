"""Step-labelled PRM data (TRL stepwise supervision, Math-Shepherd) as ER-PRM training records,
and PRMs read at an inserted step tag."""

import json
import os

import numpy as np
import pytest

from prl_jax.data.rows import DataFileError
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.prm import imports
from prl_jax.prm import model as prm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SHEPHERD = os.path.join(FIXTURES, "prm_math_shepherd.jsonl")
TRL = os.path.join(FIXTURES, "prm_trl_stepwise.jsonl")
TOK = CharTokenizer()


def test_math_shepherd_rows_split_at_the_tag_with_labels_from_its_place():
  first, second = imports.load_prm_rows([SHEPHERD])
  assert first["prompt"].startswith("Janet's ducks") and first["prompt"].endswith("market? ")
  assert first["steps"] == [
      "Step 1: Janet's ducks lay 16 eggs per day.\n",
      "Step 2: She eats 3 for breakfast, so she has 16 - 3 = 13 eggs left.\n",
      "Step 3: She bakes muffins with 4 eggs, so she has 13 - 4 = 9 eggs left.\n",
      "Step 4: She sells each egg for $2, so she makes 9 * $2 = $18. The answer is: 18"]
  assert first["labels"]["data"] == [1.0, 1.0, 1.0, 1.0] and first["outcome"] == 1.0
  assert second["labels"]["data"] == [1.0, 1.0, 0.0] and second["outcome"] == 0.0
  assert second["steps"][-1] == "Step 3: So it takes 2 * 1 = 2 bolts in total. The answer is: 2"
  assert all("ки" not in s for r in (first, second) for s in r["steps"] + [r["prompt"]])


def test_trl_stepwise_rows_are_the_completions_with_their_labels():
  first, second = imports.load_prm_rows([TRL])
  assert len(first["steps"]) == 4 and first["steps"][0].endswith("$110 in total.\n")
  assert not first["steps"][-1].endswith("\n")  # the solution ends where the last step does
  assert first["labels"]["data"] == [1.0, 1.0, 1.0, 0.0] and first["outcome"] == 0.0
  assert second["labels"]["data"] == [1.0, 1.0] and first["prompt"].endswith("shovel?\n")
  assert imports.load_prm_rows([TRL], "trl") == [first, second]


@pytest.mark.parametrize("row, fmt, message", [
    ({"input": "Q? Step 1: a ки\nStep 2: b ки", "label": "Q? Step 1: a +\nStep 2: b *"},
     "auto", r"line 1: field 'label' is malformed \(has '\*' at tag 2, not \+ or -"),
    ({"input": "Q? Step 1: a ки", "label": "Q! Step 1: a +"}, "auto",
     r"field 'label' is malformed .*differs from 'input' before tag 1"),
    ({"input": "Q? Step 1: a <step>", "label": "Q? Step 1: a +"}, "auto",
     r"no step tag 'ки' \(set algo.erprm.data_tag"),
    ({"prompt": "Q?", "completions": ["a", "b"], "labels": [True]}, "auto",
     r"field 'labels' is malformed \(not 2 true/false values"),
    ({"question": "Q?", "steps": ["a"]}, "auto", r"neither TRL's stepwise supervision"),
    ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a +"}, "trl", r"field 'prompt' is missing"),
])
def test_bad_prm_rows_name_the_line_and_the_column(tmp_path, row, fmt, message):
  path = tmp_path / "prm.jsonl"
  path.write_text(json.dumps(row) + "\n")
  with pytest.raises(DataFileError, match=message):
    imports.load_prm_rows([str(path)], fmt)


def test_tagged_solution_reads_each_step_at_its_tag():
  steps = ["3+4=7\n", "7-2=5\n", "The answer is 5"]
  ids, ends = prm.tagged_solution(TOK.encode, steps, " #")
  text = TOK.decode(ids)
  assert text == "3+4=7 #\n7-2=5 #\nThe answer is 5 #"
  assert ends == [i for i, c in enumerate(text) if c == "#"]
  # pack_solution with a tag: no EOS, the last step read at its tag too.
  assert prm.pack_solution(TOK.encode, TOK.eos_id, steps, True, " #") == (ids, ends)
  assert prm.pack_solution(TOK.encode, TOK.eos_id, steps, True)[1][-1] == len("".join(steps))


def test_prm_batch_targets_sit_on_the_tags():
  (record,) = imports.load_prm_rows([SHEPHERD])[1:]
  batch = prm.prm_batch(TOK, [record], "prm", imports.DATA_LABEL, 128, 192, tag=" #")
  response = TOK.decode([int(t) for t in batch.seq.tokens[0, 128:] if t != TOK.pad_id])
  tags = [i for i, c in enumerate(response) if c == "#"]
  assert len(tags) == 3 and np.flatnonzero(batch.step_end[0]).tolist() == tags
  assert batch.target[0, tags].tolist() == [1.0, 1.0, 0.0]


def test_a_tagged_prm_learns_the_imported_labels():
  import jax
  import jax.numpy as jnp

  from prl_jax.models.config import preset
  from prl_jax.models.transformer import init_params
  from prl_jax.run.state import ModelState, adamw

  cfg = preset("tiny", vocab_size=TOK.vocab_size)
  params = init_params(cfg, jax.random.key(3))
  records = [imports.load_prm_rows([SHEPHERD])[1], imports.load_prm_rows([TRL])[1]]  # the short
  batch = prm.prm_batch(TOK, records, "prm", imports.DATA_LABEL, 128, 192, tag=" #")
  plus, minus = TOK.encode("+")[0], TOK.encode("-")[0]
  loss_fn = jax.jit(prm.prm_loss_fn(cfg, plus, minus))
  num, (den, _) = loss_fn(params, batch)
  assert float(den) == 3 + 2  # one target per imported step
  before = float(num / den)
  tx = adamw(1e-2, grad_clip=1.0)
  update = prm.make_prm_update(cfg, tx, plus, minus)
  state = ModelState(jax.tree_util.tree_map(jnp.array, params), tx.init(params))
  for _ in range(6):
    state, _ = update(state, batch)
  num, (den, _) = loss_fn(state.params, batch)
  assert float(num / den) < 0.7 * before


@pytest.mark.slow  # samples best-of-N candidates of 320 tokens (about a minute on 2 cores)
def test_erprm_command_trains_a_tagged_prm_on_math_shepherd_rows(tmp_path):
  import jax

  from prl_jax import cli
  from prl_jax.models import hf
  from prl_jax.models.config import preset
  from prl_jax.models.transformer import init_params

  cfg = preset("tiny", vocab_size=TOK.vocab_size)
  policy = str(tmp_path / "policy")
  hf.save_hf(policy, cfg, init_params(cfg, jax.random.key(0)))
  TOK.save(policy)
  config = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "sft.py")
  work = str(tmp_path / "run")
  assert cli.main(["erprm", "--config", config, f"--config.init_from={policy}",
                   "--config.mesh.num_devices=1", "--config.rollout.max_new_tokens=320",
                   "--config.task.max_prompt_len=320", "--config.log.tensorboard=false",
                   "--config.log.progress=false", f"--config.algo.erprm.prm_data={SHEPHERD}",
                   "--config.algo.erprm.step_tag= #", "--workdir", work, "--prm-steps", "2",
                   "--prm-batch-size", "2", "--eval-problems", "2", "--n-max", "2",
                   "--draws", "2"]) == 0
  out = os.path.join(work, "erprm")
  spec = prm.PrmSpec.load(os.path.join(out, "prm_data"))
  assert spec.step_tag == " #" and spec.label == imports.DATA_LABEL
  report = json.load(open(os.path.join(out, "best_of_n.json")))
  assert report["labels"]["solutions"] == 2 and report["labels"]["steps"] == 7
  assert "PRM (data labels) [min]" in report["methods"]
