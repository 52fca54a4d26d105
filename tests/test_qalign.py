"""QAlign: the QUEST chain converges to p_LM · exp(r / beta) on a small discrete space."""
import itertools
import math

import numpy as np
import pytest

from rewardlab.search.policy import Completion
from rewardlab.search.qalign import chain_vote, qalign_chain, resample_starts

PROMPT = "X:"
MAX_SYMBOLS = 3


class ToyLM:
    """Token-level LM over `symbols` + EOS, one token per character, at most 3 symbols
    (EOS is forced after the third). The next-token law depends on the last symbol."""

    def __init__(self, symbols):
        self.symbols = symbols

    def probs(self, prefix: str) -> dict:
        if len(prefix) == MAX_SYMBOLS:
            return {None: 1.0}
        s0, s1 = self.symbols
        if prefix.endswith(s0):
            return {s0: 0.5, s1: 0.3, None: 0.2}
        return {s0: 0.3, s1: 0.45, None: 0.25}

    def p(self, y: str) -> float:
        """p_LM of the complete response y (its symbols, then EOS)."""
        out = 1.0
        for t in range(len(y) + 1):
            out *= self.probs(y[:t])[y[t] if t < len(y) else None]
        return out

    def sample(self, prompts, n, *, max_new_tokens, temperature, stop_at_step, rng):
        assert temperature == 1.0 and not stop_at_step
        out = []
        for prompt in prompts:
            start, row = prompt[len(PROMPT):], []
            for _ in range(n):
                text, finished = "", False
                while len(text) < max_new_tokens:
                    law = self.probs(start + text)
                    pick = list(law)[rng.choice(len(law), p=list(law.values()))]
                    if pick is None:
                        finished = True
                        break
                    text += pick
                tokens = len(text) + finished
                ends = tuple(range(1, len(text) + 1)) + ((len(text),) if finished else ())
                row.append(Completion(text, tokens, finished, ends))
            out.append(row)
        return out


class CountScorer:
    """Outcome reward r(y) = sum of per-symbol weights; counts one token per character."""

    def __init__(self, weights):
        self.weights, self.tokens_scored = weights, 0

    def r(self, y: str) -> float:
        return sum(self.weights[c] for c in y)

    def score(self, prompts, completions):
        self.tokens_scored += sum(len(p) + len(c) for p, c in zip(prompts, completions))
        return np.asarray([self.r(c) for c in completions])


def _target(lm: ToyLM, scorer: CountScorer, beta: float) -> dict:
    space = ["".join(s) for k in range(MAX_SYMBOLS + 1)
             for s in itertools.product(lm.symbols, repeat=k)]
    weights = {y: lm.p(y) * math.exp(scorer.r(y) / beta) for y in space}
    total = sum(weights.values())
    return {y: w / total for y, w in weights.items()}


def _tv(chain, target: dict, burn: int) -> float:
    texts = [s.text for s in chain.states[burn:]]
    freq = {y: texts.count(y) / len(texts) for y in target}
    assert set(texts) <= set(target)
    return 0.5 * sum(abs(freq[y] - target[y]) for y in target)


@pytest.mark.parametrize("unit, symbols, beta", [("token", "ab", 1.0), ("token", "ab", 0.5),
                                                 ("step", "a\n", 1.0)])
def test_chain_converges_to_the_tilted_distribution(unit, symbols, beta):
    lm = ToyLM(symbols)
    scorer = CountScorer({symbols[0]: -0.6, symbols[1]: 0.9})
    target = _target(lm, scorer, beta)
    chain = qalign_chain(PROMPT, policy=lm, scorer=scorer, n=15_000, rng=np.random.default_rng(0),
                         beta=beta, unit=unit, max_new_tokens=MAX_SYMBOLS + 1)
    assert _tv(chain, target, burn=500) < 0.05
    # The test can tell the target from the untilted LM distribution.
    plain = {y: lm.p(y) for y in target}
    assert 0.5 * sum(abs(plain[y] - target[y]) for y in target) > 0.1
    assert 0.2 < chain.acceptance_rate < 1.0


def test_budget_of_a_two_state_chain_by_hand():
    """A policy that always writes "ab" + EOS (3 tokens): the proposal resamples from a
    uniform index i in {0, 1, 2}, so it generates 3 - i tokens; each reward call reads
    prompt + text = 4 characters."""

    class Fixed:
        def sample(self, prompts, n, *, max_new_tokens, **_):
            done = prompts[0][len(PROMPT):]
            text = "ab"[len(done):]
            return [[Completion(text, len(text) + 1, True,
                                tuple(range(1, len(text) + 1)) + (len(text),))] * n]

    scorer = CountScorer({"a": 0.0, "b": 0.0})
    chain = qalign_chain(PROMPT, policy=Fixed(), scorer=scorer, n=2,
                         rng=np.random.default_rng(0), max_new_tokens=8)
    i = int(np.random.default_rng(0).integers(3))
    assert [s.text for s in chain.states] == ["ab", "ab"] and chain.accepted == [True]
    assert chain.budgets[0].to_dict() == {"tokens_generated": 3, "tokens_scored": 4,
                                          "policy_calls": 1, "scorer_calls": 1}
    assert chain.budgets[1].to_dict() == {"tokens_generated": 3 + 3 - i, "tokens_scored": 8,
                                          "policy_calls": 2, "scorer_calls": 2}


def test_resample_starts_by_unit():
    y = Completion("1+2=3\n3*2=6\n", 13, True, tuple(range(1, 13)) + (12,))
    assert resample_starts(y, "token") == list(range(13))
    assert resample_starts(y, "step") == [0, 6, 12]  # line starts, then the EOS unit
    with pytest.raises(ValueError, match="token_ends"):
        resample_starts(Completion("ab", 2, False), "token")
    with pytest.raises(ValueError, match="unit"):
        resample_starts(y, "word")


def test_chain_vote_discards_burn_in_and_breaks_ties_by_first_seen():
    answers = [1, 2, 2, 3, 3, 3]
    assert chain_vote(answers, 6, 0.5) == 3  # [3, 3, 3]
    assert chain_vote(answers, 4, 0.5) == 2  # [2, 3]: tie, 2 first
    assert chain_vote(answers, 6, 0.0) == 3  # 3 has 3 votes
    assert chain_vote(answers, 1, 0.9) == 0  # one state is always kept
    with pytest.raises(ValueError, match="burn_in"):
        chain_vote(answers, 6, 1.0)
