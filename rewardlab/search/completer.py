"""Completers: n continuations of text prefixes, for Monte-Carlo step labels.

A *prefix* is a problem prompt plus its first k solution steps, each followed by
the step separator (``"Q:37+45*3\\n37+45=82\\n"``); a *completion* is the text a
policy writes after it (``"82*3=246\\nA:246\\n"``). The separator is ``"\\n"`` by
default and may be any string, e.g. ``"\\n\\n"`` (several tokens for a BPE tokenizer):
the labellers take it as ``separator``, join prefix steps with it and split
completions on it; completers sample to EOS, so it need not be one token.

The labellers work on any :class:`~rewardlab.tasks.Task` with an ``is_answer_step``
(the arithmetic task by default; :class:`~rewardlab.tasks.MathTask` for GSM8K / MATH
files) through a :class:`StepView` of each problem: the prompt text the completer
continues (the caller's, e.g. ``TaskSource.prompt`` with a chat template; else
``task.prompt(problem)``), the separator, and the task's judgement. Whether a
completion reaches the right answer is decided by the task on the solution text after
the prompt (prefix steps + completion; :meth:`StepView.is_correct`), never by the
completer.

Labellers are written as coroutines that yield the prefixes they need and get
the completions back; :func:`drive` runs many of them in lockstep, so one
completer call serves the requests of a whole batch of problems.

Implementations of the :class:`Completer` protocol:

* :class:`LMCompleter` samples from a causal LM with :func:`rewardlab.sampling.generate`.
* :class:`ScriptedCompleter` writes arithmetic steps with known per-step slip
  probabilities, so success probabilities are known in closed form (tests and
  dry runs); :class:`ScriptedMathCompleter` does the same for math problems that carry
  their per-step results (``MathProblem.intermediates``, e.g. generated word problems).
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import re
import time
from collections.abc import Generator, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from rewardlab.sampling.generate import generate, pad_prompts
from rewardlab.tasks import ArithmeticTask, MathTask, arithmetic, math_answers

# A labelling task: yields the prefixes it needs completions for, receives one list
# of completions per prefix, and finally returns its result.
Task = Generator[list[str], list[list[str]], object]


@runtime_checkable
class Completer(Protocol):
  """Anything that continues text prefixes."""

  def complete(self, prefixes: list[str], n: int, rng: np.random.Generator) -> list[list[str]]:
    """``n`` independent completions of each prefix: ``out[i][j]`` continues ``prefixes[i]``."""
    ...


@dataclasses.dataclass
class CompleterStats:
  """Work done so far: calls, prefixes, completions and wall seconds inside ``complete``."""

  calls: int = 0
  prefixes: int = 0
  completions: int = 0
  seconds: float = 0.0

  @property
  def completions_per_s(self) -> float:
    return self.completions / self.seconds if self.seconds > 0 else 0.0

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "completions_per_s": self.completions_per_s}


class MeteredCompleter:
  """Wraps any completer and counts its work in ``stats`` (throughput for progress bars)."""

  def __init__(self, inner: Completer):
    self.inner = inner
    self.stats = CompleterStats()

  def complete(self, prefixes: list[str], n: int, rng: np.random.Generator) -> list[list[str]]:
    t0 = time.perf_counter()
    out = self.inner.complete(prefixes, n, rng)
    self.stats.calls += 1
    self.stats.prefixes += len(prefixes)
    self.stats.completions += len(prefixes) * n
    self.stats.seconds += time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- text helpers


def prefix_text(problem: arithmetic.Problem, steps: Sequence[str],
                separator: str = arithmetic.STEP_SEPARATOR) -> str:
  """``prompt + Σ_k (step_k + separator)`` for the given steps."""
  return problem.prompt + "".join(s + separator for s in steps)


def solution_steps(text: str, separator: str = arithmetic.STEP_SEPARATOR) -> list[str]:
  """Step lines of a solution, then its ``A:`` line when it has one (the answer is the last step).

  Steps are the pieces between separators (and line breaks: arithmetic steps are single
  lines). Blank pieces, a leading prompt line and anything after the answer line are
  dropped, so ``prefix_text(problem, solution_steps(prefix + completion, separator),
  separator)`` is the canonical text.
  """
  parsed = arithmetic.parse_solution(_as_lines(text, separator))
  return list(parsed.steps) + ([] if parsed.answer is None else ["A:" + parsed.answer])


def _as_lines(text: str, separator: str) -> str:
  """The text with its separators as line breaks (what the arithmetic parser reads)."""
  return text if separator == arithmetic.STEP_SEPARATOR else text.replace(
      separator, arithmetic.STEP_SEPARATOR)


def completion_is_correct(prefix: str, completion: str, problem: arithmetic.Problem) -> bool:
  """Outcome of a continuation: the answer of ``prefix + completion`` is right."""
  return arithmetic.is_correct(prefix + completion, problem)


@dataclasses.dataclass(frozen=True)
class StepView:
  """How the labellers read one problem: its task, the prompt text the completer
  continues, and the step separator.

  A *solution* is the text after the prompt. For the arithmetic task, steps and
  outcomes are exactly those of the ``A:``-line parser (:func:`solution_steps`,
  ``arithmetic.is_correct``), whatever the prompt looks like; for other tasks the steps
  are the non-blank pieces between separators up to the first answer step
  (``task.is_answer_step``), as ``MathTask.first_wrong_step`` counts them.
  """

  problem: Any
  task: Any
  prompt: str
  separator: str = arithmetic.STEP_SEPARATOR
  name: str | None = None   # the problem's name in records; see `key`

  @property
  def key(self) -> str:
    """The problem's name in records and errors: ``name`` when set, else the problem's
    ``key`` (arithmetic), else a hash of the prompt."""
    if self.name is not None:
      return self.name
    key = getattr(self.problem, "key", None)
    return key if key is not None else hashlib.sha256(self.prompt.encode()).hexdigest()[:12]

  @property
  def is_arithmetic(self) -> bool:
    return isinstance(self.task, ArithmeticTask)

  def solution(self, steps: Sequence[str]) -> str:
    """``Σ_k (step_k + separator)``: the solution text of a step prefix."""
    return "".join(s + self.separator for s in steps)

  def prefix(self, steps: Sequence[str]) -> str:
    """``prompt + solution(steps)``: the text a completer continues."""
    return self.prompt + self.solution(steps)

  def is_correct(self, solution: str) -> bool:
    """The task's outcome label of a solution (the text after the prompt)."""
    return self.task.is_correct(solution, self.problem)

  def is_answer_step(self, step: str) -> bool:
    return self.task.is_answer_step(step)

  def steps(self, solution: str) -> list[str]:
    """The steps of a solution, the answer step last when there is one."""
    if self.is_arithmetic:
      # Read as if after a one-line prompt: a "Q:" line the policy writes first is a step.
      return solution_steps(arithmetic.STEP_SEPARATOR + solution, self.separator)
    steps = []
    for piece in solution.split(self.separator):
      if piece.strip():
        steps.append(piece)
        if self.is_answer_step(piece):
          break
    return steps


def step_view(problem, separator: str = arithmetic.STEP_SEPARATOR, *, task=None,
              prompt: str | None = None) -> StepView:
  """A :class:`StepView` of ``problem``; ``task`` defaults to the arithmetic task and
  ``prompt`` to ``task.prompt(problem)``."""
  if not isinstance(separator, str) or not separator:
    raise ValueError(f"separator must be a non-empty string, got {separator!r}")
  task = ArithmeticTask() if task is None else task
  if not callable(getattr(task, "is_answer_step", None)):
    raise TypeError(f"step labels need a task with is_answer_step; {type(task).__name__} has none")
  return StepView(problem, task, task.prompt(problem) if prompt is None else prompt, separator)


def step_views(problems: Sequence, separator: str, task=None,
               prompts: Sequence[str] | None = None) -> list[StepView]:
  """One :func:`step_view` per problem (``prompts[i]`` for ``problems[i]`` when given)."""
  if prompts is not None and len(prompts) != len(problems):
    raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
  return [step_view(p, separator, task=task, prompt=None if prompts is None else prompts[i])
          for i, p in enumerate(problems)]


def drive(tasks: Sequence[Task], completer: Completer, n: int,
          rng: np.random.Generator) -> list:
  """Run labelling tasks in lockstep; returns their results in order.

  Each round gathers the pending prefixes of every unfinished task into one
  ``completer.complete(prefixes, n, rng)`` call and sends each task its share.
  """
  results: list = [None] * len(tasks)
  pending: dict[int, list[str]] = {}
  for i, task in enumerate(tasks):
    _advance(i, task, None, pending, results)
  while pending:
    order = list(pending)
    prefixes = [p for i in order for p in pending[i]]
    completions = completer.complete(prefixes, n, rng) if prefixes else []
    if len(completions) != len(prefixes):
      raise ValueError(f"completer returned {len(completions)} lists for {len(prefixes)} prefixes")
    start, requests = 0, pending
    pending = {}
    for i in order:
      count = len(requests[i])
      _advance(i, tasks[i], completions[start:start + count], pending, results)
      start += count
  return results


def _advance(i: int, task: Task, reply, pending: dict, results: list) -> None:
  try:
    request = task.send(reply)
  except StopIteration as stop:
    results[i] = stop.value
    return
  if not isinstance(request, list):
    raise TypeError(f"task {i} yielded {type(request).__name__}; expected a list of prefixes")
  pending[i] = request


# ----------------------------------------------------------------------------- LM completer


def _bucket(count: int, cap: int) -> int:
  """Smallest power of 4 >= count, at most ``cap`` (few shapes: each compiles for seconds)."""
  size = 1
  while size < count:
    size *= 4
  return min(size, cap)


class LMCompleter:
  """Samples completions from a causal LM (e.g. the SFT policy with its char tokenizer).

  Prefixes are encoded as ``encode(prefix, add_bos=True)``, as :class:`LMPolicy`, RL
  rollouts and SFT prompts are (BOS first, not doubled when a chat template already
  starts the prompt with it, as SmolLM2's ``<|im_start|>`` does) and decoded without
  special tokens; sampling stops at EOS. One
  :func:`generate` call handles up to ``batch_size`` prefixes with
  ``num_samples = n``: the sampler prefills each prefix once and shares that cache
  among its ``n`` samples (different prefixes of one problem are prefilled
  separately; a prefill is cheap next to the decode loop). Prefixes are grouped
  by padded length (multiples of 16) and the row count is padded to a power of
  4, so few shapes are compiled (on CPU a sampler compile takes seconds; a run
  with 8 samples per prefix measured ~300 completions/s at 16 prefixes per call
  against ~70/s at 64, whose longer-running stragglers keep the loop going). A completion that runs into the position limit,
  or that samples an id outside the tokenizer, is returned truncated (it then has
  no answer and counts as a failure).
  """

  def __init__(self, config, params, tokenizer, *, max_new_tokens: int = 64,
               temperature: float = 1.0, batch_size: int = 16, mesh=None):
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.max_new_tokens, self.temperature = int(max_new_tokens), float(temperature)
    self.batch_size, self.mesh = int(batch_size), mesh
    self.generated_tokens = 0
    self.invalid_tokens = 0   # completions cut at an id the tokenizer does not have
    self.prefill_tokens = 0   # prompt tokens prefilled: once per prefix (padding rows included)
    self.unshared_prefill_tokens = 0  # what one prefill per sample would have read (n x that)

  def complete(self, prefixes: list[str], n: int, rng: np.random.Generator) -> list[list[str]]:
    encoded = [self.tokenizer.encode(p, add_bos=True) for p in prefixes]
    widths = [pad_prompts([ids], self.tokenizer.pad_id)[0].shape[1] for ids in encoded]
    out: list[list[str] | None] = [None] * len(prefixes)
    for width in sorted(set(widths)):
      rows = [i for i, w in enumerate(widths) if w == width]
      for start in range(0, len(rows), self.batch_size):
        chunk = rows[start:start + self.batch_size]
        for i, texts in zip(chunk, self._sample([encoded[i] for i in chunk], width, n, rng)):
          out[i] = texts
    return out  # type: ignore[return-value]

  def _sample(self, prompts: list[list[int]], width: int, n: int,
              rng: np.random.Generator) -> list[list[str]]:
    """One generate call; ``prompts`` all pad to ``width``. Returns ``n`` texts per prompt."""
    room = self.config.max_position_embeddings - width
    if room <= 0:
      raise ValueError(f"a prefix of {width} padded tokens leaves no room to generate "
                       f"(max_position_embeddings {self.config.max_position_embeddings})")
    rows = _bucket(len(prompts), self.batch_size)
    padded = prompts + [prompts[0]] * (rows - len(prompts))
    key = jax.random.key(int(rng.integers(2**31)))
    self.prefill_tokens += sum(len(p) for p in padded)
    self.unshared_prefill_tokens += n * sum(len(p) for p in padded)
    result = generate(
        self.config, self.params, padded, max_new_tokens=min(self.max_new_tokens, room),
        temperature=self.temperature, stop_tokens=(self.tokenizer.eos_id,), num_samples=n,
        rng=key, pad_id=self.tokenizer.pad_id, mesh=self.mesh)
    ids = result.completions()[:len(prompts) * n]
    self.generated_tokens += int(result.lengths[:len(prompts) * n].sum())
    texts = [self.tokenizer.decode(self._valid_prefix(row)) for row in ids]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

  def _valid_prefix(self, ids: list[int]) -> list[int]:
    """Cut a completion at its first id outside the tokenizer (the model's vocabulary is
    padded to a multiple of 8, so a sampled padding id ends the completion; counted)."""
    for position, token in enumerate(ids):
      if not 0 <= token < self.tokenizer.vocab_size:
        self.invalid_tokens += 1
        return ids[:position]
    return ids


# ----------------------------------------------------------------------------- scripted completer

_RESULT_RE = re.compile(r"=(-?\d+)$")
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}


class ScriptedCompleter:
  """Writes arithmetic steps, slipping at step j (0-based) with probability ``fail_probs[j]``.

  From a prefix whose steps are all right, step j is written wrong (result off by
  +1..+9) with probability ``f_j``; later steps continue consistently from the
  written value, so a slip is never undone (every op is injective). A prefix that
  already holds a wrong step is continued consistently, so it never reaches the
  right answer. Hence a completion from a right prefix of k steps succeeds with
  probability ``Π_{j>=k} (1 - f_j)`` (:meth:`success_probability`), and 0 otherwise.
  ``calls`` counts how often each prefix was asked for (tests check caching). Steps are
  read and written with ``separator`` (the answer line ends with a line break).
  """

  def __init__(self, fail_probs: Sequence[float], separator: str = arithmetic.STEP_SEPARATOR):
    probs = [float(f) for f in fail_probs]
    if not probs or any(not 0.0 <= f <= 1.0 for f in probs):
      raise ValueError(f"fail_probs must be a non-empty list of probabilities, got {fail_probs}")
    if not separator:
      raise ValueError("separator must be a non-empty string")
    self.fail_probs = probs
    self.separator = separator
    self.calls: dict[str, int] = {}

  def fail_prob(self, j: int) -> float:
    return self.fail_probs[min(j, len(self.fail_probs) - 1)]

  def success_probability(self, problem: arithmetic.Problem, steps: Sequence[str]) -> float:
    """Exact P(a completion of ``prefix_text(problem, steps)`` is correct)."""
    if not _prefix_is_right(problem, steps):
      return 0.0
    return float(np.prod([1.0 - self.fail_prob(j) for j in range(len(steps), problem.num_ops)]))

  def complete(self, prefixes: list[str], n: int, rng: np.random.Generator) -> list[list[str]]:
    out = []
    for prefix in prefixes:
      self.calls[prefix] = self.calls.get(prefix, 0) + 1
      problem = arithmetic.parse_prompt(prefix.split(arithmetic.STEP_SEPARATOR, 1)[0])
      steps = arithmetic.parse_solution(_as_lines(prefix, self.separator)).steps
      out.append([self._continue(problem, steps, rng) for _ in range(n)])
    return out

  def _continue(self, problem: arithmetic.Problem, steps: Sequence[str],
                rng: np.random.Generator) -> str:
    right = _prefix_is_right(problem, steps)
    value = problem.start
    if steps:
      match = _RESULT_RE.search(steps[-1].strip())
      value = int(match[1]) if match else value
    lines = []
    for j in range(len(steps), problem.num_ops):
      op, b = problem.ops[j]
      result = _APPLY[op](value, b)
      if right and rng.random() < self.fail_prob(j):
        result, right = result + int(rng.integers(1, 10)), False
      lines.append(f"{value}{op}{b}={result}")
      value = result
    return "".join(line + self.separator for line in lines) + f"A:{value}\n"


def _prefix_is_right(problem: arithmetic.Problem, steps: Sequence[str]) -> bool:
  """Every step of the prefix is right (a prefix of all K steps, with no answer yet, is right)."""
  return len(steps) <= problem.num_ops and arithmetic.first_wrong_step(steps, problem) >= len(steps)


class ScriptedMathCompleter:
  """Writes the steps of math problems that carry their per-step results, slipping at step
  j (0-based) with probability ``fail_probs[j]``: the counterpart of :class:`ScriptedCompleter`
  for a task judged by claims (:meth:`MathTask.first_wrong_step`).

  ``views`` (:class:`StepView` of :class:`~rewardlab.tasks.MathProblem` with
  ``intermediates`` v_0..v_{K-1}) say which prompt belongs to which problem and the
  separator. Step j is written ``Result {j+1} = <value>`` (then the separator); the last
  is followed by ``#### <value>``. From a right prefix (``first_wrong_step(...,
  finished=False) == -1``) of k steps, step j >= k is right (v_j) unless it slips: then it
  and every later step are off by the same d > 0, chosen so that the slipped value is no
  number of the question and no v_i (so the judge sees the slip exactly at j), and the
  answer is wrong. A prefix with a wrong step is continued off by 1, so it never reaches
  the right answer. Hence a completion of a right prefix of k steps succeeds with
  probability ``Π_{j>=k} (1 - f_j)`` (:meth:`success_probability`), and 0 otherwise.
  """

  def __init__(self, views: Sequence[StepView], fail_probs: Sequence[float]):
    probs = [float(f) for f in fail_probs]
    if not probs or any(not 0.0 <= f <= 1.0 for f in probs):
      raise ValueError(f"fail_probs must be a non-empty list of probabilities, got {fail_probs}")
    self.fail_probs = probs
    self.views = {v.prompt: v for v in views}
    for v in views:
      if getattr(v.problem, "intermediates", None) is None:
        raise ValueError(f"problem {v.key}: the scripted math completer needs the problems' "
                         "per-step results (intermediates, e.g. rewardlab.tasks.word_problems "
                         "files)")
      if not isinstance(v.task, MathTask):
        raise TypeError(f"the scripted math completer needs a MathTask, got {type(v.task).__name__}")
    self.calls: dict[str, int] = {}

  def fail_prob(self, j: int) -> float:
    return self.fail_probs[min(j, len(self.fail_probs) - 1)]

  def _view(self, prefix: str) -> StepView:
    matches = [p for p in self.views if prefix.startswith(p)]
    if not matches:
      raise ValueError(f"no problem's prompt starts the prefix {prefix[:80]!r}")
    return self.views[max(matches, key=len)]

  @staticmethod
  def _right(view: StepView, steps: Sequence[str]) -> bool:
    return (len(steps) <= len(view.problem.intermediates) and
            view.task.first_wrong_step(view.solution(steps), view.problem, finished=False) < 0)

  def success_probability(self, view: StepView, steps: Sequence[str]) -> float:
    """Exact P(a completion of ``view.prefix(steps)`` is correct)."""
    if not self._right(view, steps):
      return 0.0
    num = len(view.problem.intermediates)
    return float(np.prod([1.0 - self.fail_prob(j) for j in range(len(steps), num)]))

  def complete(self, prefixes: list[str], n: int, rng: np.random.Generator) -> list[list[str]]:
    out = []
    for prefix in prefixes:
      self.calls[prefix] = self.calls.get(prefix, 0) + 1
      view = self._view(prefix)
      steps = view.steps(prefix[len(view.prompt):])
      out.append([self._continue(view, steps, rng) for _ in range(n)])
    return out

  def _continue(self, view: StepView, steps: Sequence[str], rng: np.random.Generator) -> str:
    problem = view.problem
    expected = [math_answers.parse_number(v) for v in problem.intermediates]
    taken = set(expected) | {math_answers.parse_number(x)
                             for x in math_answers.numbers(problem.question)}
    offset = 0 if self._right(view, steps) else 1
    lines = []
    for j in range(min(len(steps), len(expected)), len(expected)):
      if offset == 0 and rng.random() < self.fail_prob(j):
        offset = int(rng.integers(1, 10))
        while expected[j] + offset in taken:
          offset += 1
      lines.append(f"Result {j + 1} = {_number_text(expected[j] + offset)}")
    value = _number_text(expected[-1] + offset)
    return "".join(line + view.separator for line in lines) + f"#### {value}"


def _number_text(value) -> str:
  """A Fraction as a plain decimal (an integer when it is one)."""
  return str(value.numerator) if value.denominator == 1 else str(float(value))
