"""Resumable stages of a multi-step experiment, each writing into its own directory.

A stage is done when `<workdir>/<name>/stage.json` exists; that file is written last,
after the stage's artifacts, and records the stage's config, result summary and time.
Running the pipeline again skips done stages and reruns an interrupted one, whose own
code resumes from what it left (checkpoints, finished-problem logs). A done stage whose
recorded config differs from the current one is an error, never silently reused; so is
an interrupted one: a stage records its config in `stage_config.json` before it starts,
and resuming it with another config fails the same way (naming each field and both
values) instead of mixing the two configs' work. A stage
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

from rewardlab.train import interrupt
from rewardlab.train import metrics as metrics_lib

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STARTED_FILE = "stage_config.json"  # written when a stage starts: the config it runs with


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
  """The JSON form of `value`; non-finite numbers become null (strict JSON)."""
  return json.loads(json.dumps(metrics_lib.to_json_safe(value), sort_keys=True, default=str,
                               allow_nan=False))


def _check_config(stage: str, stage_dir: str, recorded: dict, config: dict, what: str) -> None:
  changed = sorted(k for k in set(config) | set(recorded) if config.get(k) != recorded.get(k))
  if changed:
    values = "; ".join(f"{k}: {recorded.get(k)!r} -> {config.get(k)!r}" for k in changed)
    raise StageConfigError(
        f"stage {stage!r} in {stage_dir} was {what} with a different config ({values}); "
        f"use a new --workdir or delete {stage_dir}")


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
    json.dump(record, f, indent=2, default=str, allow_nan=False)
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
  with interrupt.watch():  # SIGTERM / SIGINT: finish the stage's current safe step, then stop
    return _run(stages, workdir, only, stop_after)


def _run(stages, workdir, only, stop_after) -> dict[str, dict]:
  root = os.path.abspath(workdir)
  done: dict[str, dict] = {}
  for stage in stages:
    interrupt.check(f"pipeline: stopped before stage {stage.name!r}; rerun the same command "
                    "to continue")
    stage_dir = os.path.join(workdir, stage.name)
    config = _normalize(dict(stage.config))
    record = None if stage.always else read_stage(stage_dir)
    if record is not None:
      _check_config(stage.name, stage_dir, record["config"], config, "done")
      log.info("stage %s: done already (%.0f s), skipped", stage.name, record["seconds"])
      done[stage.name] = _resolve(record["summary"], root)
    elif only and stage.name not in only:
      log.info("stage %s: not done, not selected", stage.name)
    else:
      os.makedirs(stage_dir, exist_ok=True)
      started = os.path.join(stage_dir, STARTED_FILE)
      if not stage.always and os.path.exists(started):
        with open(started) as f:
          _check_config(stage.name, stage_dir, json.load(f)["config"], config,
                        "started (interrupted)")
        log.info("stage %s: resuming", stage.name)
      elif not stage.always:
        _write_atomic(started, {"stage": stage.name, "config": config})
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
