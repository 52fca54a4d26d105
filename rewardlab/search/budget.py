"""Compute accounting for test-time search, and the metered calls that fill it.

Every search method returns a `Budget` next to its answer, so that methods can be
compared at equal compute:

* `tokens_generated`: tokens the policy wrote, summed over every completion it
  returned (lookahead rollouts and discarded beams included; a stop token such as
  EOS or the step separator counts as one token);
* `tokens_scored`: tokens that reward models read, as reported by each scorer's
  `tokens_scored` counter (the difference before and after each call);
* `policy_calls` / `scorer_calls`: how many batched calls were made (latency).

Prompt tokens that the policy re-reads (prefill) are not counted as generated;
`LMPolicy.prefill_tokens` (and `LMCompleter.prefill_tokens`) count them, each prompt
once per call however many samples it gets.

The helpers `sample`, `score_outcomes`, `score_steps` and `solution_scores` call
the policy or a scorer and add what the call spent to a `Budget`; search code
makes all its model calls through them.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rewardlab.search import selection
from rewardlab.search.policy import Completion, split_steps

__all__ = ["Budget", "sample", "score_outcomes", "score_steps", "solution_scores"]


@dataclasses.dataclass
class Budget:
    """Compute spent by one search (mutable; methods add to it as they go)."""

    tokens_generated: int = 0
    tokens_scored: int = 0
    policy_calls: int = 0
    scorer_calls: int = 0

    def __add__(self, other: "Budget") -> "Budget":
        return Budget(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def total_tokens(self) -> int:
        """Generated plus scored tokens."""
        return self.tokens_generated + self.tokens_scored

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _counter(scorer) -> int:
    count = getattr(scorer, "tokens_scored", None)
    if count is None:
        raise TypeError(f"scorer {type(scorer).__name__} has no `tokens_scored` counter; "
                        "search needs it to account for reward-model compute")
    return int(count)


def sample(policy, budget: Budget, prompts: Sequence[str], n: int, *, max_new_tokens: int,
           temperature: float, stop_at_step: bool, rng: np.random.Generator
           ) -> list[list[Completion]]:
    """`policy.sample(...)`, adding the tokens of every returned completion to `budget`."""
    out = policy.sample(list(prompts), n, max_new_tokens=max_new_tokens, temperature=temperature,
                        stop_at_step=stop_at_step, rng=rng)
    if len(out) != len(prompts) or any(len(row) != n for row in out):
        raise ValueError(f"policy returned {[len(r) for r in out]} completions for "
                         f"{len(prompts)} prompts x n={n}")
    budget.policy_calls += 1
    budget.tokens_generated += sum(c.num_tokens for row in out for c in row)
    return out


def score_outcomes(scorer, budget: Budget, prompts: Sequence[str],
                   completions: Sequence[str]) -> np.ndarray:
    """Outcome rewards `[B]` of (prompt, completion text) pairs via `scorer.score`."""
    before = _counter(scorer)
    scores = np.asarray(scorer.score(list(prompts), list(completions)), dtype=np.float64)
    if scores.shape != (len(prompts),):
        raise ValueError(f"outcome scorer returned shape {scores.shape} for {len(prompts)} prompts")
    budget.tokens_scored += _counter(scorer) - before
    budget.scorer_calls += 1
    return scores


def score_steps(scorer, budget: Budget, prompts: Sequence[str],
                steps_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per-step probabilities (one `[K_b]` array per solution) via `scorer.score_steps`."""
    before = _counter(scorer)
    scores = [np.asarray(s, dtype=np.float64) for s in
              scorer.score_steps(list(prompts), [list(s) for s in steps_lists])]
    for b, (s, steps) in enumerate(zip(scores, steps_lists)):
        if s.shape != (len(steps),):
            raise ValueError(f"process scorer returned shape {s.shape} for solution {b} "
                             f"with {len(steps)} steps")
    if len(scores) != len(prompts):
        raise ValueError(f"process scorer returned {len(scores)} rows for {len(prompts)} prompts")
    budget.tokens_scored += _counter(scorer) - before
    budget.scorer_calls += 1
    return scores


def solution_scores(scorer, budget: Budget, prompts: Sequence[str], texts: Sequence[str], *,
                    kind: str, aggregation: str = "last", separator: str = "\n") -> np.ndarray:
    """One score per (prompt, solution text), `[B]` float64.

    kind "orm": the outcome reward `scorer.score`. kind "prm": the text is split into
    steps (`split_steps`), the PRM gives one probability per step and they are
    aggregated with `aggregation` (last, min, prod, mean). A text with no step yet
    scores 0 and is not sent to the scorer. An empty batch returns `[0]` without a call.
    """
    if len(prompts) != len(texts):
        raise ValueError(f"got {len(prompts)} prompts but {len(texts)} texts")
    if not texts:
        return np.zeros((0,), np.float64)
    if kind == "orm":
        return score_outcomes(scorer, budget, prompts, texts)
    if kind != "prm":
        raise ValueError(f"kind must be 'orm' or 'prm', got {kind!r}")
    steps = [split_steps(t, separator) for t in texts]
    rows = [i for i, s in enumerate(steps) if s]
    out = np.zeros(len(texts), np.float64)
    if rows:
        step_scores = score_steps(scorer, budget, [prompts[i] for i in rows], [steps[i] for i in rows])
        out[rows] = selection.aggregate_step_scores(step_scores, aggregation)
    return out
