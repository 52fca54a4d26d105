"""Verification chains on the synthetic arithmetic task, written by its checker.

The judge reads `Q:<problem>\\n` only, then writes one check per solution line (`reveal`
style, the default): first the line as it should be, recomputed in the policy's own
`a*b=c` form (so the policy's arithmetic is reused), then `>`; only then does the
framework write the value the solution's line states (read, not generated:
`steps.revealed_chains`), and the judge writes its verdict `Y` (the two values are equal)
or `N` and a newline; the label is still the checker's (the whole line must be right). The judge
cannot copy what the solution wrote while it recomputes: it has not seen it yet. The first
`N` ends the chain (later lines are wrong by convention); after the answer line's check
the chain ends with EOS:

    Q:37+45*3\\n                         <- judge prompt (the problem)
    37+45=82>82Y\\n82*3=246>264N\\n       <- chain (after each `>`: revealed)

With the calculator (`tool=True`) an operation line's check asks for the value,
`<calc>82*3</calc>=246>264N`, and the `=246` is the tool's answer (read too).
The `copy` style (the first trained format, `COPY_TEMPLATE`: the whole solution in the
prompt) copies the written line first and then the value it should have:
`82*3=264>246N`; trained verifiers learned to copy the written value there.
The characters of the
chains extend the task's alphabet (`VERIFIER_ALPHABET`); a judge is a policy whose
vocabulary was extended with them (`extend_vocabulary`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.judges.templates import JudgeTemplate
from rewardlab.tasks import arithmetic

__all__ = ["VERIFIER_ALPHABET", "TEMPLATE", "COPY_TEMPLATE", "tokenizer", "expected_lines", "chain_for",
           "chain_verdicts", "value_errors", "first_wrong_line", "first_error_of_chain", "solution_steps",
           "extend_vocabulary", "OPEN_TAG", "CLOSE_TAG", "STYLES", "written_value",
           "recomputed_value"]

OPEN_TAG, CLOSE_TAG = "<calc>", "</calc>"
# Verdicts Y / N and the characters of the calculator tags (the task's `A` is upper case).
VERIFIER_ALPHABET = arithmetic.ALPHABET + "YN<>/cal"

# The judge reads the problem only; each solution line is revealed after the judge has
# written what the line should be and `>` (`steps.revealed_chains`).
TEMPLATE = JudgeTemplate(user="{prompt}", yes=("Y",), no=("N",), step_format="{step}\n",
                         check_reveal="{value}", reveal_after=">")
# The first format: the whole solution in the prompt; the judge copies each line, then
# writes the value it should have (`style="copy"`).
COPY_TEMPLATE = JudgeTemplate(user="{prompt}{steps}", yes=("Y",), no=("N",),
                              step_format="{step}\n", check_prefix="{step}>")


def tokenizer() -> CharTokenizer:
  """The judge's character tokenizer: the task's ids first, then the verifier's characters."""
  return CharTokenizer(VERIFIER_ALPHABET)


def expected_lines(problem: arithmetic.Problem) -> list[str]:
  """The K right step lines and the right answer line `A:<answer>`."""
  return list(problem.steps) + [f"A:{problem.answer}"]


STYLES = ("reveal", "copy")


def written_value(line: str) -> str:
  """The value a solution line wrote: after its last `=`, after `A:`, else the line."""
  line = line.strip()
  if "=" in line:
    return line.rpartition("=")[2]
  return line[2:] if line.startswith("A:") else line


def _check(problem: arithmetic.Problem, steps: Sequence[str], k: int, tool: bool,
           style: str) -> str:
  """Line k's check without its verdict (module docstring). A line past the answer line
  should not exist: nothing is recomputed for it."""
  lines = expected_lines(problem)
  written = steps[k].strip()
  if style == "copy":
    if k >= len(lines):
      return f"{written}>"
    expr, _, value = lines[k].rpartition("=") if k < problem.num_ops else ("", "", lines[k][2:])
    if tool and k < problem.num_ops:
      return f"{written}>{OPEN_TAG}{expr}{CLOSE_TAG}={value}"
    return f"{written}>{value}"
  if k >= len(lines):
    return f">{written_value(written)}"
  if tool and k < problem.num_ops:
    expr, _, value = lines[k].rpartition("=")
    return f"{OPEN_TAG}{expr}{CLOSE_TAG}={value}>{written_value(written)}"
  return f"{lines[k]}>{written_value(written)}"


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


def chain_for(problem: arithmetic.Problem, steps: Sequence[str], *, tool: bool = False,
              style: str = "reveal") -> str:
  """The checker's verification chain of a solution's lines (whole or partial): each line's
  check and verdict (`first_wrong_line`), ending after the first `N`."""
  if style not in STYLES:
    raise ValueError(f"unknown chain style {style!r}; expected one of {STYLES}")
  first = first_wrong_line(problem, steps)
  judged = len(steps) if first < 0 else first + 1
  return "".join(_check(problem, steps, k, tool, style) + ("N" if k == first else "Y") + "\n"
                 for k in range(judged))


def recomputed_value(check: str, style: str = "reveal") -> str:
  """The value a check line (verdict included or not) recomputed: the tool's `=value`
  after `</calc>`, else (reveal style) the value of the line before the last `>` or
  (copy style) the text after `>`."""
  if style == "copy":  # the written line has no `>`: the first one separates
    part = check.partition(">")[2].rstrip("YN")
  else:  # the revealed line has no `>`: the last one separates (the tags have some)
    part = check.rpartition(">")[0]
  if CLOSE_TAG in part:
    return part.rsplit("=", 1)[1]
  return written_value(part)


def value_errors(problem: arithmetic.Problem, chain: str, style: str = "reveal") -> int:
  """Checks in a chain whose recomputed value (`recomputed_value`) differs from the value
  the line should have: the verifier's own arithmetic (or reading) errors."""
  lines = expected_lines(problem)
  errors = 0
  for k, line in enumerate(l for l in chain.split("\n") if ">" in l):
    if k >= len(lines):
      break
    errors += recomputed_value(line, style) != written_value(lines[k])
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

