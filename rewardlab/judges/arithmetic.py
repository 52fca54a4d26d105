"""Verification chains on the synthetic arithmetic task, written by its checker.

The judge reads `Q:<problem>\\n` and the solution's lines, then writes one check per
line: the solution's line copied, `>`, the value the line should have (recomputed from the
problem; the answer for the `A:` line), then its verdict `Y` or `N` and a newline. Putting
the written line next to the recomputed value makes the verdict a comparison of nearby
text. The first `N` ends the chain (later lines are wrong by convention); after the answer
line's check the chain ends with EOS:

    Q:37+45*3\\n37+45=82\\n82*3=264\\nA:264\\n     <- judge prompt (problem + solution)
    37+45=82>82Y\\n82*3=264>246N\\n              <- verification chain

With the calculator (`tool=True`) the value of an operation line is asked for,
`82*3=264><calc>82*3</calc>=246N`, and the `=246` is the tool's answer (read, not
generated). The characters of the chains extend the task's alphabet (`VERIFIER_ALPHABET`);
a judge is a policy whose vocabulary was extended with them (`extend_vocabulary`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.judges.templates import JudgeTemplate
from rewardlab.tasks import arithmetic

__all__ = ["VERIFIER_ALPHABET", "TEMPLATE", "tokenizer", "expected_lines", "chain_for",
           "chain_verdicts", "value_errors", "first_wrong_line", "first_error_of_chain", "solution_steps",
           "extend_vocabulary", "OPEN_TAG", "CLOSE_TAG"]

OPEN_TAG, CLOSE_TAG = "<calc>", "</calc>"
# Verdicts Y / N and the characters of the calculator tags (the task's `A` is upper case).
VERIFIER_ALPHABET = arithmetic.ALPHABET + "YN<>/cal"

TEMPLATE = JudgeTemplate(user="{prompt}{steps}", yes=("Y",), no=("N",), step_format="{step}\n",
                         check_prefix="{step}>")


def tokenizer() -> CharTokenizer:
  """The judge's character tokenizer: the task's ids first, then the verifier's characters."""
  return CharTokenizer(VERIFIER_ALPHABET)


def expected_lines(problem: arithmetic.Problem) -> list[str]:
  """The K right step lines and the right answer line `A:<answer>`."""
  return list(problem.steps) + [f"A:{problem.answer}"]


def _check(problem: arithmetic.Problem, steps: Sequence[str], k: int, tool: bool) -> str:
  """Line k's check: the written line, `>`, the value it should have (a line past the
  answer line should not exist: nothing follows the `>`)."""
  lines = expected_lines(problem)
  if k >= len(lines):
    return f"{steps[k].strip()}>"
  expr, _, value = lines[k].rpartition("=") if k < problem.num_ops else ("", "", lines[k][2:])
  if tool and k < problem.num_ops:
    return f"{steps[k].strip()}>{OPEN_TAG}{expr}{CLOSE_TAG}={value}"
  return f"{steps[k].strip()}>{value}"


def first_wrong_line(problem: arithmetic.Problem, steps: Sequence[str]) -> int:
  """The first line that differs from the expected line at its index (a line past the
  answer line is wrong), -1 when none does. On complete solutions this is
  `arithmetic.first_wrong_step` (up to spacing and leading zeros, which it forgives); on a
  partial solution (beam search) -1 means "no error so far"."""
  lines = expected_lines(problem)
  for k, step in enumerate(steps):
    if k >= len(lines) or step.strip() != lines[k]:
      return k
  return -1


def chain_for(problem: arithmetic.Problem, steps: Sequence[str], *, tool: bool = False) -> str:
  """The checker's verification chain of a solution's lines (whole or partial): each line's
  check and verdict (`first_wrong_line`), ending after the first `N`."""
  first = first_wrong_line(problem, steps)
  judged = len(steps) if first < 0 else first + 1
  return "".join(_check(problem, steps, k, tool) + ("N" if k == first else "Y") + "\n"
                 for k in range(judged))


def value_errors(problem: arithmetic.Problem, chain: str) -> int:
  """Checks in a chain whose recomputed value (after `>`, or the tool's `=value`) differs
  from the value the line should have: the verifier's own arithmetic (or reading) errors."""
  lines = expected_lines(problem)
  errors = 0
  for k, line in enumerate(l for l in chain.split("\n") if ">" in l):
    if k >= len(lines):
      break
    value = line.split(">", 1)[1].rstrip("YN")
    value = value.rsplit("=", 1)[1] if CLOSE_TAG in value else value
    errors += value != lines[k].rpartition("=")[2] if k < problem.num_ops else value != lines[k][2:]
  return errors


def chain_verdicts(chain: str) -> list[bool]:
  """The Y / N verdicts of a chain text, in order, up to and including the first N."""
  out = []
  for ch in chain:
    if ch in "YN":
      out.append(ch == "Y")
      if ch == "N":
        break
  return out


def first_error_of_chain(chain: str, num_steps: int) -> int | None:
  """The first wrong step a chain claims (-1: all right), None if it judged too few."""
  verdicts = chain_verdicts(chain)
  if verdicts and not verdicts[-1]:
    return len(verdicts) - 1
  return -1 if len(verdicts) >= num_steps else None


def extend_vocabulary(config, params, vocab_size: int, rng, *, max_positions: int | None = None,
                      scale: float = 0.02):
  """A policy's (config, params) with the vocabulary grown to `vocab_size` (new embedding
  rows and unembedding columns drawn from N(0, scale^2); existing ids keep their weights)
  and, if given, `max_positions` positions (RoPE has no position weights)."""
  old = config.vocab_size
  if vocab_size < old:
    raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size}")
  k1, k2 = jax.random.split(rng)
  params = dict(params)
  embed = params["embed_tokens"]
  params["embed_tokens"] = jnp.concatenate(
      [embed, scale * jax.random.normal(k1, (vocab_size - old, embed.shape[1]), embed.dtype)])
  if "lm_head" in params:
    head = params["lm_head"]
    params["lm_head"] = jnp.concatenate(
        [head, scale * jax.random.normal(k2, (head.shape[0], vocab_size - old), head.dtype)], 1)
  changes = {"vocab_size": vocab_size}
  if max_positions is not None:
    changes["max_position_embeddings"] = int(max_positions)
  return config.replace(**changes), params


def solution_steps(text: str) -> list[str]:
  """The judged lines of a solution text: its non-blank lines up to its answer line."""
  lines = [s for s in text.split("\n") if s.strip()]
  for i, s in enumerate(lines):
    if s.startswith("A:"):
      return lines[:i + 1]
  return lines

