"""Beam search, DVTS and best-of-N against closed forms, with a scripted policy and oracle verifiers.

The scripted policy writes arithmetic solutions one line at a time; each step is right
with probability q (or, in `right_at` mode, only in the sample with a given index of
each call). With the oracle PRM (1 until the first wrong step) the success rates of
beam search and DVTS have closed forms, and the token budgets can be counted by hand.
"""
import numpy as np
import pytest

from rewardlab.search import methods
from rewardlab.search.beam import Beam, StepSearch, beam_search, top_k
from rewardlab.search.dvts import dvts
from rewardlab.search.policy import Completion
from rewardlab.tasks import ArithmeticTask, arithmetic
from rewardlab.train.tts import ArithmeticOracle

TASK = ArithmeticTask()
PROBLEM = arithmetic.Problem(3, (("+", 4), ("*", 2)))  # Q:3+4*2 -> 3+4=7, 7*2=14, A:14
PROMPT = PROBLEM.prompt  # 8 characters


class StepPolicy:
    """One token per character (+1 for EOS). A right step writes the true result from the
    value so far; a wrong one writes result + 1. After the K steps: `A:<value>\\n`, then EOS.

    q: probability that a step is right (greedy, temperature 0: right iff q >= 0.5).
    right_at: if set, a step is right only in sample `right_at` of each call (deterministic).
    """

    def __init__(self, q=1.0, right_at=None):
        self.q, self.right_at = q, right_at

    def _line(self, prompt_and_text: str, right: bool) -> str:
        problem = arithmetic.parse_prompt(prompt_and_text.split("\n", 1)[0])
        lines = prompt_and_text.split("\n")[1:-1]  # complete lines after the prompt
        k = len(lines)
        if k > problem.num_ops:
            return ""  # EOS
        value = problem.start if k == 0 else int(lines[-1].rsplit("=", 1)[1])
        if k == problem.num_ops:
            return f"A:{value}\n"
        op, b = problem.ops[k]
        result = {"+": value + b, "-": value - b, "*": value * b}[op]
        return f"{value}{op}{b}={result if right else result + 1}\n"

    def _right(self, j, temperature, rng):
        if self.right_at is not None:
            return j == self.right_at
        return self.q >= 0.5 if temperature == 0 else rng.uniform() < self.q

    def sample(self, prompts, n, *, max_new_tokens, temperature, stop_at_step, rng):
        out = []
        for prompt in prompts:
            row = []
            for j in range(n):
                text, finished = "", False
                while True:
                    line = self._line(prompt + text, self._right(j, temperature, rng))
                    finished = line == ""
                    text += line
                    if finished or stop_at_step:
                        break
                tokens = len(text) + finished
                if tokens > max_new_tokens:
                    text, tokens, finished = text[:max_new_tokens], max_new_tokens, False
                ends = tuple(range(1, len(text) + 1)) + ((len(text),) if finished else ())
                row.append(Completion(text, tokens, finished, ends))
            out.append(row)
        return out


def _problems(num, k, seed=0):
    return arithmetic.generate_problems(num, seed=seed, num_ops=(k,), operand_max=20)


def test_step_policy_writes_the_task_format():
    c = StepPolicy(q=1.0).sample([PROMPT], 1, max_new_tokens=64, temperature=1.0,
                                 stop_at_step=False, rng=np.random.default_rng(0))[0][0]
    assert c.text == PROBLEM.solution and c.finished and c.num_tokens == len(c.text) + 1


def test_budgets_are_counted_by_hand():
    oracle, rng = ArithmeticOracle(), np.random.default_rng(0)
    scorers = methods.Scorers(outcome=oracle, process=oracle)
    kw = dict(policy=StepPolicy(q=1.0), scorers=scorers, task=TASK, rng=rng)
    # A full solution: "3+4=7\n7*2=14\nA:14\n" is 18 characters, + EOS = 19 tokens.
    r = methods.run_method("majority", PROMPT, n=2, **kw)
    assert (r.answer, r.budget.tokens_generated, r.budget.tokens_scored) == (14, 38, 0)
    r = methods.run_method("best_of_n", PROMPT, n=2, reward="orm", **kw)
    assert (r.budget.tokens_generated, r.budget.tokens_scored) == (38, 2 * (8 + 18))
    # Beam search, n = 2, width 2 (one survivor). Iterations generate 2 x 6, 2 x 7, 2 x 5
    # and 2 x 1 (EOS) tokens; duplicates are dropped before scoring, so the PRM reads the
    # prompt plus 1, 2, 3 steps (each step + separator) and finally both finished beams.
    r = methods.run_method("beam_search", PROMPT, n=2, width=2, **kw)
    assert r.answer == 14 and r.extra["steps"] == 4
    assert r.budget.to_dict() == {"tokens_generated": 12 + 14 + 10 + 2,
                                  "tokens_scored": 14 + 21 + 26 + 2 * 26,
                                  "policy_calls": 4, "scorer_calls": 4}
    r = methods.run_method("beam_search", PROMPT, n=2, width=2, dedupe=False, **kw)
    assert r.budget.tokens_scored == 2 * (14 + 21 + 26 + 26)
    # Lookahead 1 adds one greedy step per unfinished beam (7, 5, then EOS = 1 token)
    # and the PRM scores the longer rollouts (8+13, 8+18, 8+18).
    r = methods.run_method("beam_search", PROMPT, n=2, width=2, lookahead=1, **kw)
    assert r.budget.to_dict() == {"tokens_generated": 38 + 7 + 5 + 1,
                                  "tokens_scored": 21 + 26 + 26 + 2 * 26,
                                  "policy_calls": 7, "scorer_calls": 4}


@pytest.mark.parametrize("search", [beam_search, dvts])
def test_oracle_prm_finds_a_correct_solution_iff_one_is_reachable(search):
    """Only sample `right_at` of each call is right: with width 4 the right step is among
    the expansions iff right_at < 4 (the first iteration draws all n = 8 from the root)."""
    oracle = ArithmeticOracle()
    for right_at, reachable in ((0, True), (3, True), (5, False)):
        for problem in _problems(3, 3):
            trace = search(problem.prompt, policy=StepPolicy(right_at=right_at), prm=oracle, n=8,
                           width=4, rng=np.random.default_rng(0))
            best = top_k(trace.beams, 1)[0]
            assert TASK.is_correct(best.text, problem) == reachable, (right_at, problem)
            # plain sampling with the same policy is right in one sample out of 8 at most
            texts = StepPolicy(right_at=right_at).sample(
                [problem.prompt], 8, max_new_tokens=64, temperature=1.0, stop_at_step=False,
                rng=np.random.default_rng(0))[0]
            assert sum(TASK.is_correct(c.text, problem) for c in texts) <= 1


def _success_rate(method, problems, q, **opts):
    oracle = ArithmeticOracle()
    scorers = methods.Scorers(outcome=oracle, process=oracle)
    hits = [methods.run_method(method, p.prompt, policy=StepPolicy(q=q), scorers=scorers,
                               task=TASK, rng=np.random.default_rng(i), **opts).answer == p.answer
            for i, p in enumerate(problems)]
    return float(np.mean(hits))


def test_oracle_search_success_rates_match_closed_forms():
    """K = 3 steps each right with q = 1/2. One subtree of width M succeeds iff every
    depth has a right child: P1 = (1 - (1-q)^M)^K. Two independent subtrees: 1 - (1-P1)^2."""
    problems = _problems(600, 3, seed=1)
    q, m, k = 0.5, 2, 3
    p1 = (1 - (1 - q) ** m) ** k  # 0.4219
    tol = 4 * np.sqrt(0.25 / len(problems))  # 4 sigma
    assert abs(_success_rate("beam_search", problems, q, n=m, width=m) - p1) < tol
    assert abs(_success_rate("dvts", problems, q, n=2 * m, width=m) - (1 - (1 - p1) ** 2)) < tol
    # Plain sampling is right with probability q^K = 1/8 per sample.
    assert abs(_success_rate("majority", problems[:300], q, n=1) - q**k) < tol


def test_best_of_n_with_oracle_orm_is_pass_at_n():
    oracle = ArithmeticOracle()
    scorers = methods.Scorers(outcome=oracle, process=oracle)
    hits = []
    for i, p in enumerate(_problems(40, 3, seed=2)):
        # (A weighted vote with the ORM would map its 0/1 rewards through a sigmoid, as if
        # they were logits, so wrong answers would keep weight: only the PRM is used there.)
        for method, reward in (("best_of_n", "orm"), ("best_of_n", "prm"),
                               ("weighted_best_of_n", "prm")):
            r = methods.run_method(method, p.prompt, policy=StepPolicy(q=0.5), scorers=scorers,
                                   task=TASK, n=4, rng=np.random.default_rng(i), reward=reward,
                                   aggregation="min")
            pass_at_n = any(TASK.is_correct(t, p) for t in r.extra["texts"])
            assert TASK.is_correct(r.text, p) == pass_at_n
            hits.append(pass_at_n)
    assert 0 < np.mean(hits) < 1  # both outcomes occur


def test_top_k_is_stable_and_search_validates_its_inputs():
    beams = [Beam("a", score=0.5), Beam("b", score=0.9), Beam("c", score=0.5)]
    assert [b.text for b in top_k(beams, 2)] == ["b", "a"]
    oracle = ArithmeticOracle()
    with pytest.raises(ValueError, match="multiple of width"):
        beam_search(PROMPT, policy=StepPolicy(), prm=oracle, n=6, width=4,
                    rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs a process scorer"):
        methods.run_method("dvts", PROMPT, policy=StepPolicy(), scorers=methods.Scorers(),
                           task=TASK, n=4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown search method"):
        methods.run_method("mcts", PROMPT, policy=StepPolicy(), scorers=methods.Scorers(),
                           task=TASK, n=4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_steps"):
        StepSearch(max_steps=0)


def test_max_steps_one_is_best_of_n_over_full_solutions():
    oracle = ArithmeticOracle()
    trace = beam_search(PROMPT, policy=StepPolicy(q=0.5), prm=oracle, n=4, width=2,
                        rng=np.random.default_rng(0), settings=StepSearch(max_steps=1))
    assert len(trace.beams) == 4 and trace.budget.policy_calls == 1
    assert all(b.text.endswith("A:" + b.text.rsplit("=", 1)[1].split("\n")[0] + "\n")
               for b in trace.beams)
