"""Judge prompt templates: plain data that a user replaces to change what the judge reads.

A template is a `str.format` string for the judge's user message, an optional system
message, the `answer_prefix` written after the generation prompt when a verdict
probability is read directly (no sampling), the surface forms of the two verdicts, and
the regular expressions that read a sampled critique's verdict (the last match counts)
or 1-10 score. Fields a template's text must use:

* pointwise: `{prompt}`, `{response}`;
* pairwise: `{prompt}`, `{response_a}`, `{response_b}` (verdict "A" = the first shown wins);
* principle: `{prompt}`, `{response}`, `{principle}`;
* steps: `{prompt}`, `{steps}` (each step rendered with `step_format`, which gets `{index}`
  (1-based) and `{step}`); `check_prefix` (same fields) is what a scaffolded chain is given
  before the judge writes each step's check (`verify_steps(..., scaffold=True)`);
  `check_reveal` (same fields and `{value}`, the text after the step's last `=` or after
  its `A:`-style label, `steps.step_value`), when set, is what the framework writes each time the judge
  writes `reveal_after` (outside a tool call): the judge first works out what step k
  should be, writes `reveal_after`, and only then reads step k (`verify_steps` reveals the
  steps one at a time; such a template's `user` text usually leaves `{steps}` out).
"""
from __future__ import annotations

import dataclasses
import re

__all__ = ["JudgeTemplate", "POINTWISE", "POINTWISE_SCORE", "PAIRWISE", "PRINCIPLE", "STEPS",
           "parse_verdict", "parse_score", "format_steps"]


@dataclasses.dataclass(frozen=True)
class JudgeTemplate:
  """What the judge reads and how its verdict is found (see the module docstring)."""

  user: str
  yes: tuple[str, ...]
  no: tuple[str, ...]
  system: str | None = None
  answer_prefix: str = ""
  verdict_pattern: str | None = None  # one group: the verdict word
  score_pattern: str | None = None  # one group: an integer score
  score_range: tuple[int, int] = (1, 10)
  step_format: str = "Step {index}: {step}\n"
  check_prefix: str | None = None  # scaffolded step checks: the framework writes this per step
  check_reveal: str | None = None  # revealed steps: the framework writes this after reveal_after
  reveal_after: str = ">"

  def __post_init__(self):
    object.__setattr__(self, "yes", tuple(self.yes))
    object.__setattr__(self, "no", tuple(self.no))
    if not self.yes or not self.no:
      raise ValueError("JudgeTemplate needs at least one yes form and one no form")
    for name in ("verdict_pattern", "score_pattern"):
      pattern = getattr(self, name)
      if pattern is not None and re.compile(pattern).groups != 1:
        raise ValueError(f"JudgeTemplate.{name} {pattern!r} must have exactly one group")

  def replace(self, **changes) -> "JudgeTemplate":
    return dataclasses.replace(self, **changes)


def _norm(word: str) -> str:
  return word.strip().strip("*[]()\"'.").lower()


def parse_verdict(template: JudgeTemplate, text: str) -> tuple[bool | None, int | None]:
  """(True for a yes verdict / False for no / None if unparseable, char offset where the
  verdict word starts) from the last match of `verdict_pattern` in `text`."""
  if template.verdict_pattern is None:
    raise ValueError("this template has no verdict_pattern to parse critiques with")
  matches = list(re.finditer(template.verdict_pattern, text))
  if not matches:
    return None, None
  word = _norm(matches[-1].group(1))
  if word in {_norm(f) for f in template.yes}:
    return True, matches[-1].start(1)
  if word in {_norm(f) for f in template.no}:
    return False, matches[-1].start(1)
  return None, None


def parse_score(template: JudgeTemplate, text: str) -> int | None:
  """The integer of the last `score_pattern` match, None when absent or out of range."""
  if template.score_pattern is None:
    raise ValueError("this template has no score_pattern to parse critiques with")
  matches = list(re.finditer(template.score_pattern, text))
  if not matches:
    return None
  try:
    value = int(matches[-1].group(1))
  except ValueError:
    return None
  lo, hi = template.score_range
  return value if lo <= value <= hi else None


def format_steps(template: JudgeTemplate, steps) -> str:
  return "".join(template.step_format.format(index=k + 1, step=s) for k, s in enumerate(steps))


_YES = ("Yes", " Yes", "yes", " yes", "YES")
_NO = ("No", " No", "no", " no", "NO")

POINTWISE = JudgeTemplate(
    user=("Read the question and the response.\n\nQuestion:\n{prompt}\n\nResponse:\n{response}\n\n"
          "Is the response correct and helpful? Explain briefly, then end with the line "
          "'Verdict: Yes' or 'Verdict: No'."),
    yes=_YES, no=_NO, answer_prefix="Verdict:",
    verdict_pattern=r"[Vv]erdict\s*:?\s*\**\s*([A-Za-z]+)")

POINTWISE_SCORE = POINTWISE.replace(
    user=("Read the question and the response.\n\nQuestion:\n{prompt}\n\nResponse:\n{response}\n\n"
          "Rate the response from 1 (useless or wrong) to 10 (correct and helpful). Explain "
          "briefly, then end with the line 'Score: <1-10>'."),
    answer_prefix="Score:", score_pattern=r"[Ss]core\s*:?\s*\**\s*(\d+)")

PAIRWISE = JudgeTemplate(
    user=("Which response answers the question better?\n\nQuestion:\n{prompt}\n\n"
          "Response A:\n{response_a}\n\nResponse B:\n{response_b}\n\n"
          "Explain briefly, then end with the line 'Verdict: A' or 'Verdict: B'."),
    yes=("A", " A"), no=("B", " B"), answer_prefix="Verdict:",
    verdict_pattern=r"[Vv]erdict\s*:?\s*\**\s*\[?([AB])\b")

PRINCIPLE = JudgeTemplate(
    user=("Question:\n{prompt}\n\nResponse:\n{response}\n\nDoes the response satisfy this "
          "principle: {principle}\nAnswer Yes or No."),
    yes=_YES, no=_NO, answer_prefix="Answer:",
    verdict_pattern=r"[Aa]nswer\s*:?\s*\**\s*([A-Za-z]+)")

STEPS = JudgeTemplate(
    user=("Check the solution step by step.\n\nProblem:\n{prompt}\n\nSolution:\n{steps}\n"
          "For each step write 'Step k:', a short check, and 'correct' or 'incorrect'. "
          "Stop at the first incorrect step."),
    yes=(" correct", "correct", " Correct"), no=(" incorrect", "incorrect", " Incorrect"),
    answer_prefix="Step 1:")
