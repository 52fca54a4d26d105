"""Judges behind the scorer protocols of test-time search (`rewardlab.search.policy`).

`StepJudgeScorer` is a process scorer (`score_steps(prompts, steps_lists)` -> per-step
probabilities) and `PointwiseJudgeScorer` an outcome scorer (`score(prompts,
completions)` -> P(yes)), so best-of-N, weighted best-of-N, beam search and DVTS run with
a judge unchanged. Their `tokens_scored` counter holds everything the judge spent: tokens
it read (prompts, re-scored chains, tool results) plus tokens it generated (its chains),
so a search `Budget` counts the verifier's compute; `tokens_generated` and `unparsed`
are also kept for reports.

A step no chain judged (NaN, see `rewardlab.judges.steps`) cannot be ranked by search;
the scorer gives it `unjudged_score` (default 0: no credit for what was not verified)
and counts it in `unjudged_steps`.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from rewardlab.judges import aggregate
from rewardlab.judges import templates as tmpl
from rewardlab.judges.model import JudgeModel
from rewardlab.judges.pointwise import sample_critiques, verdict_probabilities
from rewardlab.judges.steps import verify_steps

__all__ = ["StepJudgeScorer", "PointwiseJudgeScorer"]


class _Counters:
  def __init__(self, seed: int):
    self.tokens_scored = 0
    self.tokens_generated = 0
    self.unparsed = 0
    self._rng = jax.random.key(seed)

  def _next_key(self):
    self._rng, key = jax.random.split(self._rng)
    return key

  def _count(self, usage, unparsed: int) -> None:
    self.tokens_scored += usage.total
    self.tokens_generated += usage.tokens_generated
    self.unparsed += unparsed


class StepJudgeScorer(_Counters):
  """A generative step verifier as a process scorer (K chains per solution, averaged)."""

  def __init__(self, judge: JudgeModel, template: tmpl.JudgeTemplate = tmpl.STEPS, *,
               num_samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 256,
               tool: bool = False, unjudged_score: float = 0.0, seed: int = 0,
               batch_size: int = 16):
    super().__init__(seed)
    self.judge, self.template = judge, template
    self.num_samples, self.temperature = int(num_samples), float(temperature)
    self.max_new_tokens, self.tool = int(max_new_tokens), bool(tool)
    self.unjudged_score, self.batch_size = float(unjudged_score), int(batch_size)
    self.unjudged_steps = 0

  def verify(self, prompts: Sequence, steps_lists: Sequence[Sequence[str]]):
    """The full `StepVerification` (chains, per-chain probabilities), counted."""
    out = verify_steps(self.judge, prompts, steps_lists, self.template,
                       num_samples=self.num_samples, max_new_tokens=self.max_new_tokens,
                       temperature=self.temperature, rng=self._next_key(), tool=self.tool,
                       batch_size=self.batch_size)
    self._count(out.usage, out.unparsed)
    return out

  def score_steps(self, prompts: Sequence, steps_lists: Sequence[Sequence[str]]
                  ) -> list[np.ndarray]:
    out = self.verify(prompts, steps_lists)
    probs = []
    for p in out.probs:
      missing = np.isnan(p)
      self.unjudged_steps += int(missing.sum())
      probs.append(np.where(missing, self.unjudged_score, p))
    return probs


class PointwiseJudgeScorer(_Counters):
  """A pointwise judge as an outcome scorer.

  `num_samples=0`: P(yes) at the verdict position (no sampling). K >= 1: K sampled
  critiques aggregated by `aggregation` (`mean_probability`, `majority`, `score_vote`;
  the template must then have a verdict or score pattern). An item none of whose
  critiques parsed gets `unparsed_score` (default 0) and is counted in `unparsed`.
  """

  def __init__(self, judge: JudgeModel, template: tmpl.JudgeTemplate = tmpl.POINTWISE, *,
               num_samples: int = 0, aggregation: str = "mean_probability",
               temperature: float = 1.0, max_new_tokens: int = 128,
               unparsed_score: float = 0.0, seed: int = 0, batch_size: int = 16):
    super().__init__(seed)
    if aggregation not in aggregate.AGGREGATORS:
      raise ValueError(f"unknown aggregation {aggregation!r}; "
                       f"known: {sorted(aggregate.AGGREGATORS)}")
    self.judge, self.template = judge, template
    self.num_samples, self.aggregation = int(num_samples), aggregation
    self.temperature, self.max_new_tokens = float(temperature), int(max_new_tokens)
    self.unparsed_score, self.batch_size = float(unparsed_score), int(batch_size)
    self.unscored_items = 0

  def score(self, prompts: Sequence, completions: Sequence[str]) -> np.ndarray:
    if self.num_samples == 0:
      probs, usage = verdict_probabilities(self.judge, prompts, completions, self.template,
                                           batch_size=self.batch_size)
      self._count(usage, 0)
      return probs
    crit = sample_critiques(self.judge, prompts, completions, self.template,
                            num_samples=self.num_samples, max_new_tokens=self.max_new_tokens,
                            temperature=self.temperature, rng=self._next_key(),
                            batch_size=self.batch_size)
    self._count(crit.usage, crit.unparsed)
    source = {"mean_probability": crit.probs, "majority": crit.verdicts,
              "score_vote": crit.scores}[self.aggregation]
    scores = aggregate.AGGREGATORS[self.aggregation](source)
    missing = np.isnan(scores)
    self.unscored_items += int(missing.sum())
    return np.where(missing, self.unparsed_score, scores)
