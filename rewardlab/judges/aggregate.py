"""Combining judge outputs: several sampled verifications, both orders of a pair.

Arrays hold one row per judged item and one column per sample; a sample whose verdict
could not be parsed is NaN and takes no part (it is counted by the caller, never
guessed). An item with no parsed sample aggregates to NaN.

* `mean_probability`: the mean of the verdict probabilities `p_s` of the parsed samples.
* `majority_verdict`: the share of parsed samples whose verdict is yes (1) rather than
  no (0); the majority verdict is yes when the share is above 1/2.
* `score_vote` (DeepSeek-GRM): the sum of the parsed samples' pointwise scores.
* `debiased_preference`: `p(A > B) = (q1 + 1 - q2) / 2` from q1 = P(first shown wins)
  in order (A, B) and q2 = the same in order (B, A) (SPECS §6).
* `position_consistent`: the preferred response is the same in both orders
  (`q1 > 1/2` and `q2 < 1/2`, or `q1 < 1/2` and `q2 > 1/2`); a 1/2 is no preference and
  so not consistent.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["mean_probability", "majority_verdict", "score_vote", "AGGREGATORS",
           "debiased_preference", "position_consistent"]


def _rows(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"expected [items, samples], got shape {x.shape}")
  return x


def _nan_reduce(fn, x):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return fn(x, axis=1)


def mean_probability(probs) -> np.ndarray:
  """`[N, K]` verdict probabilities (NaN = unparsed) -> `[N]` mean over parsed samples."""
  return _nan_reduce(np.nanmean, _rows(probs))


def majority_verdict(verdicts) -> np.ndarray:
  """`[N, K]` verdicts 1 / 0 (NaN = unparsed) -> `[N]` share of yes among parsed samples."""
  v = _rows(verdicts)
  if np.any(~np.isnan(v) & (v != 0) & (v != 1)):
    raise ValueError("verdicts must be 0, 1 or NaN")
  return _nan_reduce(np.nanmean, v)


def score_vote(scores) -> np.ndarray:
  """`[N, K]` sampled scores (NaN = unparsed) -> `[N]` their sum (NaN when none parsed)."""
  s = _rows(scores)
  total = np.nansum(s, axis=1)
  return np.where(np.isnan(s).all(axis=1), np.nan, total)


AGGREGATORS = {"mean_probability": mean_probability, "majority": majority_verdict,
               "score_vote": score_vote}


def debiased_preference(q1, q2) -> np.ndarray:
  """`(q1 + 1 - q2) / 2` elementwise (NaN stays NaN)."""
  return (np.asarray(q1, np.float64) + 1.0 - np.asarray(q2, np.float64)) / 2.0


def position_consistent(q1, q2) -> np.ndarray:
  """Bool: the same response is preferred in both orders (see the module docstring)."""
  q1, q2 = np.asarray(q1, np.float64), np.asarray(q2, np.float64)
  return ((q1 > 0.5) & (q2 < 0.5)) | ((q1 < 0.5) & (q2 > 0.5))
