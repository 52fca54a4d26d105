"""Metric logging: a JSONL file per run plus a console progress bar; crash-safe JSON files.

JSONL files survive a crash: `truncate_jsonl` drops a torn last line and the records of
steps after the one a run resumes from, `read_jsonl` names the file and line of a bad
line; `write_jsonl` / `append_jsonl` / `read_jsonl` are the project's one JSONL helper
(one strict-JSON object per line). Result JSON is strict JSON (`to_json_safe`: NaN and
infinities become null), and `write_json` replaces the file atomically.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from tqdm.auto import tqdm


def to_python(metrics: dict) -> dict:
  """Device scalars -> plain floats (one transfer for the whole dict)."""
  host = jax.device_get(metrics)
  return {k: (float(np.asarray(v)) if np.ndim(v) == 0 else np.asarray(v).tolist())
          for k, v in host.items()}


class MetricsLogger:
  """Appends one JSON object per logged step to `path` and drives a tqdm bar.

  The bar shows steps/s and ETA; `log` adds tokens/s when `tokens` is given. With
  `write_file=False` (the processes other than 0 of a multi-process run, which share the
  file system) records are returned but not written.
  """

  def __init__(self, path: str, *, total_steps: int, initial_step: int = 0, desc: str = "train",
               disable: bool = False, write_file: bool = True):
    self.path = path
    self._file = None
    if write_file:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      self._file = open(path, "a")
    self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True,
                    disable=disable, mininterval=1.0)
    self._last_time = time.perf_counter()
    self._tokens = 0.0

  def update(self, steps: int = 1, tokens: float = 0.0) -> None:
    self.bar.update(steps)
    self._tokens += tokens

  def log(self, step: int, metrics: dict) -> dict:
    now = time.perf_counter()
    record = {"step": int(step), **to_python(metrics)}
    if self._tokens:
      record["tokens_per_s"] = self._tokens / max(now - self._last_time, 1e-9)
    self._tokens, self._last_time = 0.0, now
    if self._file is not None:
      self._file.write(json.dumps(to_json_safe(record), allow_nan=False) + "\n")
      self._file.flush()
    shown = {k: f"{v:.4g}" for k, v in record.items()
             if k in ("loss", "accuracy", "token_accuracy", "tokens_per_s", "lr") and
             isinstance(v, float)}
    self.bar.set_postfix(shown, refresh=False)
    return record

  def write(self, message: str) -> None:
    self.bar.write(message)

  def close(self) -> None:
    self.bar.close()
    if self._file is not None:
      self._file.close()


class JsonlError(ValueError):
  """A line of a JSONL file that is not a JSON object: names the file and the line."""


def read_jsonl(path: str, *, missing_ok: bool = False) -> list[dict]:
  """The records of a JSONL file; a bad line raises `JsonlError` with file and line.
  `missing_ok`: a file that does not exist has no records."""
  if missing_ok and not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise JsonlError(f"{path}, line {lineno}: invalid JSON ({e.msg} at column {e.colno})"
                         ) from None
      if not isinstance(record, dict):
        raise JsonlError(f"{path}, line {lineno}: expected a JSON object")
      out.append(record)
  return out


def truncate_jsonl(path: str, step: int) -> int:
  """Keep the records with `"step" <= step` (the last one of a repeated step) and drop a
  torn last line; rewrites `path` atomically when anything changes. Returns the number
  of lines dropped. A complete line that is not JSON (not written by a crash) raises."""
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  torn = lines.pop()  # b"" when the file ends with a newline
  dropped = 0
  if torn.strip():
    try:
      json.loads(torn)
      lines.append(torn)  # complete, only its newline is missing
    except (json.JSONDecodeError, UnicodeDecodeError):
      dropped = 1
  kept: dict[int, bytes] = {}
  order: list[int] = []
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise JsonlError(f"{path}, line {lineno}: invalid JSON ({e})") from None
    if not isinstance(record, dict) or "step" not in record:
      raise JsonlError(f"{path}, line {lineno}: expected a JSON object with a 'step'")
    if record["step"] > step:
      dropped += 1
      continue
    if record["step"] in kept:
      dropped += 1
    else:
      order.append(record["step"])
    kept[record["step"]] = line
  if dropped or (data and not data.endswith(b"\n")):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(b"".join(kept[s] + b"\n" for s in order))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  return dropped


def to_json_safe(value):
  """`value` with every non-finite float replaced by None (valid JSON has no NaN)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: to_json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_safe(v) for v in value]
  if isinstance(value, np.generic):
    return to_json_safe(value.item())
  if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
    return to_json_safe(np.asarray(value).tolist())
  return value


def write_json(path: str, value, *, indent: int = 2) -> None:
  """Strict JSON (non-finite numbers as null) written to a temporary file and renamed."""
  text = json.dumps(to_json_safe(value), indent=indent, allow_nan=False, default=str)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _lines(records) -> str:
  return "".join(json.dumps(to_json_safe(r)) + "\n" for r in records)


def write_jsonl(path: str, records) -> str:
  """Write `records` (dicts) as one strict-JSON line each to `path`, creating its
  directory; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(_lines(records))
  return path


def append_jsonl(path: str, *records: dict, sync: bool = False) -> None:
  """Append `records` as one JSON line each to `path` (created if missing), in one write;
  `sync`: flushed to disk before returning (a log that marks finished work)."""
  with open(path, "a", encoding="utf-8") as f:
    f.write(_lines(records))
    if sync:
      f.flush()
      os.fsync(f.fileno())
