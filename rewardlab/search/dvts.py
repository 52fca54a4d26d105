"""Diverse verifier tree search (DVTS): N/M independent greedy subtrees of width M.

The N root samples are split into N/M subtrees of M. In every iteration each live
subtree keeps only its best-scoring candidate (PRM score after the optional
lookahead, as in beam search); if that candidate is finished (or the iteration is
the last) the subtree is done with it, otherwise it is continued M times by one
step. All live subtrees share one policy call and one PRM call per iteration.
The caller picks the answer over the N/M subtree results (best PRM score or a
weighted vote), which keeps the subtrees' diversity that a single beam loses.
"""
from __future__ import annotations

import numpy as np

from rewardlab.search.beam import Beam, SearchTrace, StepSearch, expand, score, top_k
from rewardlab.search.budget import Budget

__all__ = ["dvts"]


def dvts(prompt: str, *, policy, prm, n: int, width: int, rng: np.random.Generator,
         settings: StepSearch = StepSearch()) -> SearchTrace:
    """DVTS with `n` total beams in `n // width` subtrees of width `width`.

    Returns one scored beam per subtree (in subtree order) and the compute spent.
    """
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"DVTS needs n a positive multiple of width, got n={n}, width={width}")
    budget = Budget()
    results: dict[int, Beam] = {}
    frontier: dict[int, Beam] = {}  # live subtree -> its current beam
    step = 0
    for step in range(1, settings.max_steps + 1):
        last = step == settings.max_steps
        if step == 1:
            root = expand(policy, budget, prompt, [Beam()], n, settings, last=last, rng=rng)[0]
            groups = {g: root[g * width:(g + 1) * width] for g in range(n // width)}
        else:
            live = list(frontier)
            children = expand(policy, budget, prompt, [frontier[g] for g in live], width, settings,
                              last=last, rng=rng)
            groups = dict(zip(live, children))
        flat = score(prm, policy, budget, prompt, [b for g in groups for b in groups[g]],
                     settings, rng)
        for i, g in enumerate(groups):
            best = top_k(flat[i * width:(i + 1) * width], 1)[0]
            if best.finished or last:
                results[g] = best
                frontier.pop(g, None)
            else:
                frontier[g] = best
        if not frontier:
            break
    return SearchTrace([results[g] for g in sorted(results)], budget, step)
