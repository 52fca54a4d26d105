"""Resumable stages of a multi-step experiment, each writing into its own directory.

A stage is done when `<workdir>/<name>/stage.json` exists; that file is written last,
after the stage's artifacts, and records the stage's config, result summary and time.
Running the pipeline again skips done stages and reruns an interrupted one, whose own
code resumes from what it left (checkpoints, finished-problem logs). A done stage whose
recorded config differs from the current one is an error, never silently reused. A stage
marked `always` runs every time (a report of the others). Paths inside the run directory
are recorded relative to it (`${workdir}/...`), so a finished run can be moved or copied
and resumed from its new place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """`fn(stage_dir, inputs) -> summary`: `inputs` maps each earlier stage's name to its
  summary; the summary must be JSON-serializable."""

  name: str
  fn: Callable[[str, Mapping[str, dict]], dict]
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  always: bool = False  # run even when done (e.g. a report that reflects the other stages)


class StageConfigError(ValueError):
  pass


def _normalize(value: Any) -> Any:
  return json.loads(json.dumps(value, sort_keys=True, default=str))


WORKDIR_TOKEN = "${workdir}"


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
  """`fn` applied to every string in a JSON-like tree of dicts and lists."""
  if isinstance(value, str):
    return fn(value)
  if isinstance(value, dict):
    return {k: _map_strings(v, fn) for k, v in value.items()}
  if isinstance(value, list):
    return [_map_strings(v, fn) for v in value]
  return value


def _portable(value: Any, root: str) -> Any:
  """Paths inside `root` written as `${workdir}/...`, so a run directory can be moved."""
  inside = lambda s: s == root or s.startswith(root + os.sep)
  return _map_strings(value, lambda s: WORKDIR_TOKEN + s[len(root):] if inside(s) else s)


def _resolve(value: Any, root: str) -> Any:
  """Inverse of `_portable` for the run directory's current location `root`."""
  marked = lambda s: s == WORKDIR_TOKEN or s.startswith(WORKDIR_TOKEN + "/")
  return _map_strings(value, lambda s: (root + s[len(WORKDIR_TOKEN):].replace("/", os.sep)
                                        if marked(s) else s))


def read_stage(stage_dir: str) -> dict | None:
  path = os.path.join(stage_dir, STAGE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_atomic(path: str, record: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2, default=str)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def run_stages(stages: Sequence[Stage], workdir: str, *, only: Sequence[str] = (),
               stop_after: str | None = None) -> dict[str, dict]:
  """Run `stages` in order under `workdir`; returns name -> summary for every done stage.

  `only` restricts which stages may run (the others must be done already, or are skipped
  with their dependants failing loudly on a missing input); `stop_after` ends after
  that stage, as an interruption would.
  """
  names = [s.name for s in stages]
  unknown = sorted(set(only) - set(names))
  if unknown:
    raise ValueError(f"unknown stages {unknown}; stages are {names}")
  os.makedirs(workdir, exist_ok=True)
  root = os.path.abspath(workdir)
  done: dict[str, dict] = {}
  for stage in stages:
    stage_dir = os.path.join(workdir, stage.name)
    config = _normalize(dict(stage.config))
    record = None if stage.always else read_stage(stage_dir)
    if record is not None:
      if record["config"] != config:
        changed = sorted(k for k in set(config) | set(record["config"])
                         if config.get(k) != record["config"].get(k))
        raise StageConfigError(
            f"stage {stage.name!r} in {stage_dir} was done with a different config "
            f"(changed: {changed}); use a new --workdir or delete {stage_dir}")
      log.info("stage %s: done already (%.0f s), skipped", stage.name, record["seconds"])
      done[stage.name] = _resolve(record["summary"], root)
    elif only and stage.name not in only:
      log.info("stage %s: not done, not selected", stage.name)
    else:
      os.makedirs(stage_dir, exist_ok=True)
      log.info("stage %s: running", stage.name)
      start = time.perf_counter()
      summary = _normalize(stage.fn(stage_dir, dict(done)))
      seconds = time.perf_counter() - start
      _write_atomic(os.path.join(stage_dir, STAGE_FILE),
                    {"stage": stage.name, "config": config,
                     "summary": _portable(summary, root),
                     "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
      log.info("stage %s: finished in %.0f s", stage.name, seconds)
      done[stage.name] = summary
    if stop_after == stage.name:
      break
  return done


def stage_seconds(workdir: str, names: Sequence[str]) -> dict[str, float]:
  """Seconds each done stage took when it ran (the run that finished it)."""
  out = {}
  for name in names:
    record = read_stage(os.path.join(workdir, name))
    if record is not None:
      out[name] = record["seconds"]
  return out
