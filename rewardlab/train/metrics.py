"""Metric logging: a JSONL file per run plus a console progress bar."""

from __future__ import annotations

import json
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

  The bar shows steps/s and ETA; `log` adds tokens/s when `tokens` is given.
  """

  def __init__(self, path: str, *, total_steps: int, initial_step: int = 0, desc: str = "train",
               disable: bool = False):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
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
    self._file.write(json.dumps(record) + "\n")
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
    self._file.close()


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: str, record: dict) -> None:
  """Append `record` as one JSON line to `path` (created if missing)."""
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
