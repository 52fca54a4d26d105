"""Readers for math problem files (``.jsonl`` / ``.parquet``) into :class:`MathProblem`.

=================  ===========================================  ====================================
format             fields (named as in the public datasets)      gold answer
=================  ===========================================  ====================================
``gsm8k``          question, answer, intermediates?             the number after ``####`` in answer
``math``           problem, solution                            the last ``\\boxed{...}`` of solution
``prompt_answer``  prompt, answer                               answer as given (string or number)
=================  ===========================================  ====================================

``intermediates`` (optional, gsm8k) is the list of expected results of the solution's
steps, one per step (numbers or numeric strings), as written by
:mod:`rewardlab.tasks.word_problems`; it lets :meth:`MathTask.first_wrong_step` find the
exact first wrong step of a model's solution.

Rows are read by :func:`rewardlab.data.formats.iter_parsed`, so a malformed row behaves
as in the reward-model readers: with ``strict=True`` a ``FormatError`` naming the file,
the row (1-based jsonl line, 0-based parquet row) and the field; with ``strict=False``
the row is skipped and counted in that file's ``ReadStats``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rewardlab.data import formats
from rewardlab.data.formats import ReadStats, RowError
from rewardlab.data.formats import _required, _str, _type_name  # pylint: disable=protected-access
from rewardlab.tasks import MathProblem, math_answers

FORMATS = ("gsm8k", "math", "prompt_answer")


def _intermediates(row: dict) -> tuple[str, ...] | None:
  value = row.get("intermediates")
  if value is None:
    return None
  if not isinstance(value, (list, tuple)) or not value:
    raise RowError("intermediates", "wrong_type",
                   f"expected a non-empty list of numbers, got {_type_name(value)}")
  out = []
  for i, item in enumerate(value):
    text = item if isinstance(item, str) else None
    if isinstance(item, (int, float)) and not isinstance(item, bool):
      text = str(item)
    if text is None or math_answers.parse_number(text) is None:
      raise RowError("intermediates", "bad_value", f"item {i}: expected a number, got {item!r}")
    out.append(math_answers.canonical_answer(text))
  return tuple(out)


def parse_gsm8k(row: dict) -> MathProblem:
  """GSM8K row: ``question`` and ``answer`` (a solution ending in ``#### <number>``)."""
  question, solution = _str(row, "question"), _str(row, "answer")
  if "####" not in solution:
    raise RowError("answer", "bad_value", f"no '####' answer marker in {solution[-80:]!r}")
  problem = MathProblem.from_gsm8k(question, solution)
  if problem.answer is None:
    raise RowError("answer", "bad_value", f"no number after '####' in {solution[-80:]!r}")
  steps = _intermediates(row)
  return MathProblem(problem.question, problem.answer, steps) if steps else problem


def parse_math(row: dict) -> MathProblem:
  """MATH row: ``problem`` and ``solution`` whose last ``\\boxed{...}`` is the answer."""
  problem, solution = _str(row, "problem"), _str(row, "solution")
  if math_answers.extract_boxed(solution) is None:
    raise RowError("solution", "bad_value", f"no complete \\boxed{{...}} answer in {solution[-80:]!r}")
  return MathProblem.from_math(problem, solution)


def parse_prompt_answer(row: dict) -> MathProblem:
  """``prompt`` (the question text) and ``answer`` (a string or a number)."""
  prompt = _str(row, "prompt")
  answer = _required(row, "answer")
  if isinstance(answer, (int, float)) and not isinstance(answer, bool):
    answer = str(answer)
  if not isinstance(answer, str):
    raise RowError("answer", "wrong_type",
                   f"expected a string or a number, got {_type_name(answer)}")
  if not answer.strip():
    raise RowError("answer", "bad_value", "empty answer")
  return MathProblem(prompt, answer.strip())


PARSERS: dict[str, Callable[[dict], MathProblem]] = {
    "gsm8k": parse_gsm8k,
    "math": parse_math,
    "prompt_answer": parse_prompt_answer,
}


def split_files(files: str | Sequence[str]) -> list[str]:
  """``"a.jsonl, b.parquet"`` (or a list) -> ``["a.jsonl", "b.parquet"]``; empty parts dropped."""
  parts = files.split(",") if isinstance(files, str) else list(files)
  return [os.path.expanduser(p.strip()) for p in parts if p and p.strip()]


def read_problems(files: str | Sequence[str], fmt: str, *, strict: bool = True,
                  limit: int = 0) -> tuple[list[MathProblem], dict[str, ReadStats]]:
  """The problems of ``files`` in file and row order, and each file's ``ReadStats``.

  ``limit > 0`` stops after that many problems (later files are not opened and have
  no entry in the stats); 0 reads everything.
  """
  if fmt not in PARSERS:
    raise ValueError(f"unknown problem file format {fmt!r}; expected one of {list(FORMATS)}")
  if limit < 0:
    raise ValueError(f"limit must be >= 0, got {limit}")
  paths = split_files(files)
  if not paths:
    raise ValueError("no problem files given")
  problems, stats = [], {}
  for path in paths:
    if limit and len(problems) >= limit:
      break
    stats[path] = ReadStats()
    for problem in formats.iter_parsed(path, PARSERS[fmt], strict=strict, stats=stats[path]):
      problems.append(problem)
      if limit and len(problems) >= limit:
        break
  return problems, stats
