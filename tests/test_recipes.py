"""RAFT and ER-PRM selection against a plain-Python reference: the best of each group, ties first."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prl_jax.algorithms.recipes import RLInputs
from prl_jax.algorithms.registry import get_recipe


def _inputs(outcome, prm_score, group_size, length=3):
  b = len(outcome)
  mask = np.ones((b, length), np.float32)
  mask[:, -1] = 0.0  # a padded last position must stay at advantage 0
  zeros = jnp.zeros((b, length))
  return RLInputs(outcome=jnp.asarray(outcome, jnp.float32), mask=jnp.asarray(mask),
                  old_logp=zeros, ref_logp=zeros, prm_token=zeros, values=zeros,
                  step_end=jnp.zeros((b, length), bool), group_size=group_size,
                  prm_score=None if prm_score is None else jnp.asarray(prm_score, jnp.float32))


def _options(keep):
  return ml_collections.FrozenConfigDict({"raft": {"keep_per_prompt": keep}})


def _reference_keep(scores, group_size, keep):
  """Sort each group by score, highest first, the earlier index first among equals."""
  out = np.zeros(len(scores), bool)
  for start in range(0, len(scores), group_size):
    order = sorted(range(start, start + group_size), key=lambda i: (-scores[i], i))
    out[order[:keep]] = True
  return out


groups = st.integers(1, 4).flatmap(lambda p: st.integers(2, 5).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(1, n),
    st.lists(st.sampled_from([0.0, 1.0]), min_size=p * n, max_size=p * n),
    # A few distinct values so that ties are common.
    st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9]), min_size=p * n, max_size=p * n))))


@settings(max_examples=60, deadline=None)
@given(groups)
def test_erprm_keeps_the_best_by_prm_score_whatever_the_outcome(case):
  n, keep, outcome, score = case
  out = get_recipe("erprm").advantages(_options(keep), _inputs(outcome, score, n))
  adv, metrics = out.token, out.metrics
  want = _reference_keep(score, n, keep)
  np.testing.assert_array_equal(np.asarray(adv)[:, 0] == 1.0, want)
  assert np.all(np.asarray(adv)[:, -1] == 0.0)
  assert float(metrics["raft/kept_fraction"]) == pytest.approx(keep / n)
  assert float(metrics["erprm/kept_accuracy"]) == pytest.approx(np.mean(np.asarray(outcome)[want]))


@settings(max_examples=60, deadline=None)
@given(groups)
def test_raft_keeps_the_best_correct_by_outcome(case):
  n, keep, outcome, _ = case
  adv = get_recipe("raft").advantages(_options(keep), _inputs(outcome, None, n)).token
  want = _reference_keep(outcome, n, keep) & (np.asarray(outcome) > 0)
  np.testing.assert_array_equal(np.asarray(adv)[:, 0] == 1.0, want)


def test_erprm_without_scores_says_what_is_missing():
  with pytest.raises(ValueError, match="prm_score"):
    get_recipe("erprm").advantages(_options(1), _inputs([1.0, 0.0], None, 2))


def test_erprm_never_picks_a_response_without_steps_and_logs_a_finite_score():
  # A response with no step scores -inf (the official RAFT gives it 0, below every PRM score).
  out = get_recipe("erprm").advantages(
      _options(1), _inputs([0.0, 1.0, 0.0, 0.0], [-np.inf, 0.2, 0.9, 0.1], 2))
  np.testing.assert_array_equal(np.asarray(out.token)[:, 0], [0.0, 1.0, 1.0, 0.0])
  assert float(out.metrics["erprm/score_mean"]) == pytest.approx(0.4)  # over the 3 scored
