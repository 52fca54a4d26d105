"""ProcessBench first-error predictions, accuracies and F1 against hand-computed values."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.eval import processbench as pb


@pytest.mark.parametrize("probs, threshold, expected", [
    ([0.9, 0.6, 0.4, 0.2], 0.5, 2),
    ([0.9, 0.5, 0.5], 0.5, -1),  # p = threshold is not an error (strict <)
    ([0.1], 0.5, 0),
    ([], 0.5, -1),
    ([0.9, 0.6, 0.4], 0.7, 1),
])
def test_first_error_prediction(probs, threshold, expected):
    assert pb.first_error_prediction(probs, threshold) == expected


def test_first_error_predictions_padded_equals_ragged():
    ragged = [[0.9, 0.1], [0.8, 0.9], [0.2]]
    padded = np.array([[0.9, 0.1, 0.0], [0.8, 0.9, 0.0], [0.2, 0.0, 0.0]])
    mask = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0]], bool)
    np.testing.assert_array_equal(pb.first_error_predictions(ragged), [1, -1, 0])
    np.testing.assert_array_equal(pb.first_error_predictions(padded, mask=mask), [1, -1, 0])
    # Without the mask the zero padding of row 1 reads as an error at step 2.
    np.testing.assert_array_equal(pb.first_error_predictions(padded), [1, 2, 0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), max_size=6), min_size=1, max_size=5),
       st.floats(0.05, 0.95))
def test_batch_matches_single(rows, threshold):
    width = max(len(r) for r in rows)
    padded = np.full((len(rows), width), -7.0)  # garbage padding, below any threshold
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        padded[i, :len(r)], mask[i, :len(r)] = r, True
    expected = [pb.first_error_prediction(r, threshold) for r in rows]
    np.testing.assert_array_equal(pb.first_error_predictions(padded, threshold, mask), expected)


def test_scores_by_hand():
    labels = [2, 1, -1, -1, 0, -1]
    preds = [2, 3, -1, 1, 0, -1]
    splits = ["gsm8k", "gsm8k", "gsm8k", "gsm8k", "math", "math"]
    out = pb.processbench_scores(labels, preds, splits)
    g, m = out.splits["gsm8k"], out.splits["math"]
    # gsm8k: errors (2->2 hit, 1->3 miss) = 1/2; correct (-1 hit, 1 miss) = 1/2; F1 = 1/2.
    assert (g.acc_error, g.acc_correct, g.f1, g.num_error, g.num_correct) == (0.5, 0.5, 0.5, 2, 2)
    assert (m.acc_error, m.acc_correct, m.f1) == (1.0, 1.0, 1.0)
    assert out.average_f1 == pytest.approx(0.75)
    assert list(out.splits) == ["gsm8k", "math"]


def test_unequal_accuracies_and_single_split():
    # errors: 1/1 hit; correct: 1 of 2 -> F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    out = pb.processbench_scores([3, -1, -1], [3, -1, 0])
    assert list(out.splits) == ["all"]
    assert out.splits["all"].f1 == pytest.approx(2 / 3)
    assert out.average_f1 == pytest.approx(2 / 3)


def test_f1_edge_cases():
    assert pb.harmonic_f1(0.0, 0.0) == 0.0
    assert pb.harmonic_f1(0.0, 1.0) == 0.0
    out = pb.processbench_scores([1, 2], [1, 0])  # no all-correct solutions
    assert out.splits["all"].acc_error == 0.5
    assert math.isnan(out.splits["all"].acc_correct) and math.isnan(out.splits["all"].f1)


@pytest.mark.parametrize("labels, preds, splits, match", [
    ([0, -2], [0, 0], None, r"labels\[1\] = -2"),
    ([0, 1], [0], None, "differ in length"),
    ([0.0, 1.0], [0, 1], None, "labels must be a 1-D sequence of ints"),
    ([0, 1], [0, 1], ["a"], "splits has 1 entries for 2"),
    (np.zeros(0, int), np.zeros(0, int), None, "at least one"),
])
def test_bad_inputs(labels, preds, splits, match):
    with pytest.raises(ValueError, match=match):
        pb.processbench_scores(labels, preds, splits)
