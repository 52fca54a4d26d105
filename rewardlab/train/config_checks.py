"""Checks on a run's config: values in range before anything is written, and resume only
with the config the checkpoints were made with.

`check_values(cfg)` refuses out-of-range values by field name (a learning rate <= 0, a
batch size <= 0, a probability outside [0, 1], ...), naming every bad field at once.

`run_config(cfg, **derived)` is the flat JSON form stored with each checkpoint
(`loop.fit(config=...)`); `derived` adds values computed from the config that must not
change either (e.g. the learning-rate schedule's horizon, so that `train.steps` may grow
only when the schedule is stated explicitly). `resume_changes(stored, current)` lists the
fields that differ, except those in `SAFE_TO_CHANGE` (logging, progress, checkpoint
cadence, the run length, the mesh).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Mapping
from typing import Any

# Fields a resumed run may change: they do not alter what the next step computes.
SAFE_TO_CHANGE = ("progress", "verbosity", "mesh_shape", "compilation_cache",
                  "compilation_cache_dir", "train.steps", "train.log_every",
                  "train.checkpoint_every", "train.eval_every", "train.schedule_steps")


class ConfigValueError(ValueError):
  pass


class ConfigMismatchError(ValueError):
  pass


def _positive(v) -> bool:
  return v > 0


def _non_negative(v) -> bool:
  return v >= 0


def _probability(v) -> bool:
  return 0.0 <= v <= 1.0


# (field-name pattern, test, what the value must be); the first matching pattern applies.
RULES = (
    ("*learning_rate", _positive, "> 0"),
    ("*batch_size", _positive, "> 0"),
    ("rollout_batch", _positive, "> 0"),
    ("group_size", _positive, "> 0"),
    ("update_groups", _positive, "> 0"),
    ("num_epochs", _positive, "> 0"),
    ("num_minibatches", _positive, "> 0"),
    ("max_length", _positive, "> 0"),
    ("max_new_tokens", _positive, "> 0"),
    ("max_prompt_length", _positive, "> 0"),
    ("hidden_size", _positive, "> 0"),
    ("intermediate_size", _positive, "> 0"),
    ("num_layers", _positive, "> 0"),
    ("num_heads", _positive, "> 0"),
    ("num_kv_heads", _positive, "> 0"),
    ("head_lr_multiplier", _positive, "> 0"),
    ("*_lr_multiplier", _positive, "> 0"),
    ("steps", _non_negative, ">= 0"),
    ("warmup_steps", _non_negative, ">= 0"),
    ("weight_decay", _non_negative, ">= 0"),
    ("clip_norm", _non_negative, ">= 0 (0 = no clipping)"),
    ("log_every", _positive, "> 0"),
    ("checkpoint_every", _non_negative, ">= 0"),
    ("eval_every", _positive, "> 0"),
    ("*temperature", _non_negative, ">= 0"),
    ("kl_coef", _non_negative, ">= 0"),
    ("*_fraction", _probability, "in [0, 1]"),
    ("*_probs", _probability, "in [0, 1]"),
    ("top_p", _probability, "in [0, 1]"),
    ("min_p", _probability, "in [0, 1]"),
    ("gamma", _probability, "in [0, 1]"),
    ("lam", _probability, "in [0, 1]"),
    ("b1", _probability, "in [0, 1]"),
    ("b2", _probability, "in [0, 1]"),
    ("threshold", _probability, "in [0, 1]"),
)


def _as_dict(cfg) -> dict:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def flatten(cfg, prefix: str = "") -> dict[str, Any]:
  """`{"train.batch_size": 32, ...}`; tuples become lists (their JSON form)."""
  out = {}
  for key, value in _as_dict(cfg).items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
      out.update(flatten(value, name + "."))
    else:
      out[name] = json.loads(json.dumps(value, default=str))
  return out


def check_values(cfg) -> None:
  """Raise `ConfigValueError` naming every field whose value is out of range."""
  bad = []
  for name, value in flatten(cfg).items():
    leaf = name.rsplit(".", 1)[-1]
    rule = next((r for r in RULES if fnmatch.fnmatchcase(leaf, r[0])), None)
    if rule is None:
      continue
    values = value if isinstance(value, list) else [value]
    for v in values:
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        continue
      if not math.isfinite(v) or not rule[1](v):
        bad.append(f"{name}={value!r} (must be {rule[2]})")
        break
  if bad:
    raise ConfigValueError("config values out of range: " + "; ".join(bad))


def run_config(cfg, **derived) -> dict[str, Any]:
  """The flat config stored with checkpoints, plus `derived.<name>` values."""
  out = flatten(cfg)
  out.update({f"derived.{k}": json.loads(json.dumps(v, default=str))
              for k, v in derived.items()})
  return out


def _safe(name: str, safe) -> bool:
  return any(fnmatch.fnmatchcase(name, pattern) for pattern in safe)


def resume_changes(stored: Mapping, current: Mapping, safe=SAFE_TO_CHANGE
                   ) -> list[tuple[str, Any, Any]]:
  """`[(field, stored value, current value)]` for every unsafe difference."""
  missing = object()
  changes = []
  for name in sorted(set(stored) | set(current)):
    if _safe(name, safe):
      continue
    old, new = stored.get(name, missing), current.get(name, missing)
    if old != new:
      changes.append((name, "<absent>" if old is missing else old,
                      "<absent>" if new is missing else new))
  return changes


def describe(changes) -> str:
  return "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changes)
