"""ProcessBench scoring (Zheng et al., 2024): find the earliest wrong step.

Each solution has a label = index of its earliest wrong step, or -1 when every step
is correct. A PRM predicts the first step whose probability of being correct falls
below a threshold (0.5), or -1 if none does. Per split (gsm8k, math, ...):
  acc_error   = mean[pred == label]   over solutions with label != -1,
  acc_correct = mean[pred == -1]      over solutions with label == -1,
  F1          = 2·acc_error·acc_correct / (acc_error + acc_correct)  (0 when both are 0).
The benchmark number is the unweighted mean F1 over splits. Values are fractions.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

__all__ = [
    "ProcessBenchSplit",
    "ProcessBenchScores",
    "first_error_prediction",
    "first_error_predictions",
    "harmonic_f1",
    "processbench_scores",
]


@dataclasses.dataclass(frozen=True)
class ProcessBenchSplit:
    """Scores of one split. An accuracy over an empty group is NaN, and so is F1 then."""

    acc_error: float
    acc_correct: float
    f1: float
    num_error: int
    num_correct: int


@dataclasses.dataclass(frozen=True)
class ProcessBenchScores:
    """Per-split scores and their unweighted mean F1."""

    splits: dict[str, ProcessBenchSplit]
    average_f1: float


def first_error_prediction(step_probs, threshold: float = 0.5) -> int:
    """Index of the first step with p_k < threshold, or -1 if none (or no steps).

    step_probs: `[K]` probabilities that each step is correct.
    """
    probs = np.asarray(step_probs, dtype=np.float64)
    if probs.ndim != 1:
        raise ValueError(f"step_probs must be 1-D [K], got shape {probs.shape}")
    below = np.flatnonzero(probs < threshold)
    return int(below[0]) if below.size else -1


def first_error_predictions(step_probs, threshold: float = 0.5, mask=None) -> np.ndarray:
    """`first_error_prediction` for a batch: ragged lists, or padded `[B, K]` with a
    bool `mask` `[B, K]` of valid steps (padding never counts as an error)."""
    if isinstance(step_probs, (list, tuple)) and any(np.ndim(r) != 0 for r in step_probs):
        if mask is not None:
            raise ValueError("mask is only used with a padded array, not ragged lists")
        return np.array([first_error_prediction(r, threshold) for r in step_probs], dtype=np.int64)
    probs = np.asarray(step_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"a padded batch must be [B, K], got shape {probs.shape}")
    valid = np.ones(probs.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != probs.shape:
        raise ValueError(f"mask shape {valid.shape} != step_probs shape {probs.shape}")
    low = (probs < threshold) & valid  # [B, K]
    if low.shape[1] == 0:
        return np.full(low.shape[0], -1, dtype=np.int64)
    return np.where(low.any(axis=1), np.argmax(low, axis=1), -1).astype(np.int64)


def harmonic_f1(acc_error: float, acc_correct: float) -> float:
    """2ab / (a + b), 0 when a = b = 0, NaN when either is NaN."""
    if math.isnan(acc_error) or math.isnan(acc_correct):
        return math.nan
    total = acc_error + acc_correct
    return 0.0 if total == 0 else 2.0 * acc_error * acc_correct / total


def _as_index_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D sequence of ints, got {arr.dtype} {arr.shape}")
    bad = np.flatnonzero(arr < -1)
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] = {int(arr[bad[0]])}; expected -1 or a step index")
    return arr


def _split_scores(labels: np.ndarray, preds: np.ndarray) -> ProcessBenchSplit:
    has_error = labels != -1
    n_err, n_ok = int(has_error.sum()), int((~has_error).sum())
    acc_err = float(np.mean(preds[has_error] == labels[has_error])) if n_err else math.nan
    acc_ok = float(np.mean(preds[~has_error] == -1)) if n_ok else math.nan
    return ProcessBenchSplit(acc_err, acc_ok, harmonic_f1(acc_err, acc_ok), n_err, n_ok)


def processbench_scores(labels, predictions, splits: Sequence[str] | None = None) -> ProcessBenchScores:
    """ProcessBench accuracies and F1 per split.

    Args:
      labels: int `[M]`, earliest wrong step per solution, -1 if all steps correct.
      predictions: int `[M]`, predicted earliest wrong step (-1 for none); an exact
        index match is required on erroneous solutions.
      splits: `[M]` split name per solution; None puts everything in split "all".

    Returns:
      `ProcessBenchScores` with one `ProcessBenchSplit` per split (in order of first
      appearance) and `average_f1`, the unweighted mean F1 over splits.
    """
    labels = _as_index_array(labels, "labels")
    preds = _as_index_array(predictions, "predictions")
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in length")
    if labels.size == 0:
        raise ValueError("processbench_scores needs at least one solution")
    names = np.array(["all"] * labels.size if splits is None else list(splits), dtype=object)
    if names.shape != labels.shape:
        raise ValueError(f"splits has {names.size} entries for {labels.size} solutions")
    per_split = {
        name: _split_scores(labels[names == name], preds[names == name])
        for name in dict.fromkeys(names.tolist())
    }
    average = float(np.mean([s.f1 for s in per_split.values()]))
    return ProcessBenchScores(per_split, average)
