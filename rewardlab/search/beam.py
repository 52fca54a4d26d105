"""PRM-guided beam search over reasoning steps (N beams, beam width M).

One iteration (SPECS 3):

1. every frontier beam is continued by the policy by one step (generation stops at
   the step separator), `copies` times: the root N times at the first iteration,
   each survivor M times afterwards;
2. optionally each unfinished candidate is rolled out `lookahead` more steps
   greedily (temperature 0); the rollout is only used for scoring;
3. the PRM scores the candidates (step probabilities aggregated by `aggregation`);
4. finished candidates (EOS) are collected; duplicate unfinished candidates
   (same text) are dropped; the top N/M unfinished ones survive.

The search ends when N beams have finished, no beam is left, or after `max_steps`
iterations; the last iteration continues every beam to the end (no step stop) so
that every returned beam is complete. All beams of an iteration go to the policy in
one batched call and to the PRM in one batched call. The final pick among the
finished beams (PRM score, weighted vote, majority) belongs to the caller
(`rewardlab.search.methods`), which knows how to read answers.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rewardlab.search import budget as budget_lib
from rewardlab.search.budget import Budget
from rewardlab.search.policy import Completion

__all__ = ["Beam", "StepSearch", "SearchTrace", "expand", "score", "top_k", "beam_search"]


@dataclasses.dataclass(frozen=True)
class Beam:
    """A partial (or finished) solution: `text` after the problem prompt, its token
    count, whether the policy finished it (EOS / out of context), and its PRM score."""

    text: str = ""
    num_tokens: int = 0
    finished: bool = False
    score: float = 0.0

    def extend(self, c: Completion) -> "Beam":
        # A continuation that adds no token cannot make progress: treat it as finished.
        return Beam(self.text + c.text, self.num_tokens + c.num_tokens,
                    c.finished or c.num_tokens == 0)


@dataclasses.dataclass(frozen=True)
class StepSearch:
    """Settings shared by beam search and DVTS.

    temperature: sampling temperature of step expansions.
    step_tokens: token limit of one step; max_new_tokens: of the final expansion.
    max_steps: iterations; the last one continues every beam to the end.
    lookahead: greedy steps rolled out before scoring (0 = none).
    aggregation: how PRM step scores become a beam score (last, min, prod, mean).
    separator: the step separator (PRM steps are split on it).
    """

    temperature: float = 1.0
    step_tokens: int = 32
    max_new_tokens: int = 64
    max_steps: int = 40
    lookahead: int = 0
    aggregation: str = "last"
    separator: str = "\n"

    def __post_init__(self):
        for name in ("step_tokens", "max_new_tokens", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"StepSearch.{name} must be >= 1, got {getattr(self, name)}")
        if self.lookahead < 0:
            raise ValueError(f"StepSearch.lookahead must be >= 0, got {self.lookahead}")


@dataclasses.dataclass
class SearchTrace:
    """What a tree search returns: its complete `beams` (scored), `budget` and `steps` run."""

    beams: list[Beam]
    budget: Budget
    steps: int


def expand(policy, budget: Budget, prompt: str, beams: Sequence[Beam], copies: int,
           settings: StepSearch, *, last: bool, rng: np.random.Generator) -> list[list[Beam]]:
    """Each beam continued `copies` times, by one step (or to the end when `last`).

    One policy call for all beams; returns `[len(beams)][copies]` children.
    """
    out = budget_lib.sample(
        policy, budget, [prompt + b.text for b in beams], copies,
        max_new_tokens=settings.max_new_tokens if last else settings.step_tokens,
        temperature=settings.temperature, stop_at_step=not last, rng=rng)
    return [[b.extend(c) for c in row] for b, row in zip(beams, out)]


def _lookahead(policy, budget: Budget, prompt: str, beams: Sequence[Beam], settings: StepSearch,
               rng: np.random.Generator) -> list[str]:
    """Texts to score: unfinished beams rolled out `lookahead` greedy steps (batched)."""
    rollouts = list(beams)
    for _ in range(settings.lookahead):
        live = [i for i, b in enumerate(rollouts) if not b.finished]
        if not live:
            break
        out = budget_lib.sample(policy, budget, [prompt + rollouts[i].text for i in live], 1,
                                max_new_tokens=settings.step_tokens, temperature=0.0,
                                stop_at_step=True, rng=rng)
        for i, row in zip(live, out):
            rollouts[i] = rollouts[i].extend(row[0])
    return [r.text for r in rollouts]


def score(prm, policy, budget: Budget, prompt: str, beams: Sequence[Beam], settings: StepSearch,
          rng: np.random.Generator) -> list[Beam]:
    """The beams with their PRM scores (after the optional lookahead), one PRM call."""
    texts = _lookahead(policy, budget, prompt, beams, settings, rng)
    scores = budget_lib.solution_scores(prm, budget, [prompt] * len(texts), texts, kind="prm",
                                        aggregation=settings.aggregation,
                                        separator=settings.separator)
    return [dataclasses.replace(b, score=float(s)) for b, s in zip(beams, scores)]


def top_k(beams: Sequence[Beam], k: int) -> list[Beam]:
    """The k highest-scoring beams, earlier beams first on ties."""
    order = np.argsort(-np.asarray([b.score for b in beams]), kind="stable")
    return [beams[i] for i in order[:k]]


def _dedupe(beams: Sequence[Beam]) -> list[Beam]:
    """Unfinished beams with a text seen before are dropped (finished ones are kept)."""
    seen, out = set(), []
    for b in beams:
        if not b.finished:
            if b.text in seen:
                continue
            seen.add(b.text)
        out.append(b)
    return out


def beam_search(prompt: str, *, policy, prm, n: int, width: int, rng: np.random.Generator,
                settings: StepSearch = StepSearch(), dedupe: bool = True) -> SearchTrace:
    """PRM beam search with `n` beams of width `width` (n must be a multiple of width).

    Returns every finished beam with its PRM score (at most n per iteration; the
    search stops once n have finished) and the compute spent.
    """
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"beam search needs n a positive multiple of width, got n={n}, width={width}")
    keep = n // width
    budget = Budget()
    frontier, copies = [Beam()], n
    finished: list[Beam] = []
    step = 0
    for step in range(1, settings.max_steps + 1):
        last = step == settings.max_steps
        candidates = [b for row in expand(policy, budget, prompt, frontier, copies, settings,
                                          last=last, rng=rng) for b in row]
        if dedupe:
            candidates = _dedupe(candidates)
        candidates = score(prm, policy, budget, prompt, candidates, settings, rng)
        finished += [b for b in candidates if b.finished or last]
        active = [b for b in candidates if not (b.finished or last)]
        if len(finished) >= n or not active:
            break
        frontier, copies = top_k(active, keep), width
    return SearchTrace(finished, budget, step)
