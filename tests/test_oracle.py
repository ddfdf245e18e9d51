"""The oracle control: the step checker's labels land on the right tokens, its advantage is
PRIME's code mode on those labels, and a run of method=oracle on register chains works."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from prl_jax.algorithms import advantages as adv
from prl_jax.algorithms.recipes import RLInputs
from prl_jax.algorithms.registry import get_recipe
from prl_jax.config import ConfigError
from prl_jax.data import register
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.ops.steps import step_end_mask
from prl_jax.train.step_checker import checker_step_rewards


def _rows(texts, width=48):
  tok = CharTokenizer()
  ids = [tok.encode(t) + [tok.eos_id] for t in texts]
  tokens = np.zeros((len(ids), width), np.int32)
  mask = np.zeros((len(ids), width), np.float32)
  for b, row in enumerate(ids):
    tokens[b, :len(row)], mask[b, :len(row)] = row, 1
  ends = step_end_mask(jnp.asarray(mask), "delimiter", delimiter_ids=tok.encode("\n"),
                       token_ids=jnp.asarray(tokens))
  return tokens, mask, np.asarray(ends)


def test_checker_labels_sit_on_each_lines_last_token():
  ex = register.generate(1, seed=2)[0]
  lines = ex["solution"].splitlines()
  wrong_v = (int(lines[2][-1]) + 1) % 10
  broken = "\n".join(lines[:2] + [lines[2][:3] + str(wrong_v)] + lines[3:])
  texts = [ex["solution"], broken]
  _, mask, ends = _rows(texts)
  rewards = checker_step_rewards(texts, [ex, ex], ends)
  for b, text in enumerate(texts):
    # Line k (4 characters) ends with its newline at 5k + 4; the last line at the EOS (5*7 + 4).
    positions = [5 * k + 4 for k in range(8)]
    assert list(np.flatnonzero(ends[b])) == positions
    want = np.zeros(mask.shape[1])
    want[positions] = register.step_labels(text, ex)
    np.testing.assert_array_equal(rewards[b], want)
  # Line 2 is wrong, and line 3 too: it continues from the true value, not the one written.
  assert rewards[1].sum() == 6 and rewards[1][5 * 2 + 4] == rewards[1][5 * 3 + 4] == 0
  with pytest.raises(ConfigError, match="step checker"):
    checker_step_rewards(["1+2=3"], [{"task": "arithmetic"}], ends[:1])


def test_oracle_advantage_is_prime_code_mode_on_the_labels_and_blames_the_wrong_line():
  examples = register.generate(2, seed=4)
  texts, rows = [], []
  for ex in examples:
    lines = ex["solution"].splitlines()
    for bad in (None, 1, 5, 6):  # one right response and three with one wrong line
      if bad is None:
        texts.append(ex["solution"])
      else:
        v = (int(lines[bad][-1]) + 3) % 10
        texts.append("\n".join(lines[:bad] + [lines[bad][:3] + str(v)] + lines[bad + 1:]))
      rows.append(ex)
  _, mask, ends = _rows(texts)
  rewards = checker_step_rewards(texts, rows, ends)
  outcome = np.asarray([register.check(t, ex) for t, ex in zip(texts, rows)], np.float32)
  x = RLInputs(outcome=jnp.asarray(outcome), mask=jnp.asarray(mask),
               old_logp=jnp.zeros(mask.shape), ref_logp=jnp.zeros(mask.shape),
               prm_token=jnp.zeros(mask.shape), values=jnp.zeros(mask.shape),
               step_end=jnp.asarray(ends), group_size=4, step_rewards=jnp.asarray(rewards))
  import ml_collections
  returns_to_go = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1]
  for coef in (1.0, 8.0):
    options = ml_collections.FrozenConfigDict({"gamma": 1.0, "steps": {"delimiter": "\n"},
                                               "oracle": {"coef": coef}})
    out = get_recipe("oracle").advantages(options, x)
    # Independent of the recipe: coef * scores / max |return-to-go| over the batch, then PRIME's
    # code mode.
    scaled = coef * rewards / (np.abs(returns_to_go[mask > 0]).max() + 1e-6)
    expected = adv.prime(jnp.asarray(scaled), jnp.asarray(outcome), jnp.asarray(mask), 4,
                         mode="code", gamma=1.0, base="rloo")
    np.testing.assert_allclose(np.asarray(out.token), np.asarray(expected), rtol=1e-5, atol=1e-6)
  assert float(out.metrics["oracle/step_accuracy"]) == pytest.approx(rewards.sum() / ends.sum())
  token = np.asarray(out.token)
  for g in range(2):
    right, wrong = 4 * g, 4 * g + 2  # the wrong line of row 4g+2 is line 5 (characters 25..29)
    assert token[wrong, 25:30].mean() < token[right, 25:30].mean()


def test_oracle_trains_on_register_chains(tmp_path):
  from tests.test_train_loop import tiny_config
  from prl_jax.run.metrics_file import read_metrics
  from prl_jax.train.loop import train

  config = tiny_config("rloo", **{
      "task.name": "register", "task.min_ops": 4, "task.max_ops": 4, "task.max_prompt_len": 24,
      "rollout.max_new_tokens": 24, "train.steps": 2, "checkpoint.every": 2})
  config.method = "oracle"
  train(config, str(tmp_path))
  rows = read_metrics(os.path.join(tmp_path, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2]
  assert all(0 <= r["oracle/step_accuracy"] <= 1 for r in rows)
  # The oracle's process return is the number of right lines: 0..K (K = 4 here).
  assert all(0 <= r["process/return_mean"] <= 4 for r in rows)
  assert all(r["policy/entropy"] > 0 for r in rows)  # logged without an entropy bonus too
  with pytest.raises(ConfigError, match="delimiter"):
    from prl_jax.run.context import validate
    config = tiny_config("rloo", **{"algo.steps.delimiter": "'.'"})
    config.method = "oracle"
    validate(config)


def test_step_auroc_scores_lines_up_to_the_first_error():
  from prl_jax.train.step_diagnostics import line_scores, step_auroc

  ex = register.generate(1, seed=6)[0]
  lines = ex["solution"].splitlines()
  v = (int(lines[3][-1]) + 1) % 10
  texts = [ex["solution"], "\n".join(lines[:3] + [lines[3][:3] + str(v)] + lines[4:])]
  tokens, mask, ends = _rows(texts)
  newline = CharTokenizer().encode("\n")
  labels = checker_step_rewards(texts, [ex, ex], ends)
  # Line sums: a reward on each line's last token is that line's score.
  assert line_scores(labels, tokens, mask, newline)[1] == [1, 1, 1, 0, 0, 1, 1, 1]
  # The oracle's own labels separate right lines from the first wrong one perfectly.
  assert step_auroc(labels, tokens, mask, newline, texts, [ex, ex]) == 1.0
  # Hand-made scores: right lines (8 in row 0, 3 in row 1) vs the one first error (row 1 line 3).
  scores = np.zeros(mask.shape, np.float32)
  per_line = [[0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.4, 0.7], [0.6, 0.2, 0.0, 0.35, 9, 9, 9, 9]]
  for b in range(2):
    for k, value in enumerate(per_line[b]):
      scores[b, 5 * k + 2] = value  # anywhere inside line k
  # Right-line scores above 0.35: 0.5 0.9 0.8 0.4 0.7 0.6 = 6 of 11.
  assert step_auroc(scores, tokens, mask, newline, texts, [ex, ex]) == pytest.approx(6 / 11)
  assert step_auroc(scores[:1], tokens[:1], mask[:1], newline, texts[:1], [ex]) is None
