"""Pointwise and principle judges: one response at a time.

* `verdict_probabilities`: P(yes) at the verdict position (the token after the template's
  `answer_prefix`), from the logits of the yes / no forms; no sampling.
* `sample_critiques`: K sampled critiques per response, each parsed for its verdict (and
  the verdict's probability, read by re-scoring the critique up to the verdict word) or
  for its 1-10 score; unparseable critiques are NaN and counted.
* `principle_rewards` (RLBFF, OpenRubrics): `Σ_i w_i · P_i(yes)` over binary principle
  questions, the principle text being part of the prompt.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.judges import model as lm
from rewardlab.judges import templates as tmpl
from rewardlab.judges.model import JudgeModel, Usage

__all__ = ["Critiques", "verdict_probabilities", "sample_critiques", "principle_rewards",
           "prompt_text"]


def prompt_text(prompt) -> str:
  """A prompt as plain text (chat-message prompts are joined as `role: content` lines)."""
  if isinstance(prompt, str):
    return prompt
  return "\n".join(f"{m.role}: {m.content}" if hasattr(m, "role") else
                   f"{m['role']}: {m['content']}" for m in prompt)


def _fields_list(template, fields: Sequence[dict]) -> list[str]:
  out = []
  for i, f in enumerate(fields):
    try:
      out.append(template.user.format(**f))
    except KeyError as e:
      raise ValueError(f"judge template needs field {e} (item {i} has {sorted(f)})") from None
  return out


def probabilities_for(judge: JudgeModel, template: tmpl.JudgeTemplate, users: Sequence[str],
                      *, batch_size: int = 16) -> tuple[np.ndarray, Usage]:
  """P(yes) `[N]` after `render_prompt(user) + answer_prefix` for each user text."""
  tok = judge.tokenizer
  yes, no = lm.verdict_sets(tok, template.yes, template.no)
  ids = [lm.encode_prompt(tok, lm.render_prompt(tok, u, system=template.system,
                                                answer_prefix=template.answer_prefix))
         for u in users]
  logits, usage = lm.next_token_logits(judge, ids, batch_size=batch_size)
  return np.asarray(lm.verdict_probability_from_logits(logits, yes, no), np.float64), usage


def verdict_probabilities(judge: JudgeModel, prompts: Sequence, responses: Sequence[str],
                          template: tmpl.JudgeTemplate = tmpl.POINTWISE, *, batch_size: int = 16
                          ) -> tuple[np.ndarray, Usage]:
  """P(yes) `[N]` of each (prompt, response) at the verdict position, without sampling."""
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
  users = _fields_list(template, [{"prompt": prompt_text(p), "response": r}
                                  for p, r in zip(prompts, responses)])
  return probabilities_for(judge, template, users, batch_size=batch_size)


@dataclasses.dataclass
class Critiques:
  """K sampled critiques of N items. `verdicts` `[N, K]` 1 yes / 0 no / NaN unparsed;
  `probs` `[N, K]` P(yes) at each parsed verdict (NaN unparsed); `scores` `[N, K]` parsed
  1-10 scores (NaN unparsed; all NaN when the template has no score pattern);
  `unparsed` counts critiques with neither."""

  texts: list[list[str]]
  verdicts: np.ndarray
  probs: np.ndarray
  scores: np.ndarray
  unparsed: int
  usage: Usage


def critiques_for(judge: JudgeModel, template: tmpl.JudgeTemplate, users: Sequence[str], *,
                  num_samples: int, max_new_tokens: int, temperature: float, rng,
                  batch_size: int = 16) -> Critiques:
  """Sample `num_samples` critiques per user text (after the generation prompt, without the
  answer prefix) and parse them (see `Critiques`)."""
  tok = judge.tokenizer
  prompts = [lm.render_prompt(tok, u, system=template.system) for u in users]
  ids = [lm.encode_prompt(tok, p) for p in prompts]
  outs, usage = lm.sample(judge, ids, num_samples, max_new_tokens=max_new_tokens,
                          temperature=temperature, rng=rng)
  n, k = len(users), int(num_samples)
  texts = [[decode_sampled(tok, outs[i * k + s]) for s in range(k)] for i in range(n)]
  verdicts, probs, scores = (np.full((n, k), np.nan) for _ in range(3))
  contexts, where = [], []
  for i in range(n):
    for s in range(k):
      text = texts[i][s]
      if template.verdict_pattern is not None:
        verdict, start = tmpl.parse_verdict(template, text)
        if verdict is not None:
          verdicts[i, s] = float(verdict)
          contexts.append(lm.encode_prompt(tok, prompts[i] + text[:start].rstrip()))
          where.append((i, s))
      if template.score_pattern is not None:
        score = tmpl.parse_score(template, text)
        if score is not None:
          scores[i, s] = score
  if contexts:  # the verdict's probability: re-read the critique up to the verdict word
    yes, no = lm.verdict_sets(tok, template.yes, template.no)
    logits, u = lm.next_token_logits(judge, contexts, batch_size=batch_size)
    usage.add(u)
    for (i, s), p in zip(where, np.asarray(lm.verdict_probability_from_logits(logits, yes, no))):
      probs[i, s] = p
  unparsed = int(np.sum(np.isnan(verdicts) & np.isnan(scores)))
  return Critiques(texts, verdicts, probs, scores, unparsed, usage)


def sample_critiques(judge: JudgeModel, prompts: Sequence, responses: Sequence[str],
                     template: tmpl.JudgeTemplate = tmpl.POINTWISE, *, num_samples: int = 1,
                     max_new_tokens: int = 128, temperature: float = 1.0, rng,
                     batch_size: int = 16) -> Critiques:
  """K sampled critiques of each (prompt, response), parsed (see `Critiques`)."""
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
  users = _fields_list(template, [{"prompt": prompt_text(p), "response": r}
                                  for p, r in zip(prompts, responses)])
  return critiques_for(judge, template, users, num_samples=num_samples,
                       max_new_tokens=max_new_tokens, temperature=temperature, rng=rng,
                       batch_size=batch_size)


def principle_rewards(judge: JudgeModel, prompts: Sequence, responses: Sequence[str],
                      principles: Sequence[str], weights: Sequence[float] | None = None,
                      template: tmpl.JudgeTemplate = tmpl.PRINCIPLE, *, batch_size: int = 16
                      ) -> tuple[np.ndarray, np.ndarray, Usage]:
  """Rewards `[N]` = `Σ_i w_i · p_i(yes)`, the per-principle probabilities `[N, P]`, usage.

  Default weights are 1 / P each (the reward is then the mean satisfied share).
  """
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
  if not principles:
    raise ValueError("principle_rewards needs at least one principle")
  weights = np.full(len(principles), 1.0 / len(principles)) if weights is None else \
      np.asarray(weights, np.float64)
  if weights.shape != (len(principles),):
    raise ValueError(f"{len(weights)} weights for {len(principles)} principles")
  users = _fields_list(template, [{"prompt": prompt_text(p), "response": r, "principle": q}
                                  for p, r in zip(prompts, responses) for q in principles])
  probs, usage = probabilities_for(judge, template, users, batch_size=batch_size)
  probs = probs.reshape(len(prompts), len(principles))
  return probs @ weights, probs, usage
