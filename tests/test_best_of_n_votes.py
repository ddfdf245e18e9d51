"""Best-of-N beyond picking one candidate: the PRM-weighted vote, PRM seeds as one method, paired
bootstrap comparisons, the first-error AUROC of step scores, and the problems best-of-N runs on.

References are written independently here: the weighted vote by a dictionary loop over each
subset, the bootstrap's limits (identical methods, a constant difference), the AUROC by counting
pairs by hand.
"""

import types

import numpy as np
import pytest

from configs.lab import budget
from configs.lab import erprm as lab_erprm
from prl_jax.config import ConfigError
from prl_jax.data import register
from prl_jax.eval import best_of_n as bon
from prl_jax.eval import prm_experiment
from prl_jax.eval.step_auc import first_error_auc
from prl_jax.models.tokenizer import CharTokenizer
from prl_jax.run import context


def _weighted_vote_reference(scores, answers, correct, subsets):
  """The weighted vote written as a loop: totals per answer, ties to the answer first among all
  candidates, correct iff the winner's first candidate in the subset is correct."""
  d, p, _ = subsets.shape
  hits = np.zeros((d, p))
  for i in range(d):
    for j in range(p):
      order_of_appearance = []
      for a in answers[j]:
        if a is not None and a not in order_of_appearance:
          order_of_appearance.append(a)
      totals = {}
      for c in subsets[i, j]:
        if answers[j][c] is not None:
          totals[answers[j][c]] = totals.get(answers[j][c], 0.0) + scores[j, c]
      if not totals:
        continue
      best = max(totals.values())
      winner = next(a for a in order_of_appearance if totals.get(a) == best)
      first = next(c for c in subsets[i, j] if answers[j][c] == winner)
      hits[i, j] = correct[j, first]
  return hits.mean(axis=0)


def test_weighted_vote_equals_a_loop_reference():
  rng = np.random.default_rng(0)
  p, n_max = 30, 12
  answers = [[None if rng.random() < 0.15 else str(rng.integers(0, 4)) for _ in range(n_max)]
             for _ in range(p)]
  correct = np.array([[float(a == "0") for a in row] for row in answers])
  scores = rng.random((p, n_max))
  scores[0, :] = 0.5  # exact ties: the answer first among the candidates wins
  ids = bon.answer_ids(answers)
  for n in (1, 3, 12):
    subsets = bon.subset_indices(p, n_max, n, draws=7, seed=n)
    np.testing.assert_allclose(bon.weighted_vote_accuracy(scores, ids, correct, subsets),
                               _weighted_vote_reference(scores, answers, correct, subsets))


def test_weighted_vote_limits():
  # Equal scores: the weighted vote is a vote by count; one heavy wrong candidate outweighs it.
  answers = [["a", "b", "b", "c"]]
  correct = np.array([[0.0, 1.0, 1.0, 0.0]])
  ids = bon.answer_ids(answers)
  np.testing.assert_array_equal(ids, [[0, 1, 1, 2]])
  full = np.arange(4)[None, None, :]
  assert bon.weighted_vote_accuracy(np.ones((1, 4)), ids, correct, full)[0] == 1.0
  assert bon.weighted_vote_accuracy(np.array([[0.1, 0.2, 0.2, 0.9]]), ids, correct, full)[0] == 0.0
  # No answer anywhere in the subset: wrong.
  assert bon.weighted_vote_accuracy(np.ones((1, 2)), bon.answer_ids([[None, None]]),
                                    np.ones((1, 2)), np.arange(2)[None, None, :])[0] == 0.0
  with pytest.raises(ValueError, match=">= 0"):
    bon.weighted_vote_accuracy(-np.ones((1, 4)), ids, correct, full)


def test_paired_bootstrap_limits():
  same = bon.paired_bootstrap(np.zeros(50), resamples=500, seed=0)
  assert same["diff"] == same["lo"] == same["hi"] == 0.0 and same["p"] == 1.0
  better = bon.paired_bootstrap(np.full(50, 0.25), resamples=500, seed=0)
  assert better["lo"] == better["hi"] == pytest.approx(0.25)
  assert better["p"] == pytest.approx(2 / 501)  # the smallest p 500 resamples can show
  rng = np.random.default_rng(1)
  noise = rng.normal(0.0, 1.0, 400)
  a = bon.paired_bootstrap(noise, resamples=2000, seed=3)
  b = bon.paired_bootstrap(-noise, resamples=2000, seed=3)
  assert a["diff"] == pytest.approx(-b["diff"]) and a["lo"] == pytest.approx(-b["hi"])
  assert a["lo"] < a["diff"] < a["hi"]
  # A clear shift on the same noise is detected, a zero-mean one is not.
  assert bon.paired_bootstrap(noise + 0.5, resamples=2000, seed=3)["p"] < 0.01
  assert bon.paired_bootstrap(noise - noise.mean(), resamples=2000, seed=3)["p"] > 0.5


def test_groups_average_their_members_and_comparisons_are_paired():
  rng = np.random.default_rng(2)
  p, n_max = 40, 8
  correct = (rng.random((p, n_max)) < 0.3).astype(float)
  answers = [[str(int(c)) for c in row] for row in correct]
  scores = {"s0": rng.random((p, n_max)), "s1": rng.random((p, n_max)), "good": correct + 0.01}
  res = bon.accuracy_curves(scores, correct, answers, draws=5, seed=0, weighted=["good"],
                            groups={"g": ["s0", "s1"]},
                            comparisons=[("good", bon.MAJORITY), ("g", "g")], resamples=300)
  m = res["methods"]
  for i in range(len(res["budgets"])):
    assert m["g"]["accuracy"][i] == pytest.approx(
        (m["s0"]["accuracy"][i] + m["s1"]["accuracy"][i]) / 2)
    assert m["g"]["seed_std"][i] == pytest.approx(
        np.std([m["s0"]["accuracy"][i], m["s1"]["accuracy"][i]], ddof=1))
  # A scorer that knows the answers picks right whenever the subset has a right candidate.
  assert m["good"]["accuracy"] == pytest.approx(m[bon.ORACLE]["accuracy"])
  assert m[bon.weighted_name("good")]["accuracy"][-1] > 0
  assert res["paired"]["g - g"]["p"] == [1.0] * len(res["budgets"])
  assert res["paired"]["good - majority vote"]["diff"] == pytest.approx(
      res["vs_majority"]["good"]["diff"])


def test_seed_groups_name_members_and_comparisons():
  by_dir = {"er": ("ER [min]", "prm", "2.0"), "er1": ("ER seed 1 [min]", "prm", "2.0"),
            "hard": ("hard [min]", "prm", "inf"), "hard1": ("hard seed 1 [min]", "prm", "inf"),
            "orm": ("ORM", "orm", ""), "orm1": ("ORM seed 1", "orm", "")}
  groups, comparisons = prm_experiment._seed_groups(
      {"ER": ["er", "er1"], "hard": ["hard", "hard1"], "ORM": ["orm", "orm1"]}, by_dir, "min")
  assert groups["ER [min], 2 seeds"] == ["ER [min]", "ER seed 1 [min]"]
  assert groups["ORM, 2 seeds weighted vote"] == ["ORM weighted vote", "ORM seed 1 weighted vote"]
  assert ("ER [min], 2 seeds", "ORM, 2 seeds") in comparisons
  assert ("ER [min], 2 seeds", "hard [min], 2 seeds") in comparisons
  assert ("ORM, 2 seeds weighted vote", bon.MAJORITY) in comparisons
  assert len(comparisons) == 6 + 2 + 1


def test_first_error_auc_counts_pairs():
  ex = register.generate(1, 4, seed=0)[0]
  right = register.solve(ex["question"])
  lines = right.splitlines(keepends=True)
  value = int(lines[1].rstrip("\n").split("=")[1])
  wrong = lines[0] + lines[1].replace(f"={value}", f"={(value + 1) % 10}") + "".join(lines[2:])
  assert register.first_error(wrong, ex) == 1
  # Positives: the 4 lines of `right` and line 0 of `wrong`; the negative: line 1 of `wrong`.
  auc = first_error_auc([[0.9, 0.8, 0.7, 0.6], [0.9, 0.1, 0.0, 0.0]], [right, wrong], [ex, ex])
  assert auc == 1.0
  # The negative above 2 of the 5 positives, tied with one: (2 + 0.5) / 5 wrong orders.
  auc = first_error_auc([[0.9, 0.8, 0.5, 0.2], [0.3, 0.5, 0.0, 0.0]], [right, wrong], [ex, ex])
  assert auc == pytest.approx(1 - 2.5 / 5)
  # Lines after the first wrong one do not count; no wrong line at all: None.
  assert first_error_auc([[0.9, 0.1, 5.0, 5.0]], [wrong], [ex]) == 1.0
  assert first_error_auc([[0.9] * 4], [right], [ex]) is None
  assert first_error_auc([[0.9]], ["x"], [{"task": "countdown"}]) is None


def test_reference_step_auc_uses_the_step_checker_on_register_chains():
  ex = register.generate(1, 4, seed=0)[0]
  right = register.solve(ex["question"])
  first, rest = right.split("\n", 1)
  op, value = first.split("=")
  wrong = f"{op}={(int(value) + 1) % 10}\n{rest}"
  cands = prm_experiment.Candidates([ex], [[right, wrong]], np.ones((1, 2), bool),
                                    np.array([[1.0, 0.0]]), [[None, None]])
  steps_right = [0.9] * len(right.splitlines())
  spec = lambda **kw: types.SimpleNamespace(kind="prm", min_step_chars=0, delimiter="\n", **kw)
  assert prm_experiment.reference_step_auc(cands, [steps_right, [0.1, 0.9, 0.9, 0.9]],
                                           spec()) == 1.0
  merged = types.SimpleNamespace(kind="prm", min_step_chars=30, delimiter="\n")
  assert prm_experiment.reference_step_auc(cands, [steps_right, [0.1]], merged) is None


def _lab_context(config):
  tok = CharTokenizer()
  return types.SimpleNamespace(config=config, tokenizer=tok, eval_examples=[])


def test_best_of_n_problems_follow_the_configured_task():
  # The lab puts exactly 3 bug operations in every chain; the task's default draws 1-4. Best-of-N
  # problems must come from the lab's distribution, not the default one.
  config = budget.get_config()
  problems = prm_experiment.heldout_problems(_lab_context(config), 200, exclude=set())
  assert len(problems) == 200
  assert {ex["bug_ops"] for ex in problems} == {3}


def test_answers_for_majority_vote_are_the_tasks_own():
  ex = register.generate(1, 4, seed=0)[0]
  right = register.solve(ex["question"])
  answers = prm_experiment.candidate_answers([ex], [[right, right + "junk"]])
  assert answers == [[register.final_answer(right), register.final_answer(right + "junk")]]
  assert answers[0][0] is not None


def test_the_prm_experiment_does_not_need_the_prm_it_writes():
  config = lab_erprm.get_config()
  assert config.algo.erprm.prm_dir  # the RL arm's PRM, written by `prl-jax erprm`
  config.init_from = ""
  config.algo.erprm.prm_dir = "/nonexistent/prm_eta2"
  with pytest.raises(ConfigError, match="algo.erprm.prm_dir"):
    context.validate(config)
  context.validate(config, reads_prm=False)


def test_seed_groups_of_directories_written_with_prm_seeds(tmp_path):
  from prl_jax.prm import model as prm_model
  dirs = []
  for name, label in (("prm_hard", "inf"), ("prm_hard_seed1", "inf"), ("orm", "")):
    d = tmp_path / name
    d.mkdir()
    spec = prm_model.PrmSpec("hard PRM" if label else "ORM", "orm" if not label else "prm", label)
    spec.save(str(d))
    dirs.append(str(d))
  groups = prm_experiment.seed_groups_of(dirs)
  assert groups == {"hard PRM": dirs[:2], "ORM": dirs[2:]}
  assert prm_experiment.seed_groups_of([dirs[0], dirs[2]]) is None


def test_roc_auc_equals_counting_every_pair():
  # The rank form against the definition: P(pos > neg) + 1/2 P(pos = neg), by every pair.
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(1, 40))
    scores = rng.integers(0, 5, n).astype(float)  # many ties
    correct = rng.random(n) < 0.5
    pos, neg = scores[correct], scores[~correct]
    got = bon.roc_auc(scores, correct)
    if pos.size == 0 or neg.size == 0:
      assert got is None
      continue
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert got == pytest.approx(pairs / (pos.size * neg.size), abs=1e-12)
