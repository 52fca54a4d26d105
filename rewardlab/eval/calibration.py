"""Calibration and discrimination of reward-model probabilities against correctness.

`probs` are predicted probabilities that a solution (or step) is correct, `labels`
its 0/1 correctness. All metrics concern P(label = 1) itself, not a top-label
confidence max(p, 1 - p).

Binning (ECE and the reliability diagram): `n_bins` equal-width bins with edges
e_b = b / n_bins. Bin b holds e_b <= p < e_{b+1}; the last bin is closed on the
right so that p = 1 falls in it. Edges are compared as floats against
`np.linspace(0, 1, n_bins + 1)`, never via floor(p · n_bins), so a probability equal
to an edge always opens the bin to its right.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

__all__ = [
    "ReliabilityBins",
    "reliability_bins",
    "expected_calibration_error",
    "brier_score",
    "auroc",
    "calibration_report",
]


def _check(probs, labels, *, probabilities: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validated float probs [N] and 0/1 float labels [N]."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs must be a non-empty 1-D array, got shape {p.shape}")
    if y.shape != p.shape:
        raise ValueError(f"labels shape {y.shape} != probs shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError(f"probs[{int(np.flatnonzero(np.isnan(p))[0])}] is NaN")
    if probabilities and ((p < 0) | (p > 1)).any():
        i = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"probs[{i}] = {p[i]} is outside [0, 1]")
    y = y.astype(np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        i = int(np.flatnonzero(~np.isin(y, (0.0, 1.0)))[0])
        raise ValueError(f"labels[{i}] = {y[i]} is not 0/1")
    return p, y


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics `[n_bins]` (edges `[n_bins + 1]`); confidence and accuracy
    are NaN in empty bins."""

    edges: np.ndarray
    confidence: np.ndarray  # mean predicted probability in the bin
    accuracy: np.ndarray  # mean label in the bin
    count: np.ndarray  # int

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(self).items()}


def reliability_bins(probs, labels, n_bins: int = 15) -> ReliabilityBins:
    """Bin (probs, labels) into equal-width bins (edge rule in the module docstring)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], p, side="right")  # [N] in 0..n_bins-1
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=p, minlength=n_bins) / count
        acc = np.bincount(which, weights=y, minlength=n_bins) / count
    return ReliabilityBins(edges, conf, acc, count.astype(np.int64))


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) · |acc_b - conf_b| over non-empty equal-width bins."""
    bins = reliability_bins(probs, labels, n_bins)
    full = bins.count > 0
    gaps = np.abs(bins.accuracy[full] - bins.confidence[full])
    return float(np.sum(bins.count[full] * gaps) / np.sum(bins.count))


def brier_score(probs, labels) -> float:
    """Brier = mean_i (p_i - y_i)^2."""
    p, y = _check(probs, labels)
    return float(np.mean((p - y) ** 2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each tie run
    ends = np.r_[starts[1:], xs.size]
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(scores, labels) -> float:
    """Area under the ROC curve of `scores` (any reals) for 0/1 `labels`.

    Mann-Whitney form: AUROC = P(s_pos > s_neg) + 0.5·P(s_pos = s_neg)
      = (R_pos - n_pos(n_pos + 1)/2) / (n_pos · n_neg),
    with R_pos the sum of average ranks of the positives (ties get half credit).
    Undefined when only one class is present: returns NaN and warns
    (RuntimeWarning), so that a report over an all-correct split still completes.
    """
    s, y = _check(scores, labels, probabilities=False)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        warnings.warn("auroc is undefined with a single class in labels; returning NaN",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    r_pos = _average_ranks(s)[y == 1].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration_report(probs, labels, n_bins: int = 15) -> dict:
    """ECE, Brier, AUROC and the reliability bins of one set of predictions.

    Returns a JSON-friendly dict: `ece`, `brier`, `auroc` (NaN with one class),
    `n`, `positive_rate`, `mean_prob`, `n_bins`, `bins` (`ReliabilityBins.to_dict()`).
    """
    p, y = _check(probs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        area = auroc(p, y)
    return {
        "ece": expected_calibration_error(p, y, n_bins),
        "brier": brier_score(p, y),
        "auroc": area,
        "n": int(p.size),
        "positive_rate": float(y.mean()),
        "mean_prob": float(p.mean()),
        "n_bins": int(n_bins),
        "bins": reliability_bins(p, y, n_bins).to_dict(),
    }
