"""Step verification by a generative judge (ThinkPRM, GenPRM).

The judge reads a problem and a solution split into steps and writes a verification
chain that judges every step in turn. The k-th verdict token it generates (a token of
the template's yes or no forms) is its verdict on step k; the step's probability is
`P(yes)` from the logits at that position (`verdict_probability_from_logits`), read by
one forward pass over the prompt and the chain. The first step judged incorrect ends
the chain: later steps count as incorrect (probability 0, the ProcessBench convention).
A chain that ends (EOS or the token limit) before judging every step without having
judged one incorrect leaves the rest unjudged: NaN, and the chain is counted as
unparsed, never guessed.

With K sampled chains (judge test-time scaling) a step's probability is the mean over
the chains that judged it. With a calculator (`tool=True`) the chain may write
`<calc>expr</calc>` and reads `=value` before going on (`model.sample_with_tool`); the
tool's tokens are read, not generated, and are never taken for verdicts.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.judges import aggregate
from rewardlab.judges import model as lm
from rewardlab.judges import templates as tmpl
from rewardlab.judges.model import JudgeModel, Usage
from rewardlab.judges.pointwise import prompt_text

__all__ = ["StepVerification", "verify_steps", "read_chain", "step_prompt_ids"]


@dataclasses.dataclass
class StepVerification:
  """`probs[b]` `[K_b]` per-step P(correct) over the chains (NaN = judged by none);
  `samples[b]` `[S, K_b]` per chain; `chains[b]` the S chain texts; `unparsed` chains that
  stopped before judging every step; `usage` tokens read and generated."""

  probs: list[np.ndarray]
  samples: list[np.ndarray]
  chains: list[list[str]]
  unparsed: int
  usage: Usage


def step_prompt_ids(judge: JudgeModel, template: tmpl.JudgeTemplate, prompt, steps) -> list[int]:
  user = template.user.format(prompt=prompt_text(prompt), steps=tmpl.format_steps(template, steps))
  return lm.encode_prompt(judge.tokenizer, lm.render_prompt(
      judge.tokenizer, user, system=template.system, answer_prefix=template.answer_prefix))


def read_chain(chain: Sequence[int], generated: Sequence[bool], num_steps: int,
               yes_ids: Sequence[int], no_ids: Sequence[int]) -> tuple[list[int], bool]:
  """Indices in `chain` of the verdict tokens of steps 1..k (k <= num_steps), and whether
  the chain ended on an incorrect verdict. Only generated tokens count."""
  yes, no = set(yes_ids), set(no_ids)
  where = []
  for i, (t, g) in enumerate(zip(chain, generated)):
    if not g or (t not in yes and t not in no):
      continue
    where.append(i)
    if t in no:
      return where, True
    if len(where) == num_steps:
      break
  return where, False


def _scaffolded_chains(judge, template, ids, steps_lists, num_samples, yes, no, *,
                       max_new_tokens, temperature, rng):
  """Chains in which the framework writes `template.check_prefix` for each step (as input)
  and the judge writes the rest of that step's check up to its verdict token; a newline
  (input) follows a yes verdict and the next step's prefix is given; a no verdict, EOS or
  `max_new_tokens` generated tokens end the chain."""
  import jax

  tok = judge.tokenizer
  rows = [b for b in range(len(ids)) for _ in range(num_samples)]
  chains, generated = [[] for _ in rows], [[] for _ in rows]
  step, usage = [0] * len(rows), Usage()
  newline = tok.encode("\n")
  active = list(range(len(rows)))
  while active:
    for r in active:
      text = template.check_prefix.format(index=step[r] + 1, step=steps_lists[rows[r]][step[r]])
      piece = tok.encode(text)
      chains[r] += piece
      generated[r] += [False] * len(piece)
      usage.tokens_read += len(piece)
    rng, key = jax.random.split(rng)
    room = [max_new_tokens - sum(generated[r]) for r in active]
    outs, u = lm.sample(judge, [ids[rows[r]] + chains[r] for r in active], 1,
                        max_new_tokens=max(room), temperature=temperature, rng=key,
                        stop_tokens=tuple(yes) + tuple(no))
    usage.tokens_read += u.tokens_read
    still = []
    for r, out, left in zip(active, outs, room):
      out = out[:left]
      chains[r] += out
      generated[r] += [True] * len(out)
      usage.tokens_generated += len(out)
      if out and out[-1] in yes and step[r] + 1 < len(steps_lists[rows[r]]) and left > len(out):
        chains[r] += newline
        generated[r] += [False] * len(newline)
        step[r] += 1
        still.append(r)
    active = still
  return chains, generated, usage


def verify_steps(judge: JudgeModel, prompts: Sequence, steps_lists: Sequence[Sequence[str]],
                 template: tmpl.JudgeTemplate = tmpl.STEPS, *, num_samples: int = 1,
                 max_new_tokens: int = 256, temperature: float = 0.0, rng=None,
                 tool: bool = False, scaffold: bool = False, batch_size: int = 16
                 ) -> StepVerification:
  """Verification chains for each (prompt, steps) and the per-step probabilities.

  `scaffold=True` (needs `template.check_prefix`): the framework writes each step's check
  prefix and the judge completes each check (GenPRM-style step-by-step format) instead of
  writing the whole chain itself.
  """
  import jax

  if len(prompts) != len(steps_lists):
    raise ValueError(f"{len(prompts)} prompts for {len(steps_lists)} step lists")
  tok = judge.tokenizer
  yes, no = lm.verdict_sets(tok, template.yes, template.no)
  rng = jax.random.key(0) if rng is None else rng
  ids = [step_prompt_ids(judge, template, p, s) for p, s in zip(prompts, steps_lists)]
  k = int(num_samples)
  if not ids:
    return StepVerification([], [], [], 0, Usage())
  if scaffold:
    if tool or template.check_prefix is None:
      raise ValueError("scaffold=True needs template.check_prefix and no tool")
    chains, generated, usage = _scaffolded_chains(
        judge, template, ids, steps_lists, k, yes, no, max_new_tokens=max_new_tokens,
        temperature=temperature, rng=rng)
  elif tool:
    chains, generated, usage = lm.sample_with_tool(judge, ids, k, max_new_tokens=max_new_tokens,
                                                   temperature=temperature, rng=rng)
  else:
    chains, usage = lm.sample(judge, ids, k, max_new_tokens=max_new_tokens,
                              temperature=temperature, rng=rng)
    generated = [[True] * len(c) for c in chains]
  reads, seqs, positions = [], [], []
  for r, (chain, gen) in enumerate(zip(chains, generated)):
    b = r // k
    where, ended = read_chain(chain, gen, len(steps_lists[b]), yes, no)
    reads.append((where, ended))
    seqs.append(ids[b] + list(chain))
    positions.append([len(ids[b]) + i - 1 for i in where])
  todo = [r for r in range(len(chains)) if positions[r]]
  logits, u = lm.logits_at(judge, [seqs[r] for r in todo], [positions[r] for r in todo],
                           batch_size=batch_size)
  usage.add(u)
  step_p = {r: np.asarray(lm.verdict_probability_from_logits(x, yes, no), np.float64)
            for r, x in zip(todo, logits)}
  samples, unparsed = [], 0
  for b, steps in enumerate(steps_lists):
    rows = np.full((k, len(steps)), np.nan)
    for s in range(k):
      r = b * k + s
      where, ended = reads[r]
      rows[s, :len(where)] = step_p.get(r, np.zeros(0))
      if ended:
        rows[s, len(where):] = 0.0
      elif len(where) < len(steps):
        unparsed += 1
    samples.append(rows)
  probs = [aggregate.mean_probability(rows.T) if rows.size else np.zeros(0) for rows in samples]
  texts = [[decode_sampled(tok, [t for t, g in zip(chains[b * k + s], generated[b * k + s])])
            for s in range(k)] for b in range(len(steps_lists))]
  return StepVerification(probs, samples, texts, unparsed, usage)
