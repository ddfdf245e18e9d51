"""The ER-PRM pipeline: step splitting, Monte Carlo labels, the PRM read-out and loss, best-of-N.

References are written independently here: labels from the closed form
(1/eta) log(1 + (c/N)(e^eta - 1)) in float64, the PRM loss from full-vocabulary logits read at
positions computed from character counts, and best-of-N limits (an oracle scorer gives pass@N, a
constant one the mean accuracy).
"""

import json
import math
import os

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from prl_jax.data import arithmetic
from prl_jax.eval import best_of_n as bon
from prl_jax.eval import prm_experiment
from prl_jax.eval.metrics import pass_at_k
from prl_jax.models.config import preset
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.models.transformer import Transformer, init_params
from prl_jax.ops.steps import step_end_mask
from prl_jax.prm import labels
from prl_jax.prm import model as prm
from prl_jax.sampling import SamplingConfig
from prl_jax.run.state import ModelState, adamw

TOK = CharTokenizer()
CFG = preset("tiny", vocab_size=TOK.vocab_size)
PLUS, MINUS = TOK.encode("+")[0], TOK.encode("-")[0]


def _read_jsonl(path):
  with open(path) as fh:
    return [json.loads(line) for line in fh if line.strip()]


def _closed_form_label(c, n, eta):
  """ER-PRM section 5 with c of n correct, float64; eta = 0 / inf are the limits."""
  p = c / n
  if eta == 0:
    return p
  if math.isinf(eta):
    return float(c > 0)
  return math.log1p(p * math.expm1(eta)) / eta


# ------------------------------------------------------------------------------------------------
# Steps.


def test_split_steps_keeps_lines_and_their_newlines():
  text = "3+4=7\n7-2=5\nThe answer is 5"
  assert labels.split_steps(text) == ["3+4=7\n", "7-2=5\n", "The answer is 5"]
  assert labels.split_steps("a\nb\n") == ["a\n", "b\n"]
  assert labels.split_steps("") == []


def test_split_steps_merges_short_steps_with_the_next():
  text = "3+4=7\n7-2=5\nThe answer is 5"
  # "3+4=7" has 5 characters < 8: it absorbs "7-2=5\n" (11 characters without the last newline).
  assert labels.split_steps(text, min_chars=8) == ["3+4=7\n7-2=5\n", "The answer is 5"]
  assert labels.split_steps(text, min_chars=5) == ["3+4=7\n", "7-2=5\n", "The answer is 5"]
  # A short remainder stays the last step; everything short merges into one.
  assert labels.split_steps("abcdefghij\nab", min_chars=5) == ["abcdefghij\n", "ab"]
  assert labels.split_steps(text, min_chars=100) == [text]
  assert labels.split_steps("a. b. c", min_chars=0, delimiter=". ") == ["a. ", "b. ", "c"]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_split_steps_rejects_bad_min_chars(bad):
  with pytest.raises(ValueError, match="min_chars"):
    labels.split_steps("a\nb", min_chars=bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab\n", max_size=40), st.integers(0, 6))
def test_split_steps_properties(text, min_chars):
  steps = labels.split_steps(text, min_chars)
  assert "".join(steps) == text
  for step in steps[:-1]:
    assert step.endswith("\n") and len(step) - 1 >= min_chars
    # Greedy: without its last line the step was still too short (or empty).
    head = step[:-1].rpartition("\n")[0]
    assert head == "" or len(head) < min_chars
  assert all(step for step in steps)


def test_packed_step_ends_equal_delimiter_step_end_mask():
  """With one line per step, the PRM's step ends are step_end_mask's "\\n" delimiter mode."""
  solutions = ["3+4=7\n7-2=5\nThe answer is 5", "9+9=18\nThe answer is 18", "The answer is"]
  for finished in (True, False):
    rows, ends = [], []
    for s in solutions:
      ids, e = prm.pack_solution(TOK.encode, TOK.eos_id, labels.split_steps(s), finished)
      rows.append(ids)
      ends.append(e)
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
      tokens[i, :len(r)], mask[i, :len(r)] = r, True
    ref = np.asarray(step_end_mask(mask, "delimiter", delimiter_ids=TOK.encode("\n"),
                                   token_ids=tokens))
    for i, e in enumerate(ends):
      assert np.flatnonzero(ref[i]).tolist() == e


# ------------------------------------------------------------------------------------------------
# Monte Carlo counts and labels.


def _stub_setup(num_completions, seed=0):
  """Problems, solutions and a completer whose outcomes are planned: c correct of N per prefix."""
  rng = np.random.default_rng(seed)
  problems = arithmetic.generate(5, (1, 3), seed=3, high=9)
  solutions, finished, plan = [], [], {}
  for i, ex in enumerate(problems):
    text = ex["solution"] if i % 2 == 0 else ex["solution"].replace("The answer is ",
                                                                     "The answer is 1")
    solutions.append(text)
    finished.append(i != 3)
    steps = labels.split_steps(text)
    for k in range(len(steps) - 1):
      prompt = ex["prompt"] + "".join(steps[:k + 1])
      c = int(rng.integers(0, num_completions + 1))
      good = [f"The answer is {ex['answer']}"] * c
      bad = [f"The answer is {int(ex['answer']) + 1}"] * (num_completions - c)
      group = good + bad
      rng.shuffle(group)
      plan[prompt] = (c, group)
  seen = []

  def complete(prompts, n, key):
    assert n == num_completions
    out = []
    for p in prompts:
      text = TOK.decode(p)
      assert text in plan, f"unexpected prefix prompt {text!r}"
      out.append(list(plan[text][1]))
    return out

  def check(texts, examples):
    seen.extend(texts)
    return [arithmetic.check(t, ex) for ex, t in zip(examples, texts)]

  return problems, solutions, finished, plan, complete, check, seen


def test_counts_and_labels_equal_planned_outcomes():
  n = 8
  problems, solutions, finished, plan, complete, check, seen = _stub_setup(n)
  etas = [2.0, math.inf, 0.0, 0.5]
  records = labels.monte_carlo_counts(problems, solutions, finished, encode=TOK.encode,
                                      complete=complete, check=check, num_completions=n,
                                      key=jax.random.key(0), keep_completions=True)
  labels.add_labels(records, etas)
  assert len(records) == len(problems)
  for ex, text, done, rec in zip(problems, solutions, finished, records):
    steps = text.split("\n")
    assert rec["steps"] == labels.split_steps(text) and len(rec["steps"]) == len(steps)
    assert rec["finished"] == done and rec["solution"] == text
    outcome = float(arithmetic.check(text, ex))
    assert rec["outcome"] == outcome
    expected_c = [plan[ex["prompt"] + "".join(rec["steps"][:k + 1])][0]
                  for k in range(len(steps) - 1)] + [int(outcome)]
    expected_n = [n] * (len(steps) - 1) + [1]
    assert rec["correct"] == expected_c and rec["total"] == expected_n
    for eta in etas:
      got = rec["labels"][labels.eta_key(eta)]
      want = [_closed_form_label(c, m, eta) for c, m in zip(expected_c, expected_n)]
      np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)
    # The limits: eta -> inf is "any completion correct", eta -> 0 the fraction correct.
    assert rec["labels"]["inf"][:-1] == [float(c > 0) for c in expected_c[:-1]]
    np.testing.assert_allclose(rec["labels"]["0.0"][:-1], [c / n for c in expected_c[:-1]],
                               rtol=1e-6)
    # The last step is the solution's own correctness at every eta.
    assert all(rec["labels"][labels.eta_key(e)][-1] == outcome for e in etas)
  # The solutions were checked first, then every completion as prefix + completion.
  assert seen[:len(solutions)] == solutions
  completions = seen[len(solutions):]
  expected = [prefix + z for ex, rec in zip(problems, records) for k in range(len(rec["steps"]) - 1)
              for prefix in ["".join(rec["steps"][:k + 1])]
              for z in plan[ex["prompt"] + prefix][1]]
  assert sorted(completions) == sorted(expected)


def test_label_records_round_trip_through_jsonl(tmp_path):
  problems, solutions, finished, _, complete, check, _ = _stub_setup(4, seed=1)
  records = labels.add_labels(labels.monte_carlo_counts(
      problems, solutions, finished, encode=TOK.encode, complete=complete, check=check,
      num_completions=4, key=jax.random.key(0)), [2.0, math.inf, 0.0])
  path = labels.write_jsonl(records, str(tmp_path / "labels.jsonl"))
  assert _read_jsonl(path) == json.loads(json.dumps(records))


def test_eta_key_and_bad_counts():
  assert labels.eta_key(math.inf) == "inf" and labels.eta_key(0) == "0.0"
  assert labels.eta_key(2) == "2.0"
  with pytest.raises(ValueError, match="eta"):
    labels.eta_key(-1.0)
  with pytest.raises(ValueError, match="counts"):
    labels.add_labels([{"steps": ["a"], "correct": [3], "total": [2]}], [1.0])


@pytest.fixture(scope="module")
def params():
  """A random tiny model over the character vocabulary (policy and PRM alike)."""
  return init_params(CFG, jax.random.key(7))


def test_labels_from_tiny_model_equal_an_independent_count(params):
  """Real Monte Carlo completions of a tiny model; counts recomputed from the kept texts."""
  problems = arithmetic.generate(3, (1, 2), seed=5, high=9)
  solutions = [ex["solution"] for ex in problems]
  scfg = SamplingConfig(max_new_tokens=6, temperature=1.0, eos_id=TOK.eos_id,
                        pad_id=TOK.pad_id, attention_segments=1)
  complete = labels.policy_completer(params, CFG, TOK.decode, scfg, max_rows=64)

  def check(texts, examples):  # about half of random completions pass: the parity of a digit sum
    return [float(sum(map(ord, t)) % 2 == 0) for t in texts]

  def run():
    return labels.add_labels(labels.monte_carlo_counts(
        problems, solutions, [True] * 3, encode=TOK.encode, complete=complete, check=check,
        num_completions=4, key=jax.random.key(3), keep_completions=True), [2.0, math.inf, 0.0])

  records = run()
  for rec in records:
    for k, group in enumerate(rec["completions"]):
      assert len(group) == 4
      prefix = "".join(rec["steps"][:k + 1])
      c = sum(sum(map(ord, prefix + z)) % 2 == 0 for z in group)
      assert rec["correct"][k] == c
      assert rec["labels"]["inf"][k] == float(c > 0)
      assert rec["labels"]["0.0"][k] == pytest.approx(c / 4)
      assert rec["labels"]["2.0"][k] == pytest.approx(_closed_form_label(c, 4, 2.0), rel=1e-5)
  assert run() == records  # deterministic from the key
  assert len({z for rec in records for g in rec["completions"] for z in g}) > 1


# ------------------------------------------------------------------------------------------------
# The PRM: read-out positions, loss, updates.


def _labelled_records():
  problems = arithmetic.generate(4, (1, 3), seed=11, high=9)
  records = []
  rng = np.random.default_rng(0)
  for i, ex in enumerate(problems):
    steps = labels.split_steps(ex["solution"])
    records.append({"prompt": ex["prompt"], "steps": steps, "finished": i != 2,
                    "outcome": float(i % 2), "labels": {"2.0": rng.random(len(steps)).tolist()}})
  return records


def _reference_positions(rec, prompt_len):
  """Sequence positions whose logits score each step: P + (characters up to the step end) - 1,
  the final step at the EOS when the solution finished (character tokenizer)."""
  ends = np.cumsum([len(s) for s in rec["steps"]]) - 1
  if rec["finished"]:
    ends[-1] += 1
  return prompt_len + ends


@pytest.mark.parametrize("tied", [False, True])
def test_prm_loss_equals_numpy_soft_ce_at_step_ends(tied, params):
  cfg = preset("tiny", vocab_size=TOK.vocab_size, tie_embeddings=tied)
  if tied:  # the same weights with the output projection tied to the embedding
    params = {"params": {k: v for k, v in params["params"].items() if k != "lm_head"}}
  records = _labelled_records()
  prompt_len, response_len = 16, 40
  batch = prm.prm_batch(TOK, records, "prm", "2.0", prompt_len, response_len)
  num, (den, _) = jax.jit(prm.prm_loss_fn(cfg, PLUS, MINUS))(params, batch)

  forward = jax.jit(lambda p, t, m: Transformer(cfg).apply(p, t, token_mask=m)[0])
  logits = np.asarray(forward(params, jnp.asarray(batch.seq.tokens),
                              jnp.asarray(batch.seq.token_mask)), np.float64)
  total, count = 0.0, 0
  for i, rec in enumerate(records):
    for pos, r in zip(_reference_positions(rec, prompt_len), rec["labels"]["2.0"]):
      zp, zm = logits[i, pos, PLUS], logits[i, pos, MINUS]
      log_p = zp - np.logaddexp(zp, zm)
      log_m = zm - np.logaddexp(zp, zm)
      total += -(r * log_p + (1 - r) * log_m)
      count += 1
  assert float(den) == count
  np.testing.assert_allclose(float(num) / float(den), total / count, rtol=1e-5)

  # The outcome RM reads the last token only, against the outcome.
  batch = prm.prm_batch(TOK, records, "orm", "", prompt_len, response_len)
  num, (den, _) = prm.prm_loss_fn(cfg, PLUS, MINUS)(params, batch)
  ref = []
  for i, rec in enumerate(records):
    pos = _reference_positions(rec, prompt_len)[-1]
    zp, zm = logits[i, pos, PLUS], logits[i, pos, MINUS]
    r = rec["outcome"]
    ref.append(-(r * (zp - np.logaddexp(zp, zm)) + (1 - r) * (zm - np.logaddexp(zp, zm))))
  assert float(den) == len(records)
  np.testing.assert_allclose(float(num) / float(den), np.mean(ref), rtol=1e-5)


def test_prm_step_scores_zero_off_step_ends_and_in_unit_interval_at_them(params):
  records = _labelled_records()
  batch = prm.prm_batch(TOK, records, "prm", "2.0", 16, 40)
  scores_fn = jax.jit(prm.prm_step_scores, static_argnums=(0,))
  scores = np.asarray(scores_fn(CFG, params, batch.seq, batch.step_end, PLUS, MINUS))
  eager = np.asarray(prm.prm_step_scores(CFG, params, batch.seq, batch.step_end, PLUS, MINUS))
  np.testing.assert_allclose(scores, eager, rtol=1e-6, atol=1e-7)
  ends = np.asarray(batch.step_end)
  assert scores.shape == ends.shape
  assert np.all(scores[~ends] == 0.0)
  assert np.all((scores[ends] > 0.0) & (scores[ends] < 1.0))
  # softmax([z+, z-])[0] of the full logits at the step ends.
  logits = np.asarray(Transformer(CFG).apply(params, jnp.asarray(batch.seq.tokens),
                                             token_mask=jnp.asarray(batch.seq.token_mask))[0])
  rows, cols = np.nonzero(ends)
  z = logits[rows, 16 + cols][:, [PLUS, MINUS]].astype(np.float64)
  np.testing.assert_allclose(scores[rows, cols], np.exp(z[:, 0] - np.logaddexp(z[:, 0], z[:, 1])),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="prm_step_scores"):
    prm.prm_step_scores(CFG, params, batch.seq, batch.step_end[:, :-1], PLUS, MINUS)


def test_prm_updates_lower_the_loss(params):
  records = _labelled_records()
  for rec in records:  # a learnable pattern: intermediate steps good, final steps bad
    k = len(rec["steps"])
    rec["labels"]["2.0"] = [0.9] * (k - 1) + [0.1]
  batch = prm.prm_batch(TOK, records, "prm", "2.0", 16, 40)
  tx = adamw(1e-2, grad_clip=1.0)
  update = prm.make_prm_update(CFG, tx, PLUS, MINUS)
  loss_fn = jax.jit(prm.prm_loss_fn(CFG, PLUS, MINUS))
  num, (den, _) = loss_fn(params, batch)
  before = float(num / den)
  state = ModelState(jax.tree_util.tree_map(jnp.array, params), tx.init(params))
  for _ in range(8):
    state, metrics = update(state, batch)
  num, (den, _) = loss_fn(state.params, batch)
  assert float(num / den) < 0.7 * before
  assert set(metrics) >= {"loss", "step_acc", "grad_norm"}


def test_single_token_check_and_spec_round_trip(tmp_path):
  with pytest.raises(ValueError, match="single token"):
    prm.token_id(TOK, "++")
  spec = prm.PrmSpec("ER-PRM (eta=2)", "prm", "2.0", min_step_chars=3)
  spec.save(str(tmp_path))
  assert prm.PrmSpec.load(str(tmp_path)) == spec
  with pytest.raises(ValueError, match="kind"):
    prm.PrmSpec("x", "value", "")
  with pytest.raises(FileNotFoundError, match="prm.json"):
    prm.PrmSpec.load(str(tmp_path / "absent"))


# ------------------------------------------------------------------------------------------------
# Best-of-N curves.


def _random_correct(p=40, n=8, seed=0):
  rng = np.random.default_rng(seed)
  rates = rng.random(p)
  return (rng.random((p, n)) < rates[:, None]).astype(np.float64)


def test_oracle_scorer_gives_pass_at_n():
  correct = _random_correct()
  answers = [[str(int(c)) for c in row] for row in correct]
  res = bon.accuracy_curves({"oracle scorer": correct}, correct, answers, draws=1500, seed=0)
  c = correct.sum(axis=1).astype(int)
  for i, n in enumerate(res["budgets"]):
    exact = float(np.mean(pass_at_k(8, c, n)))
    assert res["pass_at_n"][i] == pytest.approx(exact)
    # Same subsets: the scorer picks a correct candidate iff the subset has one.
    oracle = res["methods"][bon.ORACLE]["accuracy"][i]
    assert res["methods"]["oracle scorer"]["accuracy"][i] == oracle
    assert res["methods"]["oracle scorer"]["accuracy"][i] == pytest.approx(exact, abs=0.01)
  assert res["methods"][bon.ORACLE]["accuracy"][-1] == float(np.mean(c > 0))  # N = N_max


def test_constant_scorer_gives_mean_accuracy():
  correct = _random_correct(seed=1)
  answers = [[None] * 8 for _ in correct]
  res = bon.accuracy_curves({"constant": np.zeros_like(correct)}, correct, answers, draws=1500,
                            seed=3)
  for i, n in enumerate(res["budgets"]):
    # Ties go to the first candidate of a random subset: a uniformly random candidate.
    assert res["methods"]["constant"]["accuracy"][i] == pytest.approx(correct.mean(), abs=0.01)
    first = bon.subset_indices(40, 8, n, 1500, 3)[..., 0]
    exact = np.take_along_axis(correct[None], first[..., None], axis=-1).mean()
    assert res["methods"]["constant"]["accuracy"][i] == pytest.approx(exact, abs=1e-12)
  # Nobody extracted an answer: majority vote never picks anything.
  assert res["methods"][bon.MAJORITY]["accuracy"] == [0.0] * len(res["budgets"])


def test_majority_vote_at_full_budget_is_the_plurality_answer():
  rng = np.random.default_rng(2)
  answers, correct, expected = [], [], []
  for p in range(30):
    gold = int(rng.integers(0, 5))
    winner = int(rng.integers(0, 5))
    row = [winner] * 4 + [int(x) for x in rng.choice([a for a in range(5, 9)], 4, replace=False)]
    rng.shuffle(row)
    answers.append([str(a) for a in row])
    correct.append([float(a == gold) for a in row])
    expected.append(float(winner == gold))
  res = bon.accuracy_curves({}, np.array(correct), answers, draws=5, seed=0)
  assert res["methods"][bon.MAJORITY]["accuracy"][-1] == pytest.approx(np.mean(expected))


def test_curves_are_reproducible_from_the_seed():
  correct = _random_correct(seed=4)
  scores = {"noisy": correct + np.random.default_rng(0).normal(0, 1, correct.shape)}
  answers = [[str(int(c)) for c in row] for row in correct]
  a = bon.accuracy_curves(scores, correct, answers, draws=50, seed=9)
  b = bon.accuracy_curves(scores, correct, answers, draws=50, seed=9)
  c = bon.accuracy_curves(scores, correct, answers, draws=50, seed=10)
  assert a == b
  assert a["methods"]["noisy"] != c["methods"]["noisy"]
  # A budget's curve does not depend on which other budgets are computed.
  d = bon.accuracy_curves(scores, correct, answers, draws=50, seed=9, ns=[4])
  assert d["methods"]["noisy"]["accuracy"] == [a["methods"]["noisy"]["accuracy"][2]]


def test_budgets_auc_and_bad_shapes():
  assert bon.budgets(16) == [1, 2, 4, 8, 16] and bon.budgets(12) == [1, 2, 4, 8, 12]
  correct = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  assert bon.roc_auc(correct, correct) == 1.0
  assert bon.roc_auc(-correct, correct) == 0.0
  assert bon.roc_auc(np.zeros_like(correct), correct) == 0.5
  with pytest.raises(ValueError, match="expected"):
    bon.accuracy_curves({"x": np.zeros((2, 2))}, correct, [[None] * 3] * 2, draws=2, seed=0)


def test_within_problem_and_reference_step_auc():
  # Problem 0 ranks perfectly, problem 1 backwards, problem 2 has no wrong candidate.
  scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
  correct = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
  assert bon.within_problem_auc(scores, correct) == 0.5
  ex = arithmetic.generate(1, 2, seed=0, high=9)[0]
  good = ex["solution"]
  a, op, b, c = arithmetic.solve_steps(*arithmetic.parse_question(ex["question"]))[0]
  bad = good.replace(f"={c}\n", f"={c + 1}\n", 1)
  cands = prm_experiment.Candidates([ex], [[good, bad]], np.ones((1, 2), bool), np.array([[1.0, 0.0]]),
                         [[None, None]])
  spec = prm.PrmSpec("p", "prm", "2.0")
  # Steps of good: on track, on track; of bad: off, off (the last step is never scored here).
  assert prm_experiment.reference_step_auc(cands, [[0.9, 0.8, 0.0], [0.2, 0.1, 1.0]], spec) == 1.0
  assert prm_experiment.reference_step_auc(cands, [[0.1, 0.2, 0.0], [0.9, 0.8, 1.0]], spec) == 0.0
  assert prm_experiment.reference_step_auc(cands, [[0.5], [0.5]], prm.PrmSpec("o", "orm", "")) is None
  # The labels of records get the same treatment.
  records = [{"task": "arithmetic", "question": ex["question"], "steps": labels.split_steps(t),
              "labels": {"0.0": v}} for t, v in ((good, [0.7, 0.6, 1.0]), (bad, [0.1, 0.0, 0.0]))]
  assert prm_experiment.reference_label_auc(records, [ex], "0.0") == 1.0
  records[0]["labels"]["0.0"] = [0.0, 0.0, 1.0]
  assert prm_experiment.reference_label_auc(records, [ex], "0.0") == 0.25


def test_report_files(tmp_path):
  correct = _random_correct(p=6, n=4)
  answers = [[str(int(c)) for c in row] for row in correct]
  res = bon.accuracy_curves({"s": correct}, correct, answers, draws=4, seed=0)
  paths = bon.write_report(res, str(tmp_path), ["s", bon.MAJORITY, bon.ORACLE])
  assert all(os.path.getsize(p) > 0 for p in paths.values())
  table = open(paths["md"]).read()
  assert "| N | s | majority vote | oracle (pass@N) |" in table
  assert json.load(open(paths["json"]))["budgets"] == [1, 2, 4]


# ------------------------------------------------------------------------------------------------
# The command line, end to end (slow: several compiles of sampler, PRM forward and update).


@pytest.mark.slow
def test_erprm_and_best_of_n_commands(tmp_path, capsys):
  from prl_jax import cli
  from prl_jax.models import hf
  policy = str(tmp_path / "policy")
  hf.save_hf(policy, CFG, init_params(CFG, jax.random.key(0)))
  TOK.save(policy)
  config = os.path.join(os.path.dirname(__file__), "..", "configs", "mini", "sft.py")
  common = ["--config", config, f"--config.init_from={policy}", "--config.mesh.num_devices=1",
            "--config.rollout.max_new_tokens=16", "--config.task.num_train=64",
            "--config.log.tensorboard=false", "--config.log.progress=true",
            "--config.algo.erprm.num_completions=2"]
  work = str(tmp_path / "run")
  assert cli.main(["erprm", *common, "--workdir", work, "--label-problems", "4",
                   "--solutions-per-problem", "2", "--prm-steps", "2", "--prm-batch-size", "4",
                   "--eval-problems", "4", "--n-max", "4", "--draws", "3"]) == 0
  out = os.path.join(work, "erprm")
  for name in ("labels.jsonl", "best_of_n.json", "best_of_n.md", "best_of_n.png"):
    assert os.path.exists(os.path.join(out, name))
  assert len(_read_jsonl(os.path.join(out, "labels.jsonl"))) == 8
  # The final line of each bar: labelling, PRM training, best-of-N (this random policy's
  # solutions are single steps, so there are no step prefixes to complete).
  bars = capsys.readouterr().err
  for final in ("labels: solutions: 100%", "prm: ER-PRM (eta=2): 100%", "prm: ORM (outcome): 100%",
                "best-of-N: candidates: 100%", "scoring: ER-PRM (eta=2): 100%"):
    assert final in bars, bars
  res = json.load(open(os.path.join(out, "best_of_n.json")))
  assert res["budgets"] == [1, 2, 4] and "ER-PRM (eta=2) [min]" in res["methods"]
  again = str(tmp_path / "again")
  assert cli.main(["best-of-n", *common, "--workdir", again, "--prm",
                   os.path.join(out, "prm_eta2"), "--prm", os.path.join(out, "orm"),
                   "--eval-problems", "4", "--n-max", "4", "--draws", "3"]) == 0
  res2 = json.load(open(os.path.join(again, "best_of_n.json")))
  # Same policy, problems, seed: the same candidates and the same curves for the same PRM.
  assert res2["methods"]["ER-PRM (eta=2) [min]"] == res["methods"]["ER-PRM (eta=2) [min]"]
