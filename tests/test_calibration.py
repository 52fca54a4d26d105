"""Calibration metrics and plots against hand-computed values and brute force."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.eval import calibration as cal
from rewardlab.eval import plots
from rewardlab.search import curves

PROBS = [0.1, 0.2, 0.6, 0.9]
LABELS = [0, 1, 1, 1]


def test_ece_four_points_by_hand():
    # 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1]:
    # bin 0 {0.1, 0.2}: conf .15, acc .5 -> 2/4 * .35; bin 2 {0.6}: 1/4 * .4; bin 3 {0.9}: 1/4 * .1.
    assert cal.expected_calibration_error(PROBS, LABELS, n_bins=4) == pytest.approx(0.3)
    # 15 bins: every point alone -> (0.1 + 0.8 + 0.4 + 0.1) / 4.
    assert cal.expected_calibration_error(PROBS, LABELS) == pytest.approx(0.35)


def test_reliability_bins_and_edges():
    bins = cal.reliability_bins([0.0, 0.25, 0.5, 0.74, 1.0, 1.0], [0, 1, 1, 0, 1, 0], n_bins=4)
    np.testing.assert_allclose(bins.edges, [0, 0.25, 0.5, 0.75, 1.0])
    # An edge value opens the bin on its right; 1.0 falls in the last (closed) bin.
    np.testing.assert_array_equal(bins.count, [1, 1, 2, 2])
    np.testing.assert_allclose(bins.confidence, [0.0, 0.25, 0.62, 1.0])
    np.testing.assert_allclose(bins.accuracy, [0.0, 1.0, 0.5, 0.5])
    empty = cal.reliability_bins([0.1], [1], n_bins=2)
    assert empty.count.tolist() == [1, 0] and math.isnan(empty.accuracy[1])


def test_brier_by_hand():
    assert cal.brier_score(PROBS, LABELS) == pytest.approx((0.01 + 0.64 + 0.16 + 0.01) / 4)


def test_auroc_with_ties_by_hand():
    # Positive 0.4 vs negatives {0.1, 0.4}: 1 + 0.5; positive 0.8: 1 + 1 -> 3.5 / 4.
    assert cal.auroc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert cal.auroc([3.0, -1.0], [True, False]) == 1.0  # any real scores
    assert cal.auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5


def test_auroc_single_class_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="single class"):
        assert math.isnan(cal.auroc([0.2, 0.7], [1, 1]))


def _pairwise_auroc(s, y):
    pos = [a for a, t in zip(s, y) if t]
    neg = [a for a, t in zip(s, y) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


# Coarse values make ties frequent.
_points = st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), st.booleans()),
                   min_size=2, max_size=30)


@settings(max_examples=100, deadline=None)
@given(_points)
def test_auroc_properties(points):
    s, y = map(list, zip(*points))
    if all(y) or not any(y):
        return
    a = cal.auroc(s, y)
    assert a == pytest.approx(_pairwise_auroc(s, y))
    assert a + cal.auroc(s, [not t for t in y]) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(_points, st.integers(1, 20))
def test_ece_in_unit_interval_and_counts(points, n_bins):
    s, y = map(list, zip(*points))
    ece = cal.expected_calibration_error(s, y, n_bins)
    assert 0.0 <= ece <= 1.0
    bins = cal.reliability_bins(s, y, n_bins)
    assert bins.count.sum() == len(s)
    # ECE over one bin is |mean(p) - mean(y)|.
    assert cal.expected_calibration_error(s, y, 1) == pytest.approx(abs(np.mean(s) - np.mean(y)))


def test_calibration_report():
    rep = cal.calibration_report(PROBS, LABELS, n_bins=4)
    assert rep["ece"] == pytest.approx(0.3)
    assert rep["brier"] == pytest.approx(0.205)
    assert rep["auroc"] == 1.0
    assert (rep["n"], rep["positive_rate"], rep["mean_prob"]) == (4, 0.75, pytest.approx(0.45))
    assert rep["bins"]["count"] == [2, 0, 1, 1]
    one_class = cal.calibration_report([0.3, 0.8], [1, 1])
    assert math.isnan(one_class["auroc"])


@pytest.mark.parametrize("probs, labels, match", [
    ([0.5, 1.2], [0, 1], r"probs\[1\] = 1.2 is outside"),
    ([0.5, float("nan")], [0, 1], r"probs\[1\] is NaN"),
    ([0.5, 0.4], [0, 2], r"labels\[1\] = 2.0 is not 0/1"),
    ([0.5, 0.4], [0], "labels shape"),
    ([], [], "non-empty"),
])
def test_bad_inputs(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        cal.expected_calibration_error(probs, labels)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path):
    bins = cal.reliability_bins(PROBS, LABELS, n_bins=4)
    path = plots.plot_reliability(bins, tmp_path / "sub" / "rel.png", "PRM")
    assert _is_png(path) and (tmp_path / "sub" / "rel.png").stat().st_size > 1000
    # The dict form from calibration_report plots too.
    assert _is_png(plots.plot_reliability(cal.calibration_report(PROBS, LABELS)["bins"],
                                          tmp_path / "rel2.png"))
    correct = np.array([[1, 0, 0, 0], [0, 1, 1, 1]], bool)
    answers = [["1", "2", "2", "3"], ["5", "7", "7", "7"]]
    maj = curves.accuracy_vs_n(answers, correct, method="majority")
    oracle = curves.pass_at_k_curve(correct)
    out = plots.plot_curves({"majority": maj, "pass@k": oracle}, tmp_path / "curves.png",
                            title="accuracy vs N")
    assert _is_png(out) and (tmp_path / "curves.png").stat().st_size > 1000
    as_dicts = [{"x": [1, 2], "mean": [0.2, 0.4], "ci_low": [0.1, 0.3], "ci_high": [0.3, 0.5],
                 "label": "from dict"}]
    assert _is_png(plots.plot_curves(as_dicts, tmp_path / "d.png", logx=False))
    with pytest.raises(ValueError, match="at least one curve"):
        plots.plot_curves({}, tmp_path / "none.png")
