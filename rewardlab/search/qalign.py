"""QAlign: test-time alignment by QUEST Metropolis-Hastings over whole responses.

Target: `pi(y) ∝ p_LM(y | x) · exp(r(x, y) / beta)`. From the current response `y`
(`|y|` units) the proposal picks a start `i` uniformly among the units of `y`, keeps
the prefix `y_<i` and resamples the suffix from the LM (`p_LM(· | x, y_<i)`). As the
prefix's LM probability cancels, the Metropolis-Hastings acceptance is

    A(y -> y') = min(1, exp((r' - r) / beta) · |y| / |y'|),

with the log-ratio clamped to [-20, 20]. The answer is a majority vote over the
chain's states after burn-in.

Units (`unit`):
* `"token"` (the paper's): `i` is a token index and `|y|` the number of tokens,
  the stop token (EOS) included. Needs `Completion.token_ends`; the prefix is
  handed back to the policy as text, which is exact for character tokenizers.
* `"step"`: `i` is the start of a step (the first token, or a token right after
  one whose text contains the separator) and `|y|` the number of such starts.

The ratio is exact (not only for the sampled index) because responses end with
EOS: no response is a prefix of another, so every index that could produce `y'`
from `y` also produces `y` from `y'` with the same prefix probability. A suffix
is given `max_new_tokens - i` tokens so every state lives in the same truncated
LM distribution.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Hashable, Sequence

import numpy as np

from rewardlab.search import budget as budget_lib
from rewardlab.search import selection
from rewardlab.search.budget import Budget
from rewardlab.search.policy import Completion

__all__ = ["Chain", "resample_starts", "qalign_chain", "chain_vote"]

LOG_RATIO_CLAMP = 20.0


@dataclasses.dataclass
class Chain:
    """A QUEST chain: `states[t]` is the response after t proposals (`states[0]` the
    initial sample), `rewards[t]` its reward, `accepted[t-1]` whether proposal t was
    accepted, and `budgets[t]` the compute spent up to and including state t."""

    states: list[Completion]
    rewards: list[float]
    accepted: list[bool]
    budgets: list[Budget]

    @property
    def acceptance_rate(self) -> float:
        return float(np.mean(self.accepted)) if self.accepted else 0.0


def resample_starts(y: Completion, unit: str, separator: str = "\n") -> list[int]:
    """Token indices where a proposal may start resampling (`|y|` = their number)."""
    if y.token_ends is None:
        raise ValueError("QAlign needs Completion.token_ends from the policy")
    if unit == "token":
        return list(range(y.num_tokens))
    if unit != "step":
        raise ValueError(f"unit must be 'token' or 'step', got {unit!r}")
    # A step starts after each token that completes a separator (one of several tokens,
    # e.g. "\n\n" as "\n" + "\n", completes it at the last).
    starts, seen = [0], 0
    for t, end in enumerate(y.token_ends[:-1]):
        count = y.text.count(separator, 0, end)
        if count > seen:
            starts.append(t + 1)
        seen = count
    return starts if y.num_tokens else []


def _join(y: Completion, i: int, suffix: Completion) -> Completion:
    """The first i tokens of y followed by `suffix`."""
    head = y.prefix(i)
    ends = y.token_ends[:i] + tuple(len(head) + e for e in suffix.token_ends)
    return Completion(head + suffix.text, i + suffix.num_tokens, suffix.finished, ends)


def qalign_chain(prompt: str, *, policy, scorer, n: int, rng: np.random.Generator,
                 beta: float = 1.0, unit: str = "token", kind: str = "orm",
                 aggregation: str = "last", temperature: float = 1.0, max_new_tokens: int = 64,
                 separator: str = "\n") -> Chain:
    """Run a chain of `n` states (1 initial sample + n - 1 proposals).

    r(y) is `budget.solution_scores` of `scorer` (`kind` orm or prm, with
    `aggregation`). `temperature` other than 1 samples the proposals from a tempered
    LM, whose distribution then replaces p_LM in the target.
    """
    if n < 1:
        raise ValueError(f"QAlign needs n >= 1 states, got {n}")
    if beta <= 0:
        raise ValueError(f"QAlign beta must be > 0, got {beta}")
    budget = Budget()

    def reward(y: Completion) -> float:
        return float(budget_lib.solution_scores(scorer, budget, [prompt], [y.text], kind=kind,
                                                aggregation=aggregation, separator=separator)[0])

    def draw(prefix: str, limit: int) -> Completion:
        return budget_lib.sample(policy, budget, [prompt + prefix], 1, max_new_tokens=limit,
                                 temperature=temperature, stop_at_step=False, rng=rng)[0][0]

    y = draw("", max_new_tokens)
    chain = Chain([y], [reward(y)], [], [copy.copy(budget)])
    for _ in range(n - 1):
        y, r = chain.states[-1], chain.rewards[-1]
        starts = resample_starts(y, unit, separator)
        accept = False
        if starts:  # an empty response (no context left) cannot be resampled
            i = starts[int(rng.integers(len(starts)))]
            y_new = _join(y, i, draw(y.prefix(i), max_new_tokens - i))
            r_new = reward(y_new)
            log_ratio = ((r_new - r) / beta + math.log(len(starts))
                         - math.log(len(resample_starts(y_new, unit, separator))))
            log_ratio = min(max(log_ratio, -LOG_RATIO_CLAMP), LOG_RATIO_CLAMP)
            accept = math.log(rng.uniform()) < log_ratio
            if accept:
                y, r = y_new, r_new
        chain.states.append(y)
        chain.rewards.append(r)
        chain.accepted.append(bool(accept))
        chain.budgets.append(copy.copy(budget))
    return chain


def chain_vote(answers: Sequence[Hashable], n: int, burn_in: float) -> int:
    """Index of the state QAlign answers with, using the first `n` states.

    The first `floor(burn_in * n)` states are discarded (at least one state is
    kept); the majority answer of the rest wins (ties: first seen) and the index of
    its first state after burn-in is returned.
    """
    if not 0.0 <= burn_in < 1.0:
        raise ValueError(f"burn_in must be in [0, 1), got {burn_in}")
    if not 1 <= n <= len(answers):
        raise ValueError(f"n must be in [1, {len(answers)}], got {n}")
    start = min(int(burn_in * n), n - 1)
    return start + selection.majority_vote(list(answers[start:n])).index
