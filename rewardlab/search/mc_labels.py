"""Math-Shepherd Monte-Carlo step labels.

For every prefix ``s_1..s_k`` of a solution, ``N`` completions are sampled from a
completer policy (N = 8 in the paper). With ``c_k`` of them reaching the right answer:

    soft label  y_k = c_k / N        hard label  1[c_k > 0]

The last step of a solution is its answer step (the ``A:`` line of the arithmetic task,
the ``####`` / ``\\boxed`` step of a math task: ``task.is_answer_step``); its label is the
correctness of the answer itself (counts ``1/1`` or ``0/1``, nothing sampled). Any task
with ``is_answer_step`` works (:class:`~rewardlab.search.completer.StepView`); the
arithmetic task is the default.
Identical prefixes of one problem (different solutions often share their first,
correct steps) are sampled once and share their counts.

Labels are kept as :class:`StepLabels` and written in the TRL stepwise format the
PRM trainer reads (``prompt``, ``completions`` = steps, ``labels`` = soft labels)
plus ``counts`` ``[[c_k, N_k], ...]``, the per-completion ``outcomes`` and ``method``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rewardlab.search import completer as completer_lib
from rewardlab.search.completer import Completer, StepView, Task, step_view, step_views
from rewardlab.tasks import arithmetic

ANSWER_PREFIX = "A:"


@dataclasses.dataclass(frozen=True)
class StepLabels:
  """Soft labels of one step sequence, with the sampled evidence behind them.

  ``outcomes[k]`` holds one ``'1'``/``'0'`` per completion of prefix ``s_1..s_k``
  in sampling order; ``successes[k]``/``totals[k]`` are its counts. ``totals[k] = 0``
  marks a label that was inferred rather than measured (OmegaPRM only).
  """

  prompt: str
  steps: tuple[str, ...]
  labels: tuple[float, ...]
  successes: tuple[int, ...]
  totals: tuple[int, ...]
  outcomes: tuple[str, ...]
  method: str

  def __post_init__(self):
    n = len(self.steps)
    for name in ("labels", "successes", "totals", "outcomes"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"StepLabels.{name}: {len(getattr(self, name))} values for {n} steps")
    if any(not 0.0 <= y <= 1.0 for y in self.labels):
      raise ValueError(f"StepLabels.labels must lie in [0, 1], got {self.labels}")

  @property
  def hard_labels(self) -> tuple[float, ...]:
    return tuple(float(y > 0.0) for y in self.labels)

  def to_record(self, **extra) -> dict:
    """The stepwise jsonl row: ``prompt``, ``completions``, ``labels``, ``counts``, ``method``."""
    return {"prompt": self.prompt, "completions": list(self.steps), "labels": list(self.labels),
            "counts": [[s, t] for s, t in zip(self.successes, self.totals)],
            "outcomes": list(self.outcomes), "method": self.method, **extra}


def implied_first_wrong_step(labels: Sequence[float]) -> int:
  """First step whose prefix has no successful completion (label 0); -1 if none.

  Comparable with :func:`rewardlab.tasks.arithmetic.first_wrong_step` when the
  steps end with the answer line (the answer is step K there too).
  """
  for k, y in enumerate(labels):
    if y <= 0.0:
      return k
  return -1


def labels_from_outcomes(outcomes: Sequence[str], n: int) -> list[float]:
  """Soft labels from the first ``n`` completions of each prefix (all when fewer).

  Lets one run of N completions also give the labels of every smaller N' <= N.
  """
  if n <= 0:
    raise ValueError(f"n must be positive, got {n}")
  return [o[:n].count("1") / len(o[:n]) for o in outcomes]


def is_answer_step(step: str, task=None) -> bool:
  """The answer step of ``task`` (default: the arithmetic task's ``A:`` line)."""
  return step.startswith(ANSWER_PREFIX) if task is None else task.is_answer_step(step)


def mc_task(problem, solutions: Sequence[Sequence[str]], method: str = "mc",
            separator: str = arithmetic.STEP_SEPARATOR, *, task=None,
            prompt: str | None = None) -> Task:
  """Coroutine labelling ``solutions`` (step lists) of one problem; see :func:`label_solutions`.

  Yields once: every distinct prefix ``s_1..s_k`` that ends in a step (never in the
  answer step), the prompt followed by its steps joined by ``separator``. Returns one
  :class:`StepLabels` per solution. ``task`` (default arithmetic) judges outcomes;
  ``prompt`` is the text the completer continues (default ``task.prompt(problem)``).
  """
  view = step_view(problem, separator, task=task, prompt=prompt)
  prefixes: list[str] = []
  for steps in solutions:
    for k, step in enumerate(steps):
      if not view.is_answer_step(step):
        prefixes.append(view.prefix(steps[:k + 1]))
  prefixes = list(dict.fromkeys(prefixes))
  completions = (yield prefixes) if prefixes else []
  start = len(view.prompt)
  outcomes = {
      prefix: "".join("1" if view.is_correct(prefix[start:] + c) else "0" for c in texts)
      for prefix, texts in zip(prefixes, completions)}
  return [_solution_labels(view, steps, outcomes, method) for steps in solutions]


def _solution_labels(view: StepView, steps: Sequence[str], outcomes: dict,
                     method: str) -> StepLabels:
  per_step = []
  for k, step in enumerate(steps):
    if view.is_answer_step(step):
      per_step.append("1" if view.is_correct(view.solution(steps[:k + 1])) else "0")
    else:
      per_step.append(outcomes[view.prefix(steps[:k + 1])])
  if any(not o for o in per_step):
    raise ValueError(f"problem {view.key}: a prefix got no completions")
  return StepLabels(
      prompt=view.prompt, steps=tuple(steps),
      labels=tuple(o.count("1") / len(o) for o in per_step),
      successes=tuple(o.count("1") for o in per_step), totals=tuple(len(o) for o in per_step),
      outcomes=tuple(per_step), method=method)


def label_solutions(problems: Sequence, solutions: Sequence[Sequence[Sequence[str]]],
                    completer: Completer, *, num_completions: int = 8, rng: np.random.Generator,
                    separator: str = arithmetic.STEP_SEPARATOR, task=None,
                    prompts: Sequence[str] | None = None) -> list[list[StepLabels]]:
  """Monte-Carlo labels for ``solutions[i]`` (a list of step lists) of ``problems[i]``.

  All prefixes of all problems go to the completer in one call of
  ``num_completions`` samples each; a prefix is the prompt (``prompts[i]``, default
  ``task.prompt(problem)``) followed by its steps, each ending with ``separator`` (any
  string, e.g. ``"\\n\\n"``). ``task`` (default: the arithmetic task) judges the
  outcomes and names the answer step. Returns, per problem, one :class:`StepLabels`
  per solution.
  """
  if len(problems) != len(solutions):
    raise ValueError(f"{len(problems)} problems but {len(solutions)} solution lists")
  if num_completions <= 0:
    raise ValueError(f"num_completions must be positive, got {num_completions}")
  views = step_views(problems, separator, task, prompts)
  tasks = [mc_task(v.problem, s, separator=separator, task=v.task, prompt=v.prompt)
           for v, s in zip(views, solutions)]
  return completer_lib.drive(tasks, completer, num_completions, rng)


def num_sampled_prefixes(labels: Sequence[StepLabels], task=None) -> int:
  """Distinct sampled prefixes among one problem's labelled solutions (its MC cost / N)."""
  seen = set()
  for item in labels:
    for k, step in enumerate(item.steps):
      if not is_answer_step(step, task):
        seen.add(item.steps[:k + 1])
  return len(seen)
