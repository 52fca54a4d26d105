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

With a template that reveals steps (`check_reveal`), the judge's prompt need not show the
solution: each time the judge writes `reveal_after` (outside a tool call) the framework
writes step k's `check_reveal` as input, so the judge works out what a step should be
before it can read (or copy) what the solution wrote (`revealed_chains`).
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

__all__ = ["StepVerification", "verify_steps", "read_chain", "step_prompt_ids", "revealed_chains",
           "step_value"]


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


def step_value(step: str) -> str:
  """The value a step states: its text after the last `=`, else after its first `:`
  (an answer line `A:42`), else the whole step (stripped)."""
  step = step.strip()
  if "=" in step:
    return step.rpartition("=")[2].strip()
  return step.partition(":")[2].strip() if ":" in step else step


def revealed_chains(judge: JudgeModel, template: tmpl.JudgeTemplate, ids: Sequence[Sequence[int]],
                    steps_lists: Sequence[Sequence[str]], num_samples: int, *,
                    max_new_tokens: int, temperature: float, rng, tool: bool = False,
                    open_tag: str = "<calc>", close_tag: str = "</calc>"):
  """Chains (ids, samples of one prompt adjacent), generated-token masks and usage, for a
  template with `check_reveal`: whenever a chain's text ends with `template.reveal_after`
  (and not with a tool tag), the framework appends the next step's `check_reveal` (read,
  not generated). With `tool`, a chain ending in `close_tag` reads `=<value>` of the call
  (`model.evaluate_expression`; `=?` when it cannot be evaluated). A chain ends at EOS,
  after `max_new_tokens` generated tokens, or when it asks for a step past the last one
  or after it has written a no verdict."""
  import jax

  tok = judge.tokenizer
  marker = template.reveal_after
  marker_ids = tok.encode(marker)
  stop_tokens, stop_strings = (), ()
  if len(marker_ids) == 1:
    stop_tokens = tuple(marker_ids)
  else:
    stop_strings = (marker,)
  if tool and not close_tag.endswith(marker):
    stop_strings = stop_strings + (close_tag,)
  _, no = lm.verdict_sets(tok, template.yes, template.no)
  rows = [b for b in range(len(ids)) for _ in range(num_samples)]
  conts, generated = [[] for _ in rows], [[] for _ in rows]
  shown, usage = [0] * len(rows), Usage()
  active = list(range(len(rows)))
  while active:
    active = [r for r in active if sum(generated[r]) < max_new_tokens]
    if not active:
      break
    rng, key = jax.random.split(rng)
    outs, u = lm.sample(judge, [list(ids[rows[r]]) + conts[r] for r in active], 1,
                        max_new_tokens=max(max_new_tokens - sum(generated[r]) for r in active),
                        temperature=temperature, rng=key, stop_tokens=stop_tokens,
                        stop_strings=stop_strings)
    usage.tokens_read += u.tokens_read
    still = []
    for r, out in zip(active, outs):
      out = out[:max_new_tokens - sum(generated[r])]
      conts[r] += out
      generated[r] += [True] * len(out)
      usage.tokens_generated += len(out)
      if not out or out[-1] == tok.eos_id:
        continue
      text = decode_sampled(tok, conts[r])
      if tool and text.endswith(close_tag) and open_tag in text:
        value = lm.evaluate_expression(text[text.rindex(open_tag) + len(open_tag):-len(close_tag)])
        piece = tok.encode(f"={value}") if value is not None else lm._encode_unknown(tok)
      elif tool and text.endswith(open_tag):
        piece = []
      elif text.endswith(marker):
        steps = steps_lists[rows[r]]
        said_no = any(t in no for t, g in zip(conts[r], generated[r]) if g)
        if shown[r] >= len(steps) or said_no:
          continue
        step = str(steps[shown[r]]).strip()
        piece = tok.encode(template.check_reveal.format(index=shown[r] + 1, step=step,
                                                        value=step_value(step)))
        shown[r] += 1
      else:
        continue  # stopped by the token limit
      conts[r] += piece
      generated[r] += [False] * len(piece)
      usage.tokens_read += len(piece)
      still.append(r)
    active = still
  return conts, generated, usage


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
  elif template.check_reveal is not None:
    chains, generated, usage = revealed_chains(judge, template, ids, steps_lists, k,
                                               max_new_tokens=max_new_tokens,
                                               temperature=temperature, rng=rng, tool=tool)
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
