"""Test-time scaling methods behind one signature, registered by name.

    method(prompt, *, policy, scorers, task, n, rng, **opts) -> SearchResult

`prompt` is the problem prompt text, `policy` a `Policy`, `scorers` a `Scorers`
(the reward models available), `task` a `rewardlab.tasks.Task` (answers are read
with `task.extract_answer`), `n` the method's compute knob (samples, beams or chain
states) and `rng` a numpy Generator. Every method returns its answer, the text it
chose, the `Budget` it spent and method-specific `extra` information.

Registered: `majority`, `best_of_n`, `weighted_best_of_n`, `beam_search`, `dvts`,
`qalign`, `genarm`. Options and defaults are documented per method; shared ones are
`temperature` (1.0) and `max_new_tokens` (64, a whole solution).

Reward for `best_of_n`, `weighted_best_of_n` and `qalign`: `reward="prm"` (step
probabilities aggregated by `aggregation`), `"orm"`, or `"auto"` (the PRM when
there is one, else the ORM). Weighted votes need non-negative weights, so ORM
rewards are mapped through a sigmoid there; PRM probabilities are used as they are.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from rewardlab.search import beam as beam_lib
from rewardlab.search import budget as budget_lib
from rewardlab.search import selection
from rewardlab.search.budget import Budget
from rewardlab.search.dvts import dvts as dvts_search
from rewardlab.search.qalign import chain_vote, qalign_chain

__all__ = ["Scorers", "SearchResult", "METHODS", "register_method", "run_method",
           "reward_scorer", "select_answer"]


@dataclasses.dataclass(frozen=True)
class Scorers:
    """Reward models available to search: an outcome scorer (`score`), a process scorer
    (`score_steps`), and GenARM guide LMs (`(config, params)` pairs or objects with
    `config` and `params`) with their default weights `alphas`."""

    outcome: Any = None
    process: Any = None
    guides: tuple = ()
    alphas: tuple[float, ...] = ()


@dataclasses.dataclass
class SearchResult:
    """A method's `answer` (canonical, None if unreadable), the `text` it chose,
    the `budget` it spent, and `extra` details (samples, scores, chain, ...)."""

    answer: Hashable | None
    text: str
    budget: Budget
    extra: dict = dataclasses.field(default_factory=dict)


METHODS: dict[str, Callable[..., SearchResult]] = {}


def register_method(name: str):
    """Decorator registering `fn(prompt, *, policy, scorers, task, n, rng, **opts)`."""

    def wrap(fn):
        METHODS[name] = fn
        return fn

    return wrap


def run_method(name: str, prompt: str, *, policy, scorers: Scorers, task, n: int,
               rng: np.random.Generator, **opts) -> SearchResult:
    """Run the method registered as `name` on one problem prompt."""
    if name not in METHODS:
        raise ValueError(f"unknown search method {name!r}; known: {sorted(METHODS)}")
    if n < 1:
        raise ValueError(f"{name}: n must be >= 1, got {n}")
    return METHODS[name](prompt, policy=policy, scorers=scorers, task=task, n=int(n), rng=rng,
                         **opts)


def reward_scorer(scorers: Scorers, reward: str) -> tuple[Any, str]:
    """(scorer, kind) for `reward` in auto / prm / orm; ValueError if it is missing."""
    if reward == "auto":
        reward = "prm" if scorers.process is not None else "orm"
    if reward not in ("prm", "orm"):
        raise ValueError(f"reward must be 'auto', 'prm' or 'orm', got {reward!r}")
    scorer = scorers.process if reward == "prm" else scorers.outcome
    if scorer is None:
        raise ValueError(f"reward {reward!r} needs a {'process' if reward == 'prm' else 'outcome'} "
                         "scorer, and none was given")
    return scorer, reward


def select_answer(how: str, answers: Sequence[Hashable], scores: np.ndarray | None, kind: str
                  ) -> selection.Selection:
    """`selection.select(how, ...)`; ORM scores become sigmoid weights for weighted votes."""
    if how == "weighted_best_of_n" and kind == "orm":
        scores = 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float64)))
    return selection.select(how, list(answers), scores)


def _sample_solutions(prompt, policy, n, rng, budget, temperature, max_new_tokens):
    return budget_lib.sample(policy, budget, [prompt], n, max_new_tokens=max_new_tokens,
                             temperature=temperature, stop_at_step=False, rng=rng)[0]


@register_method("majority")
def majority(prompt, *, policy, scorers, task, n, rng, temperature=1.0, max_new_tokens=64
             ) -> SearchResult:
    """Self-consistency: the most frequent answer of n samples (no reward model)."""
    del scorers
    budget = Budget()
    texts = [c.text for c in _sample_solutions(prompt, policy, n, rng, budget, temperature,
                                               max_new_tokens)]
    answers = [task.extract_answer(t) for t in texts]
    pick = selection.majority_vote(answers)
    return SearchResult(pick.answer, texts[pick.index], budget,
                        {"texts": texts, "answers": answers})


def _scored_vote(how, prompt, policy, scorers, task, n, rng, temperature, max_new_tokens, reward,
                 aggregation, separator) -> SearchResult:
    scorer, kind = reward_scorer(scorers, reward)
    budget = Budget()
    texts = [c.text for c in _sample_solutions(prompt, policy, n, rng, budget, temperature,
                                               max_new_tokens)]
    scores = budget_lib.solution_scores(scorer, budget, [prompt] * n, texts, kind=kind,
                                        aggregation=aggregation,
                                        separator=_separator(policy, separator))
    answers = [task.extract_answer(t) for t in texts]
    pick = select_answer(how, answers, scores, kind)
    return SearchResult(answers[pick.index], texts[pick.index], budget,
                        {"texts": texts, "answers": answers, "scores": scores.tolist()})


@register_method("best_of_n")
def best_of_n(prompt, *, policy, scorers, task, n, rng, temperature=1.0, max_new_tokens=64,
              reward="auto", aggregation="last", separator=None) -> SearchResult:
    """The sample with the highest reward among n."""
    return _scored_vote("best_of_n", prompt, policy, scorers, task, n, rng, temperature,
                        max_new_tokens, reward, aggregation, separator)


@register_method("weighted_best_of_n")
def weighted_best_of_n(prompt, *, policy, scorers, task, n, rng, temperature=1.0,
                       max_new_tokens=64, reward="auto", aggregation="last", separator=None
                       ) -> SearchResult:
    """The answer with the largest summed reward over n samples."""
    return _scored_vote("weighted_best_of_n", prompt, policy, scorers, task, n, rng, temperature,
                        max_new_tokens, reward, aggregation, separator)


def _tree_result(trace: beam_lib.SearchTrace, task, select: str) -> SearchResult:
    texts = [b.text for b in trace.beams]
    answers = [task.extract_answer(t) for t in texts]
    scores = np.asarray([b.score for b in trace.beams])
    pick = select_answer(select, answers, scores, "prm")
    return SearchResult(answers[pick.index], texts[pick.index], trace.budget,
                        {"texts": texts, "answers": answers, "scores": scores.tolist(),
                         "steps": trace.steps})


def _separator(policy, separator: str | None = None) -> str:
    """The step separator (PRMs read steps split on it): `separator` when given (the task's,
    e.g. tts passes `task.step_separator`), else the policy's `step_separator`, else "\\n"."""
    if separator is not None:
        if not isinstance(separator, str) or not separator:
            raise ValueError(f"separator must be a non-empty string, got {separator!r}")
        return separator
    return getattr(policy, "step_separator", "\n")


def _step_search(policy, temperature, max_new_tokens, step_tokens, max_steps, lookahead,
                 aggregation, separator=None):
    """Tree-search settings; steps are split on `separator` (default: the policy's)."""
    return beam_lib.StepSearch(temperature=temperature, step_tokens=step_tokens,
                               max_new_tokens=max_new_tokens, max_steps=max_steps,
                               lookahead=lookahead, aggregation=aggregation,
                               separator=_separator(policy, separator))


@register_method("beam_search")
def beam_search(prompt, *, policy, scorers, task, n, rng, width=4, temperature=1.0,
                max_new_tokens=64, step_tokens=32, max_steps=40, lookahead=0, aggregation="last",
                select="best_of_n", dedupe=True, separator=None) -> SearchResult:
    """PRM beam search with n beams of width min(width, n); the final pick over the
    finished beams is `select` (best_of_n = highest PRM score, weighted_best_of_n, majority)."""
    prm, _ = reward_scorer(scorers, "prm")
    trace = beam_lib.beam_search(
        prompt, policy=policy, prm=prm, n=n, width=min(width, n), rng=rng, dedupe=dedupe,
        settings=_step_search(policy, temperature, max_new_tokens, step_tokens, max_steps,
                              lookahead, aggregation, separator))
    return _tree_result(trace, task, select)


@register_method("dvts")
def dvts(prompt, *, policy, scorers, task, n, rng, width=4, temperature=1.0, max_new_tokens=64,
         step_tokens=32, max_steps=40, lookahead=0, aggregation="last", select="best_of_n",
         separator=None) -> SearchResult:
    """DVTS: n / min(width, n) greedy subtrees; the final pick over subtree results is `select`."""
    prm, _ = reward_scorer(scorers, "prm")
    trace = dvts_search(
        prompt, policy=policy, prm=prm, n=n, width=min(width, n), rng=rng,
        settings=_step_search(policy, temperature, max_new_tokens, step_tokens, max_steps,
                              lookahead, aggregation, separator))
    return _tree_result(trace, task, select)


@register_method("qalign")
def qalign(prompt, *, policy, scorers, task, n, rng, beta=1.0, burn_in=0.2, unit="token",
           reward="auto", aggregation="last", temperature=1.0, max_new_tokens=64, separator=None
           ) -> SearchResult:
    """QUEST chain of n states targeting p_LM · exp(r / beta); majority vote after burn-in
    (`burn_in` is the discarded fraction of the states)."""
    scorer, kind = reward_scorer(scorers, reward)
    chain = qalign_chain(prompt, policy=policy, scorer=scorer, n=n, rng=rng, beta=beta,
                         unit=unit, kind=kind, aggregation=aggregation, temperature=temperature,
                         max_new_tokens=max_new_tokens,
                         separator=_separator(policy, separator))
    answers = [task.extract_answer(y.text) for y in chain.states]
    i = chain_vote(answers, n, burn_in)
    return SearchResult(answers[i], chain.states[i].text, chain.budgets[-1],
                        {"answers": answers, "rewards": chain.rewards,
                         "acceptance_rate": chain.acceptance_rate, "chain": chain})


@register_method("genarm")
def genarm(prompt, *, policy, scorers, task, n, rng, alphas=None, temperature=0.5,
           max_new_tokens=64) -> SearchResult:
    """GenARM reward-guided decoding (`scorers.guides`, weights `alphas`, default
    `scorers.alphas`); n guided samples are combined by majority vote (n = 1 is the
    paper's setting, where the paper used alpha = 1 and temperature 0.5)."""
    if not scorers.guides:
        raise ValueError("genarm needs guide models in Scorers.guides")
    if not hasattr(policy, "with_guides"):
        raise TypeError(f"genarm needs a policy with with_guides (an LMPolicy), got "
                        f"{type(policy).__name__}")
    alphas = scorers.alphas if alphas is None else tuple(alphas)
    guided = policy.with_guides(scorers.guides, alphas)
    return majority(prompt, policy=guided, scorers=scorers, task=task, n=n, rng=rng,
                    temperature=temperature, max_new_tokens=max_new_tokens)
