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

  def is_answer_step(self, step: str) -> bool:
    """The step that states the final answer: the ``A:`` line."""
    return step.startswith("A:")


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
  ``answers_equal`` (math-verify). ``template`` formats ``{question}``;
  ``step_separator`` splits a solution into steps for :meth:`first_wrong_step`."""

  template: str = DEFAULT_MATH_TEMPLATE
  name: str = "math"
  step_separator: str = "\n"

  def prompt(self, problem: MathProblem) -> str:
    return self.template.format(question=problem.question)

  def extract_answer(self, completion: str) -> str | None:
    return math_answers.canonical_answer(math_answers.extract_math_answer(completion))

  def reference_answer(self, problem: MathProblem) -> str | None:
    return math_answers.canonical_answer(problem.answer)

  def is_correct(self, completion: str, problem: MathProblem) -> bool:
    pred = math_answers.extract_math_answer(completion)
    return math_answers.answers_equal(pred, problem.answer)

  def is_answer_step(self, step: str) -> bool:
    """The step that states the final answer: it holds ``####`` or a ``\\boxed{...}``."""
    return "####" in step or math_answers.extract_boxed(step) is not None

  def first_wrong_step(self, completion: str, problem: MathProblem, *,
                       finished: bool = True) -> int:
    """Process label (ProcessBench convention): earliest wrong step, -1 if none.

    Needs ``problem.intermediates`` (the expected result of each reference step,
    v_0 ... v_{K-1}; ValueError without them). The steps are the non-blank pieces of
    ``completion`` split at ``step_separator``, indexed from 0. A step's claims are
    the numbers written right after its ``=`` signs (:func:`math_answers.equation_results`),
    in order. With v_k the first result not reached yet, a claim is right when it is
    a value already known (a number of the question or a result already reached, as
    in ``x = 37 + 45 = 82``), or else some v_j with j >= k (then k = j + 1: steps may
    be merged, e.g. ``82 * 3 - 12 = 234``); otherwise the step is wrong. A step without ``=``
    claims nothing and is not wrong by itself. The answer step is the first one
    with ``####`` or ``\\boxed`` (later steps are ignored), or else the last step: when
    no earlier step is wrong, it is wrong iff its answer (:meth:`is_correct` on
    that step, or on the whole completion when no step is marked) is wrong. Skipped
    computations are not held against a right answer. An empty completion is wrong
    at step 0. ``finished=False`` reads a partial solution (a search prefix): without
    an answer step nothing but a wrong claim counts, and an empty one is -1.
    """
    if problem.intermediates is None:
      raise ValueError("first_wrong_step needs the problem's per-step intermediates "
                       "(e.g. from rewardlab.tasks.word_problems files)")
    expected = [math_answers.canonical_answer(v) for v in problem.intermediates]
    known = {math_answers.canonical_answer(n) for n in math_answers.numbers(problem.question)}
    steps = [s for s in completion.split(self.step_separator) if s.strip()]
    if not steps:
      return 0 if finished else -1
    k = 0
    for i, step in enumerate(steps):
      for claim in map(math_answers.canonical_answer, math_answers.equation_results(step)):
        if claim in known:
          continue
        if claim not in expected[k:]:
          return i
        k += expected[k:].index(claim) + 1
        known.update(expected[:k])
      if self.is_answer_step(step):
        return -1 if self.is_correct(step, problem) else i
    if not finished:
      return -1
    return -1 if self.is_correct(completion, problem) else len(steps) - 1


TASKS: dict[str, Callable[..., Task]] = {"arithmetic": ArithmeticTask, "math": MathTask}


def get_task(name: str, **kwargs) -> Task:
  """Build a registered task by name (``arithmetic`` or ``math``)."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name](**kwargs)
