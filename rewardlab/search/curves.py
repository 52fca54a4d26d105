"""Accuracy-vs-N curves for test-time scaling, with confidence intervals.

Protocol (SPECS 3): draw N_max samples per problem once, then evaluate a selection
method on subsets of size n = 1, 2, 4, ... of those samples, either the first n
samples or `num_resamples` random subsets per problem. The curve reports the mean
accuracy over problems with a normal-approximation 95% interval,
`mean ± z · sd(per-problem accuracy) / sqrt(P)`, clipped to [0, 1]. `wilson_interval`
is the better interval for a plain proportion (one accuracy over n trials), and
`pass_at_k` is the unbiased oracle estimator of Chen et al. (2021).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Hashable, Sequence

import numpy as np

from rewardlab.search import selection

__all__ = [
    "Curve",
    "default_ns",
    "mean_confidence_interval",
    "wilson_interval",
    "pass_at_k",
    "accuracy_vs_n",
    "pass_at_k_curve",
]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One accuracy-vs-budget curve; arrays are `[len(x)]`.

    `x` is the number of samples n (or, after `against_tokens()`, mean tokens per
    problem); `mean`, `ci_low`, `ci_high`, `stderr` are over problems;
    `per_problem` is `[len(x), P]`; `tokens` the mean generated tokens per problem
    at each n (None when token counts were not given).
    """

    x: np.ndarray
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    stderr: np.ndarray
    per_problem: np.ndarray
    label: str = ""
    tokens: np.ndarray | None = None

    def against_tokens(self) -> "Curve":
        """The same curve with x = mean generated tokens per problem."""
        if self.tokens is None:
            raise ValueError("this curve was built without token counts")
        return dataclasses.replace(self, x=self.tokens)


def default_ns(n_max: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to n_max, with n_max itself always included."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    ns = [2**i for i in range(int(math.log2(n_max)) + 1)]
    return tuple(ns if ns[-1] == n_max else ns + [n_max])


def z_value(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for confidence 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def mean_confidence_interval(values, confidence: float = 0.95):
    """Mean and normal-approximation interval of per-problem values `[P]`.

    Returns (mean, low, high, stderr) with stderr = sd(values, ddof=1) / sqrt(P)
    (0 for P = 1), and the interval mean ± z·stderr clipped to [0, 1].
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    half = z_value(confidence) * se
    return mean, max(0.0, mean - half), min(1.0, mean + half), se


def wilson_interval(successes, n, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion k/n.

    center = (p + z²/2n) / (1 + z²/n), half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
    Works elementwise on arrays; returns (low, high).
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("wilson_interval needs 0 <= successes <= n and n > 0")
    z = z_value(confidence)
    p = k / n
    denom = 1.0 + z**2 / n
    center = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low, high = np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def pass_at_k(n, c, k: int):
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021).

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i),
    the product form avoiding huge binomials; exactly 1 when n - c < k.
    `n` and `c` may be arrays (elementwise); returns a float or an array.
    """
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    out = np.empty(n_arr.shape, dtype=np.float64)
    for pos in np.ndindex(n_arr.shape):
        ni, ci = int(n_arr[pos]), int(c_arr[pos])
        if not 0 <= ci <= ni or not 1 <= k <= ni:
            raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={ni}, c={ci}, k={k}")
        if ni - ci < k:
            out[pos] = 1.0
        else:
            out[pos] = 1.0 - float(np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1)))
    return float(out) if out.ndim == 0 else out


def _subsets(n_max: int, n: int, num_resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index subsets of size n: the first n, or sorted random draws without replacement."""
    if num_resamples == 0:
        return [np.arange(n)]
    return [np.sort(rng.choice(n_max, size=n, replace=False)) for _ in range(num_resamples)]


def _as_problem_arrays(answers, correct, scores, tokens):
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be [P, N_max], got shape {correct.shape}")
    p, n_max = correct.shape
    if len(answers) != p or any(len(a) != n_max for a in answers):
        raise ValueError(f"answers must be [P][N_max] = [{p}][{n_max}] like correct")
    for name, arr in (("scores", scores), ("tokens", tokens)):
        if arr is not None and np.shape(arr) != (p, n_max):
            raise ValueError(f"{name} must be [P, N_max] = {(p, n_max)}, got {np.shape(arr)}")
    scores = None if scores is None else np.asarray(scores, dtype=np.float64)
    tokens = None if tokens is None else np.asarray(tokens, dtype=np.float64)
    return correct, scores, tokens


def accuracy_vs_n(
    answers: Sequence[Sequence[Hashable]],
    correct,
    scores=None,
    *,
    method: str = "majority",
    ns: Sequence[int] | None = None,
    num_resamples: int = 0,
    rng: np.random.Generator | int | None = None,
    tokens=None,
    confidence: float = 0.95,
) -> Curve:
    """Accuracy of a selection method as a function of the number of samples n.

    Args:
      answers: canonical answers `[P][N_max]` (python lists; None = no answer).
      correct: bool `[P, N_max]`, whether each sample's answer is right.
      scores: `[P, N_max]` reward per sample (needed by every method but majority).
      method: a name in `selection.SELECTORS` (majority, best_of_n, weighted_best_of_n).
      ns: subset sizes; default 1, 2, 4, ..., N_max.
      num_resamples: 0 evaluates the first n samples; R > 0 averages, per problem,
        the correctness over R random size-n subsets (drawn without replacement,
        kept in their original order so "first seen" tie-breaks are unchanged).
      rng: numpy Generator or seed for the resampling.
      tokens: optional `[P, N_max]` generated tokens per sample; the curve then
        carries the mean tokens spent per problem at each n.
      confidence: level of the normal-approximation interval over problems.

    Returns:
      a `Curve` with x = ns and per-problem accuracies `[len(ns), P]`.
    """
    correct, scores, tokens = _as_problem_arrays(answers, correct, scores, tokens)
    p, n_max = correct.shape
    ns = default_ns(n_max) if ns is None else tuple(int(n) for n in ns)
    if any(not 1 <= n <= n_max for n in ns):
        raise ValueError(f"every n must be in [1, {n_max}], got {ns}")
    if num_resamples < 0:
        raise ValueError(f"num_resamples must be >= 0, got {num_resamples}")
    rng = np.random.default_rng(rng)
    per_problem = np.zeros((len(ns), p))
    spent = np.zeros((len(ns), p))
    for j, n in enumerate(ns):
        for i in range(p):
            subsets = _subsets(n_max, n, num_resamples, rng)
            hits = []
            for idx in subsets:
                pick = selection.select(
                    method,
                    [answers[i][t] for t in idx],
                    None if scores is None else scores[i, idx],
                )
                hits.append(correct[i, idx[pick.index]])
            per_problem[j, i] = np.mean(hits)
            if tokens is not None:
                spent[j, i] = np.mean([tokens[i, idx].sum() for idx in subsets])
    return _curve(np.asarray(ns, dtype=np.float64), per_problem, method, confidence,
                  None if tokens is None else spent.mean(axis=1))


def pass_at_k_curve(correct, ns: Sequence[int] | None = None, confidence: float = 0.95) -> Curve:
    """Oracle curve: unbiased pass@k per problem from its N_max samples, for k in ns."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be [P, N_max], got shape {correct.shape}")
    p, n_max = correct.shape
    ns = default_ns(n_max) if ns is None else tuple(int(n) for n in ns)
    c = correct.sum(axis=1)
    per_problem = np.stack([np.atleast_1d(pass_at_k(np.full(p, n_max), c, k)) for k in ns])
    return _curve(np.asarray(ns, dtype=np.float64), per_problem, "pass@k", confidence, None)


def _curve(x, per_problem, label, confidence, tokens) -> Curve:
    stats = np.array([mean_confidence_interval(row, confidence) for row in per_problem])
    return Curve(x=x, mean=stats[:, 0], ci_low=stats[:, 1], ci_high=stats[:, 2],
                 stderr=stats[:, 3], per_problem=per_problem, label=label, tokens=tokens)
