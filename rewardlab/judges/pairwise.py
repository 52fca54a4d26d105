"""Pairwise judging in both orders, so that position bias cancels.

For a pair (A, B) the judge is asked twice: shown (A, B) it gives q1 = P(first shown
wins), shown (B, A) it gives q2. Then `p(A > B) = (q1 + 1 - q2) / 2`, and the pair is
position-consistent when the same response is preferred in both orders (SPECS §6).
q comes from the verdict tokens' logits at the verdict position (`preferences`), or, with
K sampled critiques per order, from the share of parsed verdicts for the first shown
(`sampled_preferences`; unparseable critiques are counted and left out).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rewardlab.judges import aggregate
from rewardlab.judges import templates as tmpl
from rewardlab.judges.model import JudgeModel, Usage
from rewardlab.judges.pointwise import _fields_list, critiques_for, probabilities_for, prompt_text

__all__ = ["Preferences", "preferences", "sampled_preferences"]


@dataclasses.dataclass
class Preferences:
  """`p_a` `[N]` debiased P(A > B); `q1`, `q2` `[N]` P(first shown wins) in orders (A, B)
  and (B, A); `consistent` `[N]` bool; `unparsed` critiques (sampled judging only)."""

  p_a: np.ndarray
  q1: np.ndarray
  q2: np.ndarray
  consistent: np.ndarray
  unparsed: int
  usage: Usage

  @property
  def position_consistency(self) -> float:
    return float(np.mean(self.consistent)) if self.consistent.size else float("nan")


def _both_orders(template, prompts, a, b) -> list[str]:
  if not len(prompts) == len(a) == len(b):
    raise ValueError(f"{len(prompts)} prompts, {len(a)} A responses, {len(b)} B responses")
  fields = [{"prompt": prompt_text(p), "response_a": x, "response_b": y}
            for p, x, y in zip(prompts, a, b)]
  fields += [{"prompt": prompt_text(p), "response_a": y, "response_b": x}
             for p, x, y in zip(prompts, a, b)]
  return _fields_list(template, fields)


def _result(q, unparsed, usage) -> Preferences:
  n = len(q) // 2
  q1, q2 = q[:n], q[n:]
  return Preferences(aggregate.debiased_preference(q1, q2), q1, q2,
                     aggregate.position_consistent(q1, q2), unparsed, usage)


def preferences(judge: JudgeModel, prompts: Sequence, a: Sequence[str], b: Sequence[str],
                template: tmpl.JudgeTemplate = tmpl.PAIRWISE, *, batch_size: int = 16
                ) -> Preferences:
  """Debiased P(A > B) from the verdict probabilities in both orders (no sampling)."""
  q, usage = probabilities_for(judge, template, _both_orders(template, prompts, a, b),
                               batch_size=batch_size)
  return _result(q, 0, usage)


def sampled_preferences(judge: JudgeModel, prompts: Sequence, a: Sequence[str],
                        b: Sequence[str], template: tmpl.JudgeTemplate = tmpl.PAIRWISE, *,
                        num_samples: int, max_new_tokens: int = 128, temperature: float = 1.0,
                        rng, batch_size: int = 16) -> Preferences:
  """Debiased P(A > B) from K sampled critiques per order: q = share of parsed verdicts
  for the first shown (majority of verdicts); NaN when no critique of an order parsed."""
  crit = critiques_for(judge, template, _both_orders(template, prompts, a, b),
                       num_samples=num_samples, max_new_tokens=max_new_tokens,
                       temperature=temperature, rng=rng, batch_size=batch_size)
  return _result(aggregate.majority_verdict(crit.verdicts), crit.unparsed, crit.usage)
