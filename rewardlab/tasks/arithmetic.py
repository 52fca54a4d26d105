"""Multi-step arithmetic: a synthetic task whose every step can be checked.

A problem is a start value ``a`` followed by ``K`` operations applied strictly
left to right (no operator precedence): ``+b`` / ``-b`` with ``b`` in
``[0, operand_max]`` and ``*m`` with ``m`` in ``[2, 9]``. Every intermediate
result stays in ``[0, result_max]``. Text format (no spaces; the character
tokenizer's alphabet is exactly :data:`ALPHABET`)::

    prompt:   Q:37+45*3-12\\n
    solution: 37+45=82\\n82*3=246\\n246-12=234\\nA:234\\n

Each step is one line ``<prev><op><operand>=<result>`` and the last line is
``A:<answer>``. Because the correct value of every step is known, the task gives
outcome labels (is the answer right?), process labels (which step is the first
wrong one, the ProcessBench convention) and controlled wrong solutions for
preference and PRM data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

ALPHABET = "0123456789+-*=:\nQA"
STEP_SEPARATOR = "\n"
OPERATORS = ("+", "-", "*")
MULTIPLIER_RANGE = (2, 9)  # inclusive range of m in `*m`

_STEP_RE = re.compile(r"(\d+)([+\-*])(\d+)=(\d+)")
_INT_RE = re.compile(r"-?\d+")
_APPLY: dict[str, Callable[[int, int], int]] = {
    "+": lambda x, b: x + b,
    "-": lambda x, b: x - b,
    "*": lambda x, b: x * b,
}


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem: ``start`` then ``ops`` (``(operator, operand)`` pairs) left to right."""

  start: int
  ops: tuple[tuple[str, int], ...]

  def __post_init__(self):
    if not isinstance(self.start, (int, np.integer)) or self.start < 0:
      raise ValueError(f"Problem.start must be a non-negative int, got {self.start!r}")
    object.__setattr__(self, "start", int(self.start))
    ops = tuple((str(op), int(b)) for op, b in self.ops)
    object.__setattr__(self, "ops", ops)
    if not ops:
      raise ValueError("Problem.ops must hold at least one operation")
    for k, (op, b) in enumerate(ops):
      if op not in _APPLY:
        raise ValueError(f"Problem.ops[{k}]: operator {op!r} is not one of {OPERATORS}")
      if b < 0:
        raise ValueError(f"Problem.ops[{k}]: operand {b} is negative")
    for k, value in enumerate(self.intermediates):
      if value < 0:
        raise ValueError(f"Problem.ops[{k}]: intermediate result {value} is negative")

  @property
  def num_ops(self) -> int:
    return len(self.ops)

  @property
  def intermediates(self) -> tuple[int, ...]:
    """The K results ``v_k = v_{k-1} op_k b_k`` with ``v_{-1} = start``."""
    values, value = [], self.start
    for op, b in self.ops:
      value = _APPLY[op](value, b)
      values.append(value)
    return tuple(values)

  @property
  def answer(self) -> int:
    return self.intermediates[-1]

  @property
  def key(self) -> str:
    """Canonical expression, e.g. ``37+45*3-12``; equal keys mean equal problems."""
    return str(self.start) + "".join(f"{op}{b}" for op, b in self.ops)

  @property
  def prompt(self) -> str:
    return f"Q:{self.key}\n"

  @property
  def steps(self) -> tuple[str, ...]:
    """The K step lines ``<prev><op><operand>=<result>`` (no separator)."""
    return tuple(_render_steps(self.start, self.ops))

  @property
  def solution(self) -> str:
    return _render_solution(list(self.steps), self.answer)

  def __str__(self) -> str:
    return self.key


def _render_steps(start: int, ops: Sequence[tuple[str, int]], *, slip_at: int | None = None,
                  slip_value: int | None = None) -> list[str]:
  """Step lines for ``ops`` from ``start``; optionally step ``slip_at`` writes ``slip_value``.

  Later steps continue from the written value, so a slip propagates consistently.
  """
  lines, prev = [], start
  for k, (op, b) in enumerate(ops):
    result = slip_value if k == slip_at else _APPLY[op](prev, b)
    lines.append(f"{prev}{op}{b}={result}")
    prev = result
  return lines


def _render_solution(steps: Sequence[str], answer: int | str) -> str:
  return "".join(s + STEP_SEPARATOR for s in steps) + f"A:{answer}\n"


def parse_prompt(text: str) -> Problem:
  """Inverse of :attr:`Problem.prompt` (``Q:`` prefix and trailing newline optional)."""
  body = text.strip()
  body = body[2:] if body.startswith("Q:") else body
  match = re.fullmatch(r"(\d+)((?:[+\-*]\d+)+)", body)
  if match is None:
    raise ValueError(f"not an arithmetic prompt: {text!r}")
  ops = tuple((op, int(b)) for op, b in re.findall(r"([+\-*])(\d+)", match.group(2)))
  return Problem(int(match.group(1)), ops)


# ----------------------------------------------------------------------------- generation


def split_of(key: str, test_fraction: float = 0.1) -> str:
  """``'test'`` or ``'train'`` from a stable hash of ``key`` (independent of any seed).

  ``u = int(sha256(key)[:8]) / 2^64``; the problem is in test iff ``u < test_fraction``.
  """
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2.0**64
  return "test" if u < test_fraction else "train"


def _sample_op(rng: np.random.Generator, value: int, operand_max: int,
               result_max: int) -> tuple[str, int]:
  """Rejection-sample one op whose result stays in ``[0, result_max]``.

  ``-0`` is always valid, so the loop ends; every op type is valid with
  probability >= 1/3 for any ``value``, so it ends fast.
  """
  while True:
    op = OPERATORS[int(rng.integers(len(OPERATORS)))]
    if op == "*":
      b = int(rng.integers(MULTIPLIER_RANGE[0], MULTIPLIER_RANGE[1] + 1))
    else:
      b = int(rng.integers(operand_max + 1))
    if 0 <= _APPLY[op](value, b) <= result_max:
      return op, b


def sample_problem(rng: np.random.Generator, *, num_ops: Sequence[int] = (2, 3, 4),
                   operand_max: int = 99, result_max: int = 999) -> Problem:
  """One random problem: K uniform over ``num_ops``, start uniform in ``[0, operand_max]``."""
  k = int(num_ops[int(rng.integers(len(num_ops)))])
  value = int(rng.integers(operand_max + 1))
  start, ops = value, []
  for _ in range(k):
    op, b = _sample_op(rng, value, operand_max, result_max)
    ops.append((op, b))
    value = _APPLY[op](value, b)
  return Problem(start, tuple(ops))


def generate_problems(num: int, *, seed: int, num_ops: Sequence[int] = (2, 3, 4),
                      operand_max: int = 99, result_max: int = 999,
                      split: str | None = None, test_fraction: float = 0.1) -> list[Problem]:
  """``num`` unique problems, deterministic in ``seed``.

  ``split='train'|'test'`` keeps only problems whose :func:`split_of` (a hash of
  the key, not of the seed) matches, so train and test never overlap whatever
  seeds produced them; ``split=None`` keeps all. Raises ValueError when ``num``
  unique problems cannot be found (the problem space is too small).
  """
  num_ops = tuple(int(k) for k in num_ops)
  if num < 0:
    raise ValueError(f"num must be >= 0, got {num}")
  if not num_ops or min(num_ops) < 1:
    raise ValueError(f"num_ops must be a non-empty list of positive ints, got {num_ops}")
  if operand_max < 0 or result_max < operand_max:
    raise ValueError(f"need 0 <= operand_max <= result_max, got operand_max={operand_max}, "
                     f"result_max={result_max}")
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
  if split not in ("train", "test", None):
    raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
  keep_fraction = {"train": 1.0 - test_fraction, "test": test_fraction, None: 1.0}[split]
  if num > 0 and keep_fraction == 0.0:
    raise ValueError(f"split={split!r} is empty with test_fraction={test_fraction}")

  rng = np.random.default_rng(seed)
  max_draws = int(20 * num / max(keep_fraction, 1e-9)) + 10_000
  problems, seen = [], set()
  for _ in range(max_draws):
    if len(problems) == num:
      break
    problem = sample_problem(rng, num_ops=num_ops, operand_max=operand_max, result_max=result_max)
    if problem.key in seen:
      continue
    seen.add(problem.key)
    if split is None or split_of(problem.key, test_fraction) == split:
      problems.append(problem)
  if len(problems) < num:
    raise ValueError(f"found only {len(problems)} unique problems for split={split!r} after "
                     f"{max_draws} draws (asked for {num}); the problem space of num_ops={num_ops}, "
                     f"operand_max={operand_max}, result_max={result_max} is too small")
  return problems


# ----------------------------------------------------------------------------- checking


@dataclasses.dataclass(frozen=True)
class ParsedSolution:
  """Step lines before the first ``A:`` line, and the raw answer text (None if no ``A:`` line)."""

  steps: list[str]
  answer: str | None


def parse_solution(text: str) -> ParsedSolution:
  """Split a completion into step lines and the ``A:`` answer; never raises.

  Blank lines and a leading ``Q:`` prompt line are dropped; everything after the
  first ``A:`` line is ignored (generation past the answer does not count).
  """
  steps, lines = [], str(text).split(STEP_SEPARATOR)
  for i, line in enumerate(lines):
    if line.startswith("A:"):
      return ParsedSolution(steps, line[2:])
    if not line.strip() or (i == 0 and line.startswith("Q:")):
      continue
    steps.append(line)
  return ParsedSolution(steps, None)


def _parse_int(text: str | None) -> int | None:
  if text is None:
    return None
  text = text.strip()
  return int(text) if _INT_RE.fullmatch(text) else None


def extract_answer(text: str) -> int | None:
  """The integer on the ``A:`` line; None if the line is missing or not an integer."""
  return _parse_int(parse_solution(text).answer)


def is_correct(text: str, problem: Problem) -> bool:
  """Outcome label: the final answer equals ``problem.answer`` (the steps are not checked)."""
  return extract_answer(text) == problem.answer


def _step_is_right(step: str, k: int, problem: Problem) -> bool:
  match = _STEP_RE.fullmatch(step.strip())
  if match is None:
    return False
  left, op, b, result = int(match[1]), match[2], int(match[3]), int(match[4])
  prev = problem.start if k == 0 else problem.intermediates[k - 1]
  return (left, op, b, result) == (prev, *problem.ops[k], problem.intermediates[k])


def first_wrong_step(text_or_steps: str | Sequence[str], problem: Problem) -> int:
  """Index of the earliest wrong step, -1 when every step and the answer are right.

  Step k (0-based) is right iff it parses as ``<left><op><b>=<result>`` with
  ``left`` the correct previous value (``start`` for k = 0), ``(op, b)`` the
  problem's k-th op and ``result`` the correct k-th value. A missing step is wrong
  at its position; an extra step is wrong (index K); the answer line counts as
  step K. A list of steps is joined with the separator first, so it may end
  with its ``A:`` line.
  """
  if not isinstance(text_or_steps, str):
    text_or_steps = "".join(s + STEP_SEPARATOR for s in text_or_steps)
  parsed = parse_solution(text_or_steps)
  k_total = problem.num_ops
  for k in range(k_total):
    if k >= len(parsed.steps) or not _step_is_right(parsed.steps[k], k, problem):
      return k
  if len(parsed.steps) > k_total or _parse_int(parsed.answer) != problem.answer:
    return k_total
  return -1


# ----------------------------------------------------------------------------- corruption


ERROR_KINDS = ("slip", "copy", "skip_or_extra", "answer", "malformed")


def error_kind(steps: Sequence[str], problem: Problem) -> str | None:
  """What the first wrong step of a solution got wrong (None when it has none).

  ``slip``: the step applies the right operation to the right value and miscomputes;
  ``copy``: it carries a wrong left value or operand; ``skip_or_extra``: it applies
  another step's operation, or there are missing or extra steps; ``answer``: every step
  is right and the ``A:`` line is not; ``malformed``: the step does not parse.
  """
  k = first_wrong_step(steps, problem)
  if k < 0:
    return None
  if k >= problem.num_ops:
    extra = sum(not s.startswith("A:") for s in steps) > problem.num_ops
    return "skip_or_extra" if extra else "answer"
  if k >= len(steps) or steps[k].startswith("A:"):
    return "skip_or_extra"
  match = _STEP_RE.fullmatch(steps[k].strip())
  if match is None:
    return "malformed"
  left, op, b = int(match.group(1)), match.group(2), int(match.group(3))
  previous = problem.start if k == 0 else problem.intermediates[k - 1]
  if (op, b) == problem.ops[k]:
    return "slip" if left == previous else "copy"
  return "skip_or_extra" if (op, b) in problem.ops else "copy"


def _change_digit(value: int, rng: np.random.Generator) -> int:
  """``value`` with one decimal digit replaced by another (no new leading zero)."""
  digits = list(str(value))
  i = int(rng.integers(len(digits)))
  choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1)]
  digits[i] = choices[int(rng.integers(len(choices)))]
  return int("".join(digits))


def _corrupt_slip(problem: Problem, k: int, rng: np.random.Generator) -> tuple[list[str], int]:
  """A wrong result at step k; later steps are computed from the wrong value."""
  wrong = _change_digit(problem.intermediates[k], rng)
  steps = _render_steps(problem.start, problem.ops, slip_at=k, slip_value=wrong)
  value = wrong
  for op, b in problem.ops[k + 1:]:
    value = _APPLY[op](value, b)
  return steps, value


def _corrupt_copy(problem: Problem, k: int, rng: np.random.Generator) -> tuple[list[str], int]:
  """The k-th operand is miscopied; that step and later ones are computed consistently."""
  op, b = problem.ops[k]
  if op == "*":
    choices = [m for m in range(MULTIPLIER_RANGE[0], MULTIPLIER_RANGE[1] + 1) if m != b]
    b_wrong = choices[int(rng.integers(len(choices)))]
  else:
    b_wrong = _change_digit(b, rng)
  ops = list(problem.ops)
  ops[k] = (op, b_wrong)
  return _render_steps(problem.start, ops), _final_value(problem.start, ops)


def _corrupt_skip(problem: Problem, k: int, rng: np.random.Generator) -> tuple[list[str], int]:
  """The k-th operation is dropped; the rest are applied to the value before it."""
  del rng
  ops = list(problem.ops[:k] + problem.ops[k + 1:])
  return _render_steps(problem.start, ops), _final_value(problem.start, ops)


def _final_value(start: int, ops: Sequence[tuple[str, int]]) -> int:
  value = start
  for op, b in ops:
    value = _APPLY[op](value, b)
  return value


CORRUPTIONS: dict[str, Callable[[Problem, int, np.random.Generator], tuple[list[str], int]]] = {
    "slip": _corrupt_slip,
    "copy": _corrupt_copy,
    "skip": _corrupt_skip,
}


def _first_diff(steps: Sequence[str], reference: Sequence[str]) -> int:
  """First index where two step lists differ as text (length difference counts)."""
  for k, (a, b) in enumerate(zip(steps, reference)):
    if a != b:
      return k
  return min(len(steps), len(reference)) if len(steps) != len(reference) else -1


def corrupt_solution(problem: Problem, rng: np.random.Generator, kind: str | None = None,
                     *, max_tries: int = 100) -> tuple[str, int]:
  """A plausible wrong solution and its first wrong step index.

  ``kind`` is one of :data:`CORRUPTIONS` (``slip``, ``copy``, ``skip``) or None
  for a uniform choice per try; the step k is uniform over ``range(K)``. Tries
  are redrawn until the wrong answer differs from the correct one, no value is
  negative and the first wrong step is exactly k (e.g. skipping one of two
  identical consecutive ops would hide the error one step later).
  """
  if kind is not None and kind not in CORRUPTIONS:
    raise ValueError(f"unknown corruption kind {kind!r}; expected one of {sorted(CORRUPTIONS)}")
  names = sorted(CORRUPTIONS)
  reference = list(problem.steps)
  for _ in range(max_tries):
    name = kind if kind is not None else names[int(rng.integers(len(names)))]
    k = int(rng.integers(problem.num_ops))
    steps, answer = CORRUPTIONS[name](problem, k, rng)
    results = [int(s.rsplit("=", 1)[1]) for s in steps]
    if answer == problem.answer or min(results, default=answer) < 0:
      continue
    if _first_diff(steps, reference) != k:
      continue
    return _render_solution(steps, answer), k
  raise ValueError(f"could not corrupt problem {problem.key} with kind={kind!r} "
                   f"in {max_tries} tries")
