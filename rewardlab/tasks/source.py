"""The ``task`` config section shared by every script that samples: problems and prompts.

``config()`` gives the section, ``build(task_cfg, tokenizer)`` a :class:`TaskSource`
whose ``problems(split, num, seed)`` are the problems to sample on and whose
``prompt(problem)`` is the text the policy continues:

* ``name="arithmetic"``: problems from :func:`arithmetic.generate_problems` (``num_ops``,
  ``operand_max``; train / test disjoint by a hash of the problem), exactly as the
  scripts generated them before this section existed;
* ``name="math"``: problems read from ``train_files`` (split ``train``) / ``eval_files``
  (split ``test``) in ``format`` (:mod:`rewardlab.tasks.problem_files`), in file and row
  order, the first ``num`` of them (0 = all); ``seed`` is unused.

Prompts: ``task.prompt(problem)`` (for ``math``, ``template`` with ``{question}``;
``""`` is :data:`DEFAULT_MATH_TEMPLATE`, except for the ``prompt_answer`` format, whose
prompts are used verbatim), then, when ``chat_template`` is on and the tokenizer has a
chat template, wrapped as a user turn (after a system turn when ``system_prompt`` is
set) with the assistant header appended. Otherwise the plain text is the prompt; a
``system_prompt`` that no chat template would carry is an error rather than dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from rewardlab.tasks import (DEFAULT_MATH_TEMPLATE, ArithmeticTask, MathTask, Task, arithmetic,
                             problem_files)

NAMES = ("arithmetic", "math")
SPLITS = ("train", "test")


def config() -> ml_collections.ConfigDict:
  """The ``task`` section with its defaults (unlocked; the caller's config locks it)."""
  c = ml_collections.ConfigDict()
  c.name = "arithmetic"  # "arithmetic" | "math"
  c.format = "gsm8k"  # problem files: "gsm8k" | "math" | "prompt_answer"
  c.train_files = ""  # comma-separated .jsonl / .parquet ("" = none)
  c.eval_files = ""
  c.strict = True  # False: malformed rows are skipped and counted
  c.chat_template = True  # apply the tokenizer's chat template when it has one
  c.system_prompt = ""  # "" = no system turn added (the template's default applies)
  c.template = ""  # math prompt template with {question}; "" = MathTask's default
  c.step_separator = "\n"  # may be several tokens, e.g. "\n\n"
  c.num_ops = (2, 3, 4)  # arithmetic generation (name == "arithmetic")
  c.operand_max = 99
  return c


@dataclasses.dataclass
class TaskSource:
  """Problems and prompts of one ``task`` section (see the module docstring)."""

  task: Task
  step_separator: str
  cfg: Any = dataclasses.field(repr=False)
  tokenizer: Any = dataclasses.field(default=None, repr=False)
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def uses_chat_template(self) -> bool:
    return bool(self.cfg.chat_template and self.tokenizer is not None
                and getattr(self.tokenizer, "has_chat_template", False))

  def problems(self, split: str | None, num: int, seed: int) -> list:
    """``num`` problems of ``split`` (see the module docstring); files: 0 = all."""
    c = self.cfg
    if num < 0:
      raise ValueError(f"number of problems must be >= 0, got {num}")
    if c.name == "arithmetic":
      if split not in SPLITS + (None,):
        raise ValueError(f"split must be one of {SPLITS} (or None: both), got {split!r}")
      return arithmetic.generate_problems(num, seed=seed, num_ops=tuple(c.num_ops),
                                          operand_max=c.operand_max, split=split)
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = "train_files" if split == "train" else "eval_files"
    if not problem_files.split_files(c[key]):
      raise ValueError(f"task.{key} is empty: the {split!r} problems of task.name='math' come "
                       f"from files; pass --config.task.{key}=a.jsonl[,b.parquet]")
    problems, stats = problem_files.read_problems(c[key], c.format, strict=c.strict, limit=num)
    for path, s in stats.items():
      self.skipped[path] = s.num_skipped
    if not problems:
      raise ValueError(f"task.{key}={c[key]!r} holds no usable problems "
                       f"({'; '.join(f'{p}: {s.summary()}' for p, s in stats.items())})")
    return problems

  def prompt(self, problem) -> str:
    """The policy's prompt for ``problem`` (chat-wrapped when the template applies)."""
    text = self.task.prompt(problem)
    if not self.uses_chat_template:
      return text
    messages = [{"role": "user", "content": text}]
    if self.cfg.system_prompt:
      messages.insert(0, {"role": "system", "content": self.cfg.system_prompt})
    return self.tokenizer.chat_prompt(messages, add_generation_prompt=True)


def build(task_cfg: ml_collections.ConfigDict, tokenizer=None) -> TaskSource:
  """A :class:`TaskSource` for ``task_cfg`` (a :func:`config` section) and the policy's
  tokenizer (None: plain-text prompts)."""
  c = task_cfg
  if c.name not in NAMES:
    raise ValueError(f"task.name={c.name!r}; expected one of {NAMES}")
  if c.format not in problem_files.FORMATS:
    raise ValueError(f"task.format={c.format!r}; expected one of {problem_files.FORMATS}")
  if not isinstance(c.step_separator, str) or not c.step_separator:
    raise ValueError(f"task.step_separator must be a non-empty string, got {c.step_separator!r}")
  if c.name == "arithmetic":
    if c.train_files or c.eval_files:
      raise ValueError("task.train_files / eval_files hold problem files, which need "
                       "task.name='math'; the arithmetic task generates its problems")
    if c.step_separator != arithmetic.STEP_SEPARATOR:
      raise ValueError(f"the arithmetic task writes one step per line; task.step_separator must "
                       f"be {arithmetic.STEP_SEPARATOR!r}, got {c.step_separator!r}")
    task = ArithmeticTask()
  else:
    template = c.template or ("{question}" if c.format == "prompt_answer" else None)
    if template is not None and "{question}" not in template:
      raise ValueError(f"task.template must contain '{{question}}', got {template!r}")
    task = MathTask(template or DEFAULT_MATH_TEMPLATE, step_separator=c.step_separator)
  source = TaskSource(task, c.step_separator, c, tokenizer)
  if c.system_prompt and not source.uses_chat_template:
    why = ("task.chat_template is off" if not c.chat_template else
           "the tokenizer has no chat template" if tokenizer is not None else "no tokenizer given")
    raise ValueError(f"task.system_prompt is set but {why}; a system turn needs a chat template")
  return source
