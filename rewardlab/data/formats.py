"""Readers for the public reward-model data formats (``.jsonl`` and ``.parquet``).

Each format is a row parser registered by name in ``PARSERS``; ``read_records``
picks the file reader from the extension and the parser from ``kind``:

=========================  =====================================================  ====================
kind                       fields (named as in the public datasets)               record
=========================  =====================================================  ====================
``preference``             prompt?, chosen, rejected, margin?                     ``PreferencePair``
``helpsteer2``             prompt, response, helpfulness … verbosity (int 0–4)    ``RatedResponse``
``helpsteer2_preference``  prompt, response_1, response_2, preference_strength    ``PreferencePair``
``math_shepherd``          input, label, task?                                    ``StepwiseSolution``
``stepwise``               prompt, completions, labels                            ``StepwiseSolution``
``rewardbench``            id, prompt, chosen, rejected, subset, *_model?         ``RewardBenchPair``
``rewardbench2``           id, prompt, chosen[], rejected[], num_correct, subset  ``RewardBench2Row``
``processbench``           id, problem, steps, label, generator?, final_answer…?  ``ProcessBenchRow``
=========================  =====================================================  ====================

With ``strict=True`` (the default) the first malformed row raises ``FormatError``
naming the file, the row (1-based jsonl line, 0-based parquet row index), the
field and what was wrong. With ``strict=False`` the row is skipped and counted in
``ReadStats.skipped`` under its reason (``missing_field``, ``wrong_type``,
``bad_value``, ``length_mismatch``, ``tag_mismatch``, ``invalid_json``, ``invalid_utf8``,
``corrupt_file``, ``unencodable``). Files are read as UTF-8 (a byte-order mark is allowed); a parquet file
that cannot be opened at all raises ``FormatError`` at location ``file`` in both modes.
HelpSteer2-Preference ties (``preference_strength == 0``) carry no direction for
(Scaled) Bradley-Terry: they are always skipped and counted as ``"tie"``, in
strict mode too, since they are valid rows.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, Union

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
MATH_SHEPHERD_TAG = "ки"


# ----------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class Message:
  role: str
  content: str

  def to_dict(self) -> dict[str, str]:
    return {"role": self.role, "content": self.content}


Prompt = Union[str, tuple[Message, ...]]  # plain text, or the chat turns before the response


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  """One comparison: ``chosen`` is preferred to ``rejected`` as a reply to ``prompt``.

  ``margin`` is the data's own margin (None when absent); ``strength`` is the
  Scaled-BT weight ``|s|`` (1.0 for plain preference data).
  """
  prompt: Prompt
  chosen: str
  rejected: str
  margin: float | None = None
  strength: float = 1.0


@dataclasses.dataclass(frozen=True)
class RatedResponse:
  """HelpSteer2 row; ``ratings`` follow ``ATTRIBUTES`` order, each in 0..4."""
  prompt: str
  response: str
  ratings: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class StepwiseSolution:
  """A solution split into steps with one label in [0, 1] per step (1 = step is good)."""
  prompt: str
  steps: tuple[str, ...]
  labels: tuple[float, ...]
  task: str | None = None


@dataclasses.dataclass(frozen=True)
class RewardBenchPair:
  id: str
  prompt: str
  chosen: str
  rejected: str
  subset: str
  chosen_model: str | None = None
  rejected_model: str | None = None


@dataclasses.dataclass(frozen=True)
class RewardBench2Row:
  """``chosen`` holds the ``num_correct`` correct completions, ``rejected`` the others."""
  id: str
  prompt: str
  chosen: tuple[str, ...]
  rejected: tuple[str, ...]
  num_correct: int
  subset: str


@dataclasses.dataclass(frozen=True)
class ProcessBenchRow:
  """``label`` is the index of the earliest wrong step, -1 when all steps are correct."""
  id: str
  problem: str
  steps: tuple[str, ...]
  label: int
  generator: str | None = None
  final_answer_correct: bool | None = None


Record = Union[PreferencePair, RatedResponse, StepwiseSolution, RewardBenchPair,
               RewardBench2Row, ProcessBenchRow]


# ----------------------------------------------------------------------------- errors, stats
class FormatError(ValueError):
  """A malformed row: ``str(err)`` reads ``<file>, line 3: field 'chosen': <what>``."""

  def __init__(self, path: str, location: str, field: str | None, reason: str, detail: str):
    self.path, self.location, self.field, self.reason, self.detail = (
        path, location, field, reason, detail)
    where = f"field {field!r}: " if field else ""
    super().__init__(f"{path}, {location}: {where}{detail}")


class RowError(Exception):
  """Raised by row parsers; turned into a ``FormatError`` with file and row attached."""

  def __init__(self, field: str | None, reason: str, detail: str):
    super().__init__(detail)
    self.field, self.reason, self.detail = field, reason, detail


class SkipRow(Exception):
  """A valid row that the record type cannot use (e.g. a preference tie)."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


@dataclasses.dataclass
class ReadStats:
  """Rows seen, records kept, and skipped rows counted per reason.

  ``first_error`` keeps the first message per reason so that a report can show an
  example. Encoders add their own reasons (``too_long``, ``too_many_steps``).
  """
  rows: int = 0
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  first_error: dict[str, str] = dataclasses.field(default_factory=dict)

  def skip(self, reason: str, message: str = "") -> None:
    self.skipped[reason] += 1
    self.first_error.setdefault(reason, message)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def summary(self) -> str:
    parts = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
    return f"{self.rows} rows, {self.kept} kept, {self.num_skipped} skipped ({parts or 'none'})"


# ----------------------------------------------------------------------------- field checks
def _type_name(value: Any) -> str:
  return "null" if value is None else type(value).__name__


def _required(row: dict, name: str) -> Any:
  if row.get(name) is None:
    raise RowError(name, "missing_field", "missing (required)")
  return row[name]


def _str(row: dict, name: str, *, optional: bool = False) -> str | None:
  if optional and row.get(name) is None:
    return None
  value = _required(row, name)
  if not isinstance(value, str):
    raise RowError(name, "wrong_type", f"expected a string, got {_type_name(value)}")
  return value


def _int(row: dict, name: str, lo: int | None = None, hi: int | None = None) -> int:
  value = _required(row, name)
  if isinstance(value, bool) or not isinstance(value, int):
    raise RowError(name, "wrong_type", f"expected an integer, got {_type_name(value)}")
  if (lo is not None and value < lo) or (hi is not None and value > hi):
    raise RowError(name, "bad_value", f"expected an integer in [{lo}, {hi}], got {value}")
  return value


def _float(row: dict, name: str, *, optional: bool = False) -> float | None:
  if optional and row.get(name) is None:
    return None
  value = _required(row, name)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RowError(name, "wrong_type", f"expected a number, got {_type_name(value)}")
  if not math.isfinite(value):
    raise RowError(name, "bad_value", f"expected a finite number, got {value}")
  return float(value)


def _id(row: dict, name: str = "id") -> str:
  value = _required(row, name)
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise RowError(name, "wrong_type", f"expected a string or integer, got {_type_name(value)}")
  return str(value)


def _str_list(row: dict, name: str) -> tuple[str, ...]:
  value = _required(row, name)
  if not isinstance(value, (list, tuple)):
    raise RowError(name, "wrong_type", f"expected a list of strings, got {_type_name(value)}")
  for i, item in enumerate(value):
    if not isinstance(item, str):
      raise RowError(name, "wrong_type", f"item {i}: expected a string, got {_type_name(item)}")
  return tuple(value)


def _messages(value: list, name: str) -> tuple[Message, ...]:
  """A list of ``{"role", "content"}`` dicts -> tuple of ``Message``."""
  out = []
  for i, item in enumerate(value):
    if not isinstance(item, dict):
      raise RowError(name, "wrong_type",
                     f"message {i}: expected a {{'role', 'content'}} object, got {_type_name(item)}")
    for key in ("role", "content"):
      if not isinstance(item.get(key), str):
        raise RowError(name, "wrong_type" if key in item else "missing_field",
                       f"message {i}: {key!r} must be a string, got {_type_name(item.get(key))}")
    out.append(Message(item["role"], item["content"]))
  if not out:
    raise RowError(name, "bad_value", "empty message list")
  return tuple(out)


def _text_or_messages(row: dict, name: str, *, optional: bool = False) -> Prompt | None:
  if optional and row.get(name) is None:
    return None
  value = _required(row, name)
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return _messages(list(value), name)
  raise RowError(name, "wrong_type",
                 f"expected a string or a list of messages, got {_type_name(value)}")


# ----------------------------------------------------------------------------- conversations
_HH_TAG = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_transcript(text: str, name: str) -> tuple[Message, ...]:
  """Anthropic-HH transcript ``"\\n\\nHuman: …\\n\\nAssistant: …"`` -> messages."""
  pieces = _HH_TAG.split(text)
  if pieces[0].strip() or len(pieces) < 3:
    raise RowError("prompt", "missing_field",
                   f"missing, and {name!r} is neither a message list nor a "
                   "'\\n\\nHuman: … \\n\\nAssistant: …' transcript")
  roles = {"Human": "user", "Assistant": "assistant"}
  return tuple(Message(roles[tag], body.strip()) for tag, body in zip(pieces[1::2], pieces[2::2]))


def split_conversations(chosen: tuple[Message, ...], rejected: tuple[Message, ...]
                        ) -> tuple[tuple[Message, ...], str, str]:
  """Shared message prefix = prompt; the one assistant turn after it = response.

  Returns ``(prompt_messages, chosen_text, rejected_text)``.
  """
  k = 0
  while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
    k += 1
  if k == 0:
    raise RowError("chosen", "bad_value", "chosen and rejected share no prompt messages")
  responses = []
  for name, conv in (("chosen", chosen), ("rejected", rejected)):
    rest = conv[k:]
    if len(rest) != 1 or rest[0].role != "assistant":
      raise RowError(name, "bad_value",
                     f"after the {k} messages shared with the other side, expected exactly one "
                     f"assistant message, got roles {[m.role for m in rest]}")
    responses.append(rest[0].content)
  return chosen[:k], responses[0], responses[1]


# ----------------------------------------------------------------------------- row parsers
RowParser = Callable[[dict], Record]
PARSERS: dict[str, RowParser] = {}


def register(kind: str) -> Callable[[RowParser], RowParser]:
  def wrap(fn: RowParser) -> RowParser:
    PARSERS[kind] = fn
    return fn
  return wrap


@register("preference")
def parse_preference(row: dict) -> PreferencePair:
  """TRL / Anthropic-HH / UltraFeedback-binarized preference pairs.

  Forms accepted: (a) ``prompt``, ``chosen``, ``rejected`` strings; (b) ``prompt``
  messages + one-message ``chosen``/``rejected`` assistant lists (TRL
  conversational); (c) full conversations in ``chosen``/``rejected`` (the prompt
  string, when present as in UltraFeedback-binarized, repeats the first user turn
  and is not used); (d) HH transcripts without a prompt. In (c)/(d) the shared
  message prefix is the prompt and the last assistant turn is the response.
  """
  prompt = _text_or_messages(row, "prompt", optional=True)
  chosen = _text_or_messages(row, "chosen")
  rejected = _text_or_messages(row, "rejected")
  margin = _float(row, "margin", optional=True)
  if isinstance(chosen, str) != isinstance(rejected, str):
    raise RowError("rejected", "wrong_type", "chosen and rejected must both be strings or both "
                   "message lists")
  if isinstance(chosen, str):
    if prompt is not None:
      return PreferencePair(prompt, chosen, rejected, margin)
    chosen, rejected = parse_hh_transcript(chosen, "chosen"), parse_hh_transcript(rejected, "rejected")
  elif isinstance(prompt, tuple):
    chosen, rejected = prompt + chosen, prompt + rejected
  elif chosen[0].role == "assistant":
    if prompt is None:
      raise RowError("prompt", "missing_field",
                     "missing, and 'chosen' holds only the assistant reply")
    chosen = (Message("user", prompt),) + chosen
    rejected = (Message("user", prompt),) + rejected
  turns, chosen_text, rejected_text = split_conversations(chosen, rejected)
  return PreferencePair(turns, chosen_text, rejected_text, margin)


@register("helpsteer2")
def parse_helpsteer2(row: dict) -> RatedResponse:
  ratings = tuple(_int(row, name, 0, 4) for name in ATTRIBUTES)
  return RatedResponse(_str(row, "prompt"), _str(row, "response"), ratings)


@register("helpsteer2_preference")
def parse_helpsteer2_preference(row: dict) -> PreferencePair:
  """``preference_strength`` s in -3..3: s < 0 -> response_1 better; strength = |s|."""
  prompt, r1, r2 = _str(row, "prompt"), _str(row, "response_1"), _str(row, "response_2")
  s = _int(row, "preference_strength", -3, 3)
  if s == 0:
    raise SkipRow("tie")
  chosen, rejected = (r1, r2) if s < 0 else (r2, r1)
  return PreferencePair(prompt, chosen, rejected, None, float(abs(s)))


@register("math_shepherd")
def parse_math_shepherd(row: dict) -> StepwiseSolution:
  """``input`` = question + ``Step 1: … ки\\nStep 2: … ки``; ``label`` = same text with
  ``+``/``-`` in place of each ``ки``. Labels: ``+`` -> 1.0, ``-`` -> 0.0."""
  text, label = _str(row, "input"), _str(row, "label")
  parts = text.split(MATH_SHEPHERD_TAG)
  n = len(parts) - 1
  if n == 0:
    raise RowError("input", "tag_mismatch", f"no {MATH_SHEPHERD_TAG!r} step tags")
  expected_len = len(text) - n * (len(MATH_SHEPHERD_TAG) - 1)
  if len(label) != expected_len:
    raise RowError("label", "tag_mismatch",
                   f"does not match 'input' with its {n} {MATH_SHEPHERD_TAG!r} tags replaced by "
                   f"'+'/'-' (expected {expected_len} characters, got {len(label)})")
  marks, pos = [], 0
  for k, part in enumerate(parts[:-1]):
    mark = label[pos + len(part)]
    if label[pos:pos + len(part)] != part or mark not in "+-":
      raise RowError("label", "tag_mismatch", f"no '+'/'-' where 'input' has step tag {k + 1} of {n}")
    marks.append(1.0 if mark == "+" else 0.0)
    pos += len(part) + 1
  if parts[-1].strip():
    raise RowError("input", "bad_value", f"text after the last {MATH_SHEPHERD_TAG!r} tag")
  first = parts[0].find("Step 1:")
  if first < 0:
    raise RowError("input", "bad_value", "cannot find 'Step 1:' that starts the first step")
  steps = (parts[0][first:],) + tuple(parts[1:-1])
  return StepwiseSolution(parts[0][:first].strip(), tuple(s.strip() for s in steps),
                          tuple(marks), _str(row, "task", optional=True))


@register("stepwise")
def parse_stepwise(row: dict) -> StepwiseSolution:
  """TRL stepwise PRM rows; ``labels`` are bools or numbers in [0, 1]."""
  prompt, steps = _str(row, "prompt"), _str_list(row, "completions")
  raw = _required(row, "labels")
  if not isinstance(raw, (list, tuple)):
    raise RowError("labels", "wrong_type", f"expected a list, got {_type_name(raw)}")
  if len(raw) != len(steps):
    raise RowError("labels", "length_mismatch",
                   f"{len(raw)} labels for {len(steps)} completions (steps)")
  labels = []
  for i, v in enumerate(raw):
    if not isinstance(v, (bool, int, float)):
      raise RowError("labels", "wrong_type", f"item {i}: expected a bool or number, got {_type_name(v)}")
    if not 0.0 <= float(v) <= 1.0:
      raise RowError("labels", "bad_value", f"item {i}: expected a value in [0, 1], got {v}")
    labels.append(float(v))
  return StepwiseSolution(prompt, steps, tuple(labels))


@register("rewardbench")
def parse_rewardbench(row: dict) -> RewardBenchPair:
  return RewardBenchPair(
      _id(row), _str(row, "prompt"), _str(row, "chosen"), _str(row, "rejected"),
      _str(row, "subset"), _str(row, "chosen_model", optional=True),
      _str(row, "rejected_model", optional=True))


@register("rewardbench2")
def parse_rewardbench2(row: dict) -> RewardBench2Row:
  chosen, rejected = _str_list(row, "chosen"), _str_list(row, "rejected")
  num_correct = _int(row, "num_correct", 1)
  if num_correct != len(chosen):
    raise RowError("num_correct", "length_mismatch",
                   f"num_correct={num_correct} but 'chosen' has {len(chosen)} completions")
  return RewardBench2Row(_id(row), _str(row, "prompt"), chosen, rejected, num_correct,
                         _str(row, "subset"))


@register("processbench")
def parse_processbench(row: dict) -> ProcessBenchRow:
  steps = _str_list(row, "steps")
  label = _int(row, "label", -1, len(steps) - 1)
  final = row.get("final_answer_correct")
  if final is not None and not isinstance(final, bool):
    raise RowError("final_answer_correct", "wrong_type", f"expected a bool, got {_type_name(final)}")
  return ProcessBenchRow(_id(row), _str(row, "problem"), steps, label,
                         _str(row, "generator", optional=True), final)


# ----------------------------------------------------------------------------- files
RawRow = tuple[str, Union[dict, RowError]]  # (location, row or the reason it is unreadable)


def _jsonl_rows(path: str) -> Iterator[RawRow]:
  """Rows of a UTF-8 JSONL file (a leading byte-order mark is allowed); a line that is
  not valid UTF-8 or not JSON is a bad row of its own, the others are unaffected."""
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      where = f"line {lineno}"
      try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
      except UnicodeDecodeError as e:
        yield where, RowError(None, "invalid_utf8",
                              f"not valid UTF-8 (byte {raw[e.start]:#04x} at byte offset "
                              f"{e.start})")
        continue
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        yield where, RowError(None, "invalid_json", f"invalid JSON ({e.msg} at column {e.colno})")
        continue
      if not isinstance(row, dict):
        yield where, RowError(None, "wrong_type", f"expected a JSON object, got {_type_name(row)}")
      else:
        yield where, row


def _parquet_rows(path: str, batch_size: int = 1024) -> Iterator[RawRow]:
  """Rows of a parquet file. A file that cannot be opened raises `FormatError` (no row
  can be read, so there is nothing to skip); a batch that cannot be decoded is a bad
  row at its first index, and the rest of the file is not read."""
  import pyarrow  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    batches = pq.ParquetFile(path).iter_batches(batch_size=batch_size)
  except (pyarrow.ArrowException, OSError) as e:
    raise FormatError(path, "file", None, "corrupt_file",
                      f"not a readable parquet file ({type(e).__name__}: {e})") from None
  index = 0
  while True:
    try:
      batch = next(batches)
      rows = batch.to_pylist()
    except StopIteration:
      return
    except (pyarrow.ArrowException, OSError, ValueError) as e:
      yield f"row {index}", RowError(None, "corrupt_file",
                                     f"cannot decode rows from here on ({type(e).__name__}: {e})")
      return
    for row in rows:
      yield f"row {index}", row
      index += 1


FILE_READERS: dict[str, Callable[[str], Iterator[RawRow]]] = {
    ".jsonl": _jsonl_rows,
    ".parquet": _parquet_rows,
}


TextCheck = Callable[[str], Union[str, None]]  # text -> why it cannot be used, or None
_NOT_ENCODED = frozenset({"id", "subset", "chosen_model", "rejected_model", "generator", "task"})


def _check_text(record: Record, check: TextCheck) -> None:
  """`RowError` (reason ``unencodable``) naming the first record field whose text
  `check` refuses (e.g. a character the tokenizer lacks)."""
  for field in dataclasses.fields(record):
    if field.name in _NOT_ENCODED:
      continue
    value = getattr(record, field.name)
    items = value if isinstance(value, tuple) else (value,)
    for i, item in enumerate(items):
      text = item.content if isinstance(item, Message) else item
      if not isinstance(text, str):
        continue
      problem = check(text)
      if problem is not None:
        where = f"item {i}: " if isinstance(value, tuple) else ""
        raise RowError(field.name, "unencodable", where + problem)


def iter_records(path: str | os.PathLike, kind: str, *, strict: bool = True,
                 stats: ReadStats | None = None, check_text: TextCheck | None = None
                 ) -> Iterator[Record]:
  """Yield the records of one file, counting rows and skips into ``stats``.

  ``check_text`` (e.g. ``CharTokenizer.unencodable``) refuses rows with text the model
  cannot encode, as bad rows (reason ``unencodable``, the field named as in the record).
  """
  if kind not in PARSERS:
    raise ValueError(f"unknown record kind {kind!r}; known: {sorted(PARSERS)}")
  return iter_parsed(path, PARSERS[kind], strict=strict, stats=stats, check_text=check_text)


def iter_parsed(path: str | os.PathLike, parse: Callable[[dict], Any], *, strict: bool = True,
                stats: ReadStats | None = None, check_text: TextCheck | None = None
                ) -> Iterator[Any]:
  """Yield ``parse(row)`` for the rows of one ``.jsonl`` / ``.parquet`` file.

  ``parse`` raises ``RowError`` for a malformed row (a ``FormatError`` naming the file,
  row and field in strict mode; skipped and counted otherwise) or ``SkipRow``. Other
  readers (e.g. the problem files of :mod:`rewardlab.tasks.problem_files`) use this
  with their own row parsers. ``check_text``: see :func:`iter_records`.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext not in FILE_READERS:
    raise ValueError(f"{path}: unsupported file extension {ext!r}; known: {sorted(FILE_READERS)}")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no such file: {path}")
  stats = ReadStats() if stats is None else stats
  for where, row in FILE_READERS[ext](path):
    stats.rows += 1
    try:
      if isinstance(row, RowError):
        raise row
      record = parse(row)
      if check_text is not None:
        _check_text(record, check_text)
    except SkipRow as skip:
      stats.skip(skip.reason, f"{path}, {where}")
      continue
    except RowError as e:
      err = FormatError(path, where, e.field, e.reason, e.detail)
      if strict:
        raise err from None
      stats.skip(e.reason, str(err))
      continue
    stats.kept += 1
    yield record


def read_records(path: str | os.PathLike, kind: str, strict: bool = True, *,
                 check_text: TextCheck | None = None) -> tuple[list[Record], ReadStats]:
  """All records of a ``.jsonl`` / ``.parquet`` file of format ``kind``, and the stats."""
  stats = ReadStats()
  records = list(iter_records(path, kind, strict=strict, stats=stats, check_text=check_text))
  return records, stats
