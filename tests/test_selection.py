"""Selection, voting, step aggregation and accuracy-vs-N curves against hand values."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.search import curves
from rewardlab.search import selection as sel

# ---------------------------------------------------------------- aggregation


@pytest.mark.parametrize("how, expected", [
    ("last", 0.8), ("min", 0.5), ("prod", 0.9 * 0.5 * 0.8), ("mean", 2.2 / 3)])
def test_aggregate_one_solution(how, expected):
    assert sel.aggregate_step_scores([0.9, 0.5, 0.8], how) == pytest.approx(expected)


def test_aggregate_ragged_and_padded_with_mask():
    ragged = [[0.9, 0.5, 0.8], [0.4]]
    padded = np.array([[0.9, 0.5, 0.8], [0.4, 7.0, 7.0]])
    mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
    expected = {"last": [0.8, 0.4], "min": [0.5, 0.4], "prod": [0.36, 0.4], "mean": [2.2 / 3, 0.4]}
    for how, want in expected.items():
        np.testing.assert_allclose(sel.aggregate_step_scores(ragged, how), want)
        np.testing.assert_allclose(sel.aggregate_step_scores(padded, how, mask), want)
    # A non-prefix mask: "last" is the highest valid index.
    assert sel.aggregate_step_scores(np.array([[0.1, 0.2, 0.3]]), "last",
                                     np.array([[1, 0, 1]], bool))[0] == 0.3
    assert sel.aggregate_step_scores(np.array([[0.1, 0.2, 0.3]]), "last",
                                     np.array([[1, 1, 0]], bool))[0] == 0.2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=5), min_size=1, max_size=4),
       st.sampled_from(["last", "min", "prod", "mean"]))
def test_aggregate_masked_equals_sliced(rows, how):
    width = max(map(len, rows)) + 1
    padded = np.full((len(rows), width), 5.0)
    mask = np.zeros_like(padded, bool)
    for i, r in enumerate(rows):
        padded[i, :len(r)], mask[i, :len(r)] = r, True
    sliced = [sel.aggregate_step_scores(r, how) for r in rows]
    np.testing.assert_allclose(sel.aggregate_step_scores(padded, how, mask), sliced)


def test_aggregate_errors_and_registry():
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        sel.aggregate_step_scores([0.5], "median")
    with pytest.raises(ValueError, match="solution 1 has no valid steps"):
        sel.aggregate_step_scores([[0.5], []], "min")
    with pytest.raises(ValueError, match="mask shape"):
        sel.aggregate_step_scores(np.ones((2, 3)), "min", np.ones((2, 2), bool))
    sel.register_aggregator("max")(lambda s, m: np.max(np.where(m, s, -np.inf), axis=1))
    try:
        assert sel.aggregate_step_scores([0.2, 0.7, 0.1], "max") == 0.7
    finally:
        del sel.STEP_AGGREGATORS["max"]

# ---------------------------------------------------------------- selectors


@pytest.mark.parametrize("answers, expected", [
    (["a", "b", "b", "a", "c"], (0, "a", 2.0)),  # 2-2 tie: "a" seen first
    (["b", "a", "a", "b"], (0, "b", 2.0)),
    (["x", "y", "y"], (1, "y", 2.0)),  # index of the first sample with the winner
    ([None, None, "x"], (2, "x", 1.0)),  # None never wins
    ([None, None, None, "3", "4", "4"], (4, "4", 2.0)),
    ([None, None], (0, None, 2.0)),  # unless all are None
])
def test_majority_vote(answers, expected):
    assert sel.majority_vote(answers) == sel.Selection(*expected)


def test_best_of_n():
    assert sel.best_of_n([0.1, 0.9, 0.9]) == sel.Selection(1, None, 0.9)  # first on ties
    assert sel.best_of_n([0.1, 0.9], ["p", "q"]) == sel.Selection(1, "q", 0.9)
    with pytest.raises(ValueError, match="score of sample 1 is NaN"):
        sel.best_of_n([0.1, float("nan")])
    with pytest.raises(ValueError, match="got 3 answers but 2 scores"):
        sel.best_of_n([0.1, 0.2], ["a", "b", "c"])


def test_weighted_best_of_n_differs_from_best_single_sample():
    answers, scores = ["a", "b", "b", "c"], [0.9, 0.5, 0.5, 0.2]
    assert sel.best_of_n(scores, answers).answer == "a"
    # W(a) = 0.9, W(b) = 1.0, W(c) = 0.2.
    assert sel.weighted_best_of_n(answers, scores) == sel.Selection(1, "b", 1.0)


def test_weighted_best_of_n_ties_none_and_errors():
    # W(b) = W(a) = 0.75 -> "b" seen first; index = best-scoring "b" sample.
    assert sel.weighted_best_of_n(["b", "a", "b"], [0.25, 0.75, 0.5]) == sel.Selection(2, "b", 0.75)
    assert sel.weighted_best_of_n([None, "a"], [0.9, 0.1]) == sel.Selection(1, "a", 0.1)
    assert sel.weighted_best_of_n([None, None], [0.9, 0.1]) == sel.Selection(0, None, 0.0)
    with pytest.raises(ValueError, match="sample 1 has -0.5"):
        sel.weighted_best_of_n(["a", "b"], [0.5, -0.5])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=12))
def test_weighted_with_equal_scores_is_majority(answers):
    w = sel.weighted_best_of_n(answers, [1.0] * len(answers))
    m = sel.majority_vote(answers)
    assert (w.index, w.answer) == (m.index, m.answer)


def test_select_batch_and_registry():
    answers = [["a", "b", "b"], ["c", "c", "d"]]
    scores = np.array([[0.9, 0.1, 0.1], [0.2, 0.3, 0.8]])
    assert [s.answer for s in sel.select_batch("majority", answers)] == ["b", "c"]
    assert [s.index for s in sel.select_batch("best_of_n", answers, scores)] == [0, 2]
    assert [s.answer for s in sel.select_batch("weighted_best_of_n", answers, scores)] == ["a", "d"]
    with pytest.raises(ValueError, match="unknown selection method"):
        sel.select("vote", ["a"])
    with pytest.raises(ValueError, match="needs scores"):
        sel.select("best_of_n", ["a"])
    with pytest.raises(ValueError, match="2 problems of answers but 1"):
        sel.select_batch("best_of_n", answers, scores[:1])

# ---------------------------------------------------------------- curves


def test_default_ns():
    assert curves.default_ns(8) == (1, 2, 4, 8)
    assert curves.default_ns(6) == (1, 2, 4, 6)
    assert curves.default_ns(1) == (1,)


def _brute_pass_at_k(n, c, k):
    pool = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(pool, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_brute_force():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert curves.pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_large_and_vectorized():
    exact = 1 - math.comb(150, 100) / math.comb(200, 100)
    assert curves.pass_at_k(200, 50, 100) == pytest.approx(exact, rel=1e-12)
    np.testing.assert_allclose(curves.pass_at_k(np.array([4, 4]), np.array([1, 3]), 2), [0.5, 1.0])
    with pytest.raises(ValueError, match="0 <= c <= n"):
        curves.pass_at_k(3, 4, 1)


def test_wilson_interval_by_hand():
    # z = 1.959964, z^2 = 3.841459, denominator 1 + z^2/10 = 1.384146.
    # 5/10: center 0.5, half = z * sqrt(0.025 + z^2/400) / 1.384146 = 0.263407.
    # 0/10: center = half = (z^2/20) / 1.384146 = 0.1387664.
    assert curves.wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert curves.wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    low, high = curves.wilson_interval(np.array([5, 0]), np.array([10, 10]))
    np.testing.assert_allclose(low, [0.236593, 0.0], atol=1e-6)


def test_mean_confidence_interval_by_hand():
    # mean 0.75, sd 0.5, se 0.25, half-width 1.959964 * 0.25 = 0.489991; upper clipped to 1.
    mean, low, high, se = curves.mean_confidence_interval([1, 0, 1, 1])
    assert (mean, se, high) == (0.75, 0.25, 1.0)
    assert low == pytest.approx(0.75 - 0.489991, abs=1e-6)


# Problem 0: correct answer "1" only at sample 0. Problem 1: "7" correct, "5" wrong.
ANSWERS = [["1", "2", "2", "3"], ["5", "7", "7", "7"]]
CORRECT = np.array([[1, 0, 0, 0], [0, 1, 1, 1]], bool)
SCORES = np.array([[0.2, 0.3, 0.3, 0.9], [0.9, 0.25, 0.25, 0.5]])
TOKENS = np.array([[10, 20, 30, 40], [1, 2, 3, 4]])


@pytest.mark.parametrize("method, expected, per_problem", [
    # n=1: sample 0; n=2: majority tie -> first; n=4: "2" vs "7" win the vote.
    ("majority", [0.5, 0.5, 0.5], [[1, 0], [1, 0], [0, 1]]),
    # n=2: 0.3 beats 0.2 (wrong); P1 always picks the 0.9 wrong sample.
    ("best_of_n", [0.5, 0.0, 0.0], [[1, 0], [0, 0], [0, 0]]),
    # n=4: P0 W("3") = 0.9 wins; P1 W("7") = 1.0 beats W("5") = 0.9.
    ("weighted_best_of_n", [0.5, 0.0, 0.5], [[1, 0], [0, 0], [0, 1]]),
])
def test_accuracy_vs_n_first_n(method, expected, per_problem):
    c = curves.accuracy_vs_n(ANSWERS, CORRECT, SCORES, method=method, tokens=TOKENS)
    np.testing.assert_array_equal(c.x, [1, 2, 4])
    np.testing.assert_allclose(c.mean, expected)
    np.testing.assert_array_equal(c.per_problem, per_problem)
    np.testing.assert_allclose(c.tokens, [5.5, 16.5, 55.0])
    np.testing.assert_allclose(c.against_tokens().x, [5.5, 16.5, 55.0])
    assert np.all(c.ci_low <= c.mean) and np.all(c.mean <= c.ci_high)


def test_accuracy_vs_n_ci_values():
    c = curves.accuracy_vs_n(ANSWERS, CORRECT, SCORES, method="best_of_n", ns=[1])
    # per-problem [1, 0]: se = 0.5, half-width 0.98 -> clipped to [0, 1].
    assert (c.stderr[0], c.ci_low[0], c.ci_high[0]) == (0.5, 0.0, 1.0)


def test_accuracy_vs_n_resampled():
    first = curves.accuracy_vs_n(ANSWERS, CORRECT, SCORES, method="weighted_best_of_n", ns=[4])
    res = curves.accuracy_vs_n(ANSWERS, CORRECT, SCORES, method="weighted_best_of_n", ns=[4],
                               num_resamples=3, rng=0)
    np.testing.assert_array_equal(res.per_problem, first.per_problem)  # n = N_max: same set
    one = curves.accuracy_vs_n(ANSWERS, CORRECT, method="majority", ns=[1], num_resamples=4000, rng=1)
    np.testing.assert_allclose(one.per_problem[0], [0.25, 0.75], atol=0.03)  # fraction correct
    again = curves.accuracy_vs_n(ANSWERS, CORRECT, method="majority", ns=[1], num_resamples=4000, rng=1)
    np.testing.assert_array_equal(one.per_problem, again.per_problem)


def test_pass_at_k_curve():
    c = curves.pass_at_k_curve(CORRECT)
    # P0 (c=1 of 4): 1/4, 1 - C(3,2)/C(4,2) = 1/2, 1; P1 (c=3): 3/4, 1, 1.
    np.testing.assert_allclose(c.per_problem, [[0.25, 0.75], [0.5, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(c.mean, [0.5, 0.75, 1.0])


def test_curve_errors():
    with pytest.raises(ValueError, match=r"every n must be in \[1, 4\]"):
        curves.accuracy_vs_n(ANSWERS, CORRECT, ns=[8])
    with pytest.raises(ValueError, match="scores must be"):
        curves.accuracy_vs_n(ANSWERS, CORRECT, SCORES[:, :2], method="best_of_n")
    with pytest.raises(ValueError, match="answers must be"):
        curves.accuracy_vs_n([["1"]], CORRECT)
    with pytest.raises(ValueError, match="without token counts"):
        curves.accuracy_vs_n(ANSWERS, CORRECT).against_tokens()
