"""A generative step verifier drives test-time search unchanged: best-of-N, weighted
best-of-N, beam search and DVTS take a `StepJudgeScorer` as their process scorer, and
the verifier's read and generated tokens land in the search budget."""
import jax
import numpy as np
import pytest
from test_beam import PROMPT, TASK, StepPolicy

from rewardlab import models
from rewardlab.judges import arithmetic as judge_task
from rewardlab.judges import model as lm
from rewardlab.judges.model import JudgeModel
from rewardlab.judges.scorers import StepJudgeScorer
from rewardlab.search import methods
from rewardlab.search.methods import Scorers
from rewardlab.tasks import arithmetic

METHODS = ("best_of_n", "weighted_best_of_n", "beam_search", "dvts")


def _opts(method, width):
  return {"width": width} if method in ("beam_search", "dvts") else {}


@pytest.fixture(scope="module")
def random_judge():
  tok = judge_task.tokenizer()
  config = models.tiny_config(vocab_size=32, hidden_size=32, num_layers=1, num_heads=2,
                              num_kv_heads=2, intermediate_size=64, max_position_embeddings=128)
  return JudgeModel(config, models.init_params(config, jax.random.key(1)), tok)


@pytest.mark.parametrize("method", METHODS)
def test_search_runs_with_a_random_step_judge_and_counts_its_tokens(random_judge, method):
  scorer = StepJudgeScorer(random_judge, judge_task.TEMPLATE, num_samples=2, temperature=1.0,
                           max_new_tokens=24)
  res = methods.run_method(method, PROMPT, policy=StepPolicy(q=0.5), task=TASK, n=4,
                           rng=np.random.default_rng(0), scorers=Scorers(process=scorer),
                           max_new_tokens=40, **_opts(method, 2))
  assert res.budget.tokens_scored == scorer.tokens_scored > scorer.tokens_generated > 0
  assert res.budget.scorer_calls >= 1


class OracleJudge:
  """A scripted judge that verifies like the checker (`judge_task.chain_for`): in its
  chain (the prompt is the problem, each line's value is revealed after `>`) it writes
  each line as it should be and `>`, then `Y` and the next line when the revealed value
  is right, else `N` and EOS; its logits put +6 on the verdict it wrote and -6 on the
  other."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.y, self.n = tokenizer.token_to_id("Y"), tokenizer.token_to_id("N")

  def _continue(self, text: str) -> str:
    head, _, chain = text.partition("\n")
    expected = judge_task.expected_lines(arithmetic.parse_prompt(head))
    checks = [line for line in chain.split("\n") if line]
    if not checks:
      return expected[0] + ">"
    k = len(checks) - 1
    if checks[-1].rpartition(">")[2] != judge_task.written_value(expected[k]):
      return "N\n"
    return "Y\n" + (expected[k + 1] + ">" if k + 1 < len(expected) else "")

  def sample(self, judge, prompts, num_samples, **kwargs):
    chains = []
    for ids in prompts:
      text = self._continue(self.tokenizer.decode(ids))
      chain = self.tokenizer.encode(text) + ([] if text.endswith(">") else
                                             [self.tokenizer.eos_id])
      chains += [chain] * num_samples
    return chains, lm.Usage(sum(map(len, prompts)), sum(map(len, chains)))

  def logits_at(self, judge, sequences, positions, **kwargs):
    out = []
    for seq, pos in zip(sequences, positions):
      z = np.zeros((len(pos), self.tokenizer.vocab_size), np.float32)
      for r, q in enumerate(pos):
        z[r, seq[q + 1]], z[r, self.y + self.n - seq[q + 1]] = 6.0, -6.0
      out.append(z)
    return out, lm.Usage(sum(map(len, sequences)), 0)


@pytest.mark.parametrize("method", METHODS)
def test_search_with_an_oracle_step_judge_finds_the_right_answer(random_judge, method,
                                                                 monkeypatch):
  oracle = OracleJudge(random_judge.tokenizer)
  monkeypatch.setattr(lm, "sample", oracle.sample)
  monkeypatch.setattr(lm, "logits_at", oracle.logits_at)
  scorer = StepJudgeScorer(random_judge, judge_task.TEMPLATE)
  # only sample 2 of each call is right: the verifier must find it
  res = methods.run_method(method, PROMPT, policy=StepPolicy(right_at=2), task=TASK, n=4,
                           rng=np.random.default_rng(0), scorers=Scorers(process=scorer),
                           max_new_tokens=40, **_opts(method, 4))
  assert res.answer == 14
  assert scorer.unparsed == 0 and scorer.unjudged_steps == 0


def test_oracle_chain_probabilities_follow_the_checker(random_judge, monkeypatch):
  oracle = OracleJudge(random_judge.tokenizer)
  monkeypatch.setattr(lm, "sample", oracle.sample)
  monkeypatch.setattr(lm, "logits_at", oracle.logits_at)
  scorer = StepJudgeScorer(random_judge, judge_task.TEMPLATE)
  right, wrong = ["3+4=7", "7*2=14", "A:14"], ["3+4=7", "7*2=15", "A:15"]
  probs = scorer.score_steps([PROMPT, PROMPT], [right, wrong])
  p = 1 / (1 + np.exp(-12.0))
  np.testing.assert_allclose(probs[0], [p, p, p], rtol=1e-5)
  np.testing.assert_allclose(probs[1], [p, 1 - p, 0.0], rtol=1e-4, atol=1e-7)
