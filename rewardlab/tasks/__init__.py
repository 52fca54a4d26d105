"""Verifiable tasks: prompts, answer extraction and correctness checks.

A :class:`Task` turns a problem into prompt text and judges completions:

* ``prompt(problem) -> str``: the text the policy continues;
* ``extract_answer(completion) -> Hashable | None``: the canonical answer (the
  key for majority voting; None when no answer can be read);
* ``reference_answer(problem) -> Hashable``: the gold answer in the same form;
* ``is_correct(completion, problem) -> bool``: the outcome label.

Two tasks ship: :class:`ArithmeticTask` (the synthetic multi-step arithmetic of
:mod:`rewardlab.tasks.arithmetic`, which also gives step labels) and
:class:`MathTask` (GSM8K / MATH answers, :mod:`rewardlab.tasks.math_answers`).
``get_task(name, **kwargs)`` builds one by its registered name.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

from rewardlab.tasks import arithmetic, math_answers
from rewardlab.tasks.arithmetic import Problem

__all__ = ["Task", "ArithmeticTask", "MathProblem", "MathTask", "TASKS", "get_task",
           "arithmetic", "math_answers"]


@runtime_checkable
class Task(Protocol):
  """What training, sampling and search need to know about a verifiable task."""

  name: str

  def prompt(self, problem: Any) -> str: ...

  def extract_answer(self, completion: str) -> Hashable | None: ...

  def reference_answer(self, problem: Any) -> Hashable: ...

  def is_correct(self, completion: str, problem: Any) -> bool: ...


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
  """Multi-step arithmetic; problems are :class:`~rewardlab.tasks.arithmetic.Problem`."""

  name: str = "arithmetic"

  def prompt(self, problem: Problem) -> str:
    return problem.prompt

  def extract_answer(self, completion: str) -> int | None:
    return arithmetic.extract_answer(completion)

  def reference_answer(self, problem: Problem) -> int:
    return problem.answer

  def is_correct(self, completion: str, problem: Problem) -> bool:
    return arithmetic.is_correct(completion, problem)

  def first_wrong_step(self, completion: str, problem: Problem) -> int:
    """Process label (ProcessBench convention): earliest wrong step, -1 if none."""
    return arithmetic.first_wrong_step(completion, problem)


@dataclasses.dataclass(frozen=True)
class MathProblem:
  """A GSM8K / MATH-style problem: the question text and the gold answer text.

  ``intermediates`` (optional) holds the expected result of each solution step, one
  per step, in canonical form (:func:`math_answers.canonical_answer`); when present,
  :meth:`MathTask.first_wrong_step` can locate the first wrong step of a solution.
  """

  question: str
  answer: str
  intermediates: tuple[str, ...] | None = None

  @classmethod
  def from_gsm8k(cls, question: str, solution: str) -> MathProblem:
    """GSM8K record: the gold answer is the number after ``####`` in ``solution``."""
    if "####" not in solution:
      raise ValueError(f"GSM8K solution has no '####' answer marker: {solution[-80:]!r}")
    return cls(question, math_answers.extract_last_number(solution))

  @classmethod
  def from_math(cls, problem: str, solution: str) -> MathProblem:
    """MATH record: the gold answer is the last ``\\boxed{...}`` of ``solution``."""
    answer = math_answers.extract_boxed(solution)
    if answer is None:
      raise ValueError(f"MATH solution has no \\boxed answer: {solution[-80:]!r}")
    return cls(problem, answer)


DEFAULT_MATH_TEMPLATE = ("{question}\nPlease reason step by step, and put your final answer "
                         "within \\boxed{{}}.")


@dataclasses.dataclass(frozen=True)
class MathTask:
  """Free-form math; answers are read by ``extract_math_answer`` and compared by
  ``answers_equal`` (math-verify). ``template`` formats ``{question}``."""

  template: str = DEFAULT_MATH_TEMPLATE
  name: str = "math"

  def prompt(self, problem: MathProblem) -> str:
    return self.template.format(question=problem.question)

  def extract_answer(self, completion: str) -> str | None:
    return math_answers.canonical_answer(math_answers.extract_math_answer(completion))

  def reference_answer(self, problem: MathProblem) -> str | None:
    return math_answers.canonical_answer(problem.answer)

  def is_correct(self, completion: str, problem: MathProblem) -> bool:
    pred = math_answers.extract_math_answer(completion)
    return math_answers.answers_equal(pred, problem.answer)


TASKS: dict[str, Callable[..., Task]] = {"arithmetic": ArithmeticTask, "math": MathTask}


def get_task(name: str, **kwargs) -> Task:
  """Build a registered task by name (``arithmetic`` or ``math``)."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name](**kwargs)
