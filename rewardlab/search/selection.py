"""Picking one answer out of N samples: voting, best-of-N and step-score aggregation.

All functions work on plain numpy arrays and python lists; the models that produce
the scores live elsewhere. Conventions shared by every selector:

* `answers` are *canonical* answers (already normalized, hashable; `None` when no
  answer could be extracted). `None` never wins a vote unless every answer is `None`.
* Ties are broken towards the sample seen first, so results are deterministic and a
  selector never depends on hash order.
* A selector returns a `Selection(index, answer, score)`: the index of the chosen
  sample, its answer, and the selector's own score (vote count, reward, or summed
  reward; documented per function).

Step-score aggregation (`last`, `min`, `prod`, `mean`) turns PRM step scores into one
solution score; variants are registered by name in `STEP_AGGREGATORS`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Sequence

import numpy as np

__all__ = [
    "Selection",
    "STEP_AGGREGATORS",
    "SELECTORS",
    "register_aggregator",
    "register_selector",
    "aggregate_step_scores",
    "majority_vote",
    "best_of_n",
    "weighted_best_of_n",
    "select",
    "select_batch",
]


@dataclasses.dataclass(frozen=True)
class Selection:
    """The sample a selector picked: its `index` in the N samples, its `answer`, and
    the selector's `score` for it (votes, reward or summed reward)."""

    index: int
    answer: Any
    score: float


# ----------------------------------------------------------------------------------
# Step-score aggregation
# ----------------------------------------------------------------------------------

# Each aggregator maps padded scores [B, K] and a bool mask [B, K] (every row has at
# least one valid step) to one score per row [B].
STEP_AGGREGATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}


def register_aggregator(name: str):
    """Decorator that registers a step aggregator `fn(scores [B, K], mask [B, K]) -> [B]`."""

    def wrap(fn):
        STEP_AGGREGATORS[name] = fn
        return fn

    return wrap


@register_aggregator("last")
def _agg_last(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Score of the last valid step (the highest masked-in index)."""
    k = scores.shape[1]
    last = k - 1 - np.argmax(mask[:, ::-1], axis=1)  # [B]
    return scores[np.arange(scores.shape[0]), last]


@register_aggregator("min")
def _agg_min(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """min_k s_k over valid steps."""
    return np.min(np.where(mask, scores, np.inf), axis=1)


@register_aggregator("prod")
def _agg_prod(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """prod_k s_k over valid steps."""
    return np.prod(np.where(mask, scores, 1.0), axis=1)


@register_aggregator("mean")
def _agg_mean(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sum_k m_k s_k / sum_k m_k."""
    return np.sum(np.where(mask, scores, 0.0), axis=1) / np.sum(mask, axis=1)


def _pad_ragged(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged python lists -> (padded scores [B, K_max], mask [B, K_max])."""
    width = max((len(r) for r in rows), default=0)
    scores = np.zeros((len(rows), width), dtype=np.float64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        scores[i, : len(row)] = np.asarray(row, dtype=np.float64)
        mask[i, : len(row)] = True
    return scores, mask


def _is_ragged(step_scores: Any) -> bool:
    return isinstance(step_scores, (list, tuple)) and any(
        np.ndim(r) != 0 for r in step_scores
    )


def aggregate_step_scores(step_scores, how: str = "last", mask=None):
    """Aggregate per-step PRM scores into one score per solution.

    Args:
      step_scores: one solution as a 1-D sequence of K step scores; or a batch as
        ragged python lists (one list per solution) or a padded array `[B, K]`.
      how: a name registered in `STEP_AGGREGATORS` (`last`, `min`, `prod`, `mean`).
      mask: bool `[B, K]` (or `[K]`) marking valid steps of a padded input; `None`
        means every position is a step. Not allowed with ragged lists.

    Returns:
      a float for one solution, else a float64 array `[B]`.

    Raises:
      ValueError: unknown `how`, mismatched mask, or a solution with no steps.
    """
    if how not in STEP_AGGREGATORS:
        raise ValueError(f"unknown aggregation {how!r}; known: {sorted(STEP_AGGREGATORS)}")
    if _is_ragged(step_scores):
        if mask is not None:
            raise ValueError("mask is only used with a padded array, not ragged lists")
        scores, valid = _pad_ragged(step_scores)
        single = False
    else:
        scores = np.asarray(step_scores, dtype=np.float64)
        single = scores.ndim == 1
        if scores.ndim not in (1, 2):
            raise ValueError(f"step_scores must be [K] or [B, K], got shape {scores.shape}")
        scores = np.atleast_2d(scores)
        if mask is None:
            valid = np.ones(scores.shape, dtype=bool)
        else:
            valid = np.atleast_2d(np.asarray(mask, dtype=bool))
            if valid.shape != scores.shape:
                raise ValueError(f"mask shape {valid.shape} != step_scores shape {scores.shape}")
    empty = np.flatnonzero(~valid.any(axis=1)) if valid.size else np.arange(len(scores))
    if empty.size:
        raise ValueError(f"solution {int(empty[0])} has no valid steps to aggregate")
    out = STEP_AGGREGATORS[how](scores, valid)
    return float(out[0]) if single else out


# ----------------------------------------------------------------------------------
# Selectors
# ----------------------------------------------------------------------------------


def _check_scores(scores, n: int | None = None) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence, got shape {scores.shape}")
    if n is not None and scores.size != n:
        raise ValueError(f"got {n} answers but {scores.size} scores")
    bad = np.flatnonzero(np.isnan(scores))
    if bad.size:
        raise ValueError(f"score of sample {int(bad[0])} is NaN")
    return scores


def _group_by_answer(answers: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Non-None answer -> indices holding it, in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            groups.setdefault(a, []).append(i)
    return groups


def majority_vote(answers: Sequence[Hashable]) -> Selection:
    """Most frequent canonical answer (self-consistency).

    Winner = argmax_a |{i : ans_i = a}| over non-None answers; ties go to the answer
    seen first. `index` is the first sample holding the winner; `score` is its vote
    count. If every answer is None the result is (0, None, N).
    """
    answers = list(answers)
    if not answers:
        raise ValueError("majority_vote needs at least one answer")
    groups = _group_by_answer(answers)
    if not groups:
        return Selection(0, None, float(len(answers)))
    # dicts keep insertion order, and max keeps the first maximum: ties -> first seen.
    answer, idx = max(groups.items(), key=lambda kv: len(kv[1]))
    return Selection(idx[0], answer, float(len(idx)))


def best_of_n(scores, answers: Sequence[Hashable] | None = None) -> Selection:
    """Sample with the highest score: argmax_i score_i, first index on ties.

    `answers` is optional and only reported back. `score` is the winning reward.
    """
    scores = _check_scores(scores, None if answers is None else len(answers))
    i = int(np.argmax(scores))
    return Selection(i, None if answers is None else answers[i], float(scores[i]))


def weighted_best_of_n(answers: Sequence[Hashable], scores) -> Selection:
    """Weighted vote: argmax over answers a of W(a) = sum_{i: ans_i = a} score_i.

    None answers carry no weight. Ties in W go to the answer seen first. `index` is the
    highest-scoring sample holding the winning answer (first on ties) and `score` is
    W(winner). Scores must be non-negative (e.g. PRM probabilities): with negative
    rewards more votes would lower an answer's weight. If every answer is None the
    result is (0, None, 0.0).
    """
    answers = list(answers)
    scores = _check_scores(scores, len(answers))
    if np.any(scores < 0):
        raise ValueError(
            f"weighted_best_of_n needs non-negative scores; sample "
            f"{int(np.flatnonzero(scores < 0)[0])} has {scores[scores < 0][0]} "
            "(map rewards to probabilities, e.g. with a sigmoid)"
        )
    groups = _group_by_answer(answers)
    if not groups:
        return Selection(0, None, 0.0)
    answer, idx = max(groups.items(), key=lambda kv: float(np.sum(scores[kv[1]])))
    best = idx[int(np.argmax(scores[idx]))]
    return Selection(best, answer, float(np.sum(scores[idx])))


# Every selector is called as fn(answers, scores) -> Selection.
SELECTORS: dict[str, Callable[[Sequence[Hashable], Any], Selection]] = {}


def register_selector(name: str):
    """Decorator that registers `fn(answers, scores) -> Selection` under `name`."""

    def wrap(fn):
        SELECTORS[name] = fn
        return fn

    return wrap


register_selector("majority")(lambda answers, scores: majority_vote(answers))
register_selector("best_of_n")(lambda answers, scores: best_of_n(scores, answers))
register_selector("weighted_best_of_n")(weighted_best_of_n)


def select(method: str, answers: Sequence[Hashable], scores=None) -> Selection:
    """Run the selector registered as `method` on one problem's N samples."""
    if method not in SELECTORS:
        raise ValueError(f"unknown selection method {method!r}; known: {sorted(SELECTORS)}")
    if scores is None and method != "majority":
        raise ValueError(f"selection method {method!r} needs scores")
    return SELECTORS[method](answers, scores)


def select_batch(method: str, answers: Sequence[Sequence[Hashable]], scores=None) -> list[Selection]:
    """`select` over a batch: answers `[P][N]` (lists), scores `[P, N]` or None.

    Returns one `Selection` per problem; problems may have different N when answers
    and scores are ragged lists.
    """
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"got {len(answers)} problems of answers but {len(scores)} of scores")
    return [
        select(method, a, None if scores is None else scores[p])
        for p, a in enumerate(answers)
    ]
