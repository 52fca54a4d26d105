"""A resumable training loop shared by every experiment that fits a model to batches.

`fit` owns: restoring the latest checkpoint (state and data-iterator position), the step
loop with a progress bar and JSONL metrics, periodic and final checkpoints, and an
optional interruption point (`stop_after`) used to test exact resumption. What a step
computes is the caller's `train_step(state, batch) -> (state, metrics)`.

What makes a run survive the cluster:
* SIGTERM / SIGINT (`interrupt`): the current step finishes, is checkpointed, one line
  is logged and `interrupt.Interrupted` (exit status 143 / 130) is raised; with several
  processes all of them stop after the same step.
* `config` is stored with every checkpoint; a resume whose config differs outside
  `config_checks.SAFE_TO_CHANGE` raises `ConfigMismatchError` naming the fields and
  both values, before any array is restored.
* The run's `*metrics.jsonl` files in `workdir` are truncated to the restored step
  (no replayed duplicates, no torn last line), and the elapsed time continues
  (`FitResult.elapsed_s`, stored in the checkpoint metadata).
* A non-finite `loss` or `grad_norm` stops the run (`NonFiniteError`, naming the step
  and the last good checkpoint) after `max_bad_steps` tolerated ones; a bad step is
  never checkpointed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from typing import Callable, Iterator

import jax
import numpy as np

from rewardlab import sharding
from rewardlab.train import checkpoint as checkpoint_lib
from rewardlab.train import config_checks, interrupt
from rewardlab.train import metrics as metrics_lib

log = logging.getLogger(__name__)

GUARDED_METRICS = ("loss", "grad_norm")


class NonFiniteError(FloatingPointError):
  pass


def elapsed_at_checkpoint(workdir: str) -> float:
  """Seconds of training recorded in the latest checkpoint of `workdir` (0 if none)."""
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    meta = ckpt.read_metadata()
  finally:
    ckpt.close()
  return float((meta or {}).get("elapsed_s", 0.0))


def _check_config(meta: dict, config: Mapping | None, directory: str) -> None:
  stored = meta.get("config")
  if config is None:
    return
  if stored is None:
    log.warning("checkpoint step %s in %s has no stored config; resuming unchecked",
                meta.get("step"), directory)
    return
  changes = config_checks.resume_changes(stored, config)
  if changes:
    raise config_checks.ConfigMismatchError(
        f"cannot resume from {directory} (step {meta.get('step')}): the config differs from "
        f"the one its checkpoints were made with: {config_checks.describe(changes)}. Rerun with "
        "the stored values or use a new --workdir (derived.* values follow from other fields, "
        "e.g. the learning-rate schedule's length from train.steps)")


def _truncate_metrics(workdir: str, step: int) -> None:
  if not os.path.isdir(workdir):
    return
  for name in sorted(os.listdir(workdir)):
    if name.endswith("metrics.jsonl"):
      dropped = metrics_lib.truncate_jsonl(os.path.join(workdir, name), step)
      if dropped:
        log.info("%s: dropped %d line(s) after step %d", name, dropped, step)


class _Guard:
  """Checks `GUARDED_METRICS` of a step one step late (no host sync in the hot loop),
  and at once before a checkpoint."""

  def __init__(self, ckpt, max_bad_steps: int):
    self.ckpt, self.max_bad_steps = ckpt, max_bad_steps
    self.pending: tuple[int, dict] | None = None
    self.bad_steps = 0

  def push(self, step: int, metrics: dict) -> None:
    self.flush()
    self.pending = (step, {k: metrics[k] for k in GUARDED_METRICS if k in metrics})

  def flush(self) -> None:
    if self.pending is None:
      return
    step, values = self.pending
    self.pending = None
    host = jax.device_get(values)
    bad = {k: float(np.asarray(v)) for k, v in host.items() if not np.all(np.isfinite(v))}
    if not bad:
      return
    self.bad_steps += 1
    last = self.ckpt.latest_step()
    where = (f"last good checkpoint: step {last} in {self.ckpt.directory}" if last is not None
             else "no checkpoint was written")
    if self.bad_steps > self.max_bad_steps:
      raise NonFiniteError(f"step {step}: non-finite {bad} ({self.bad_steps} bad step(s), "
                           f"{self.max_bad_steps} tolerated); {where}")
    log.warning("step %d: non-finite %s, skipped (%d of %d tolerated)", step, bad,
                self.bad_steps, self.max_bad_steps)


@dataclasses.dataclass
class FitResult:
  state: object
  finished: bool          # False when stopped early by `stop_after`
  start_step: int         # step the run resumed from (0 for a fresh run)
  seconds: float          # wall time of the loop in this invocation
  last_metrics: dict
  elapsed_s: float = 0.0  # wall time of the loop over all invocations (continues on resume)
  bad_steps: int = 0      # non-finite steps tolerated in this invocation


def fit(state, train_step: Callable, data: Iterator, *, workdir: str, total_steps: int,
        tokens_per_step: float = 0.0, log_every: int = 50, checkpoint_every: int = 0,
        mesh=None, stop_after: int | None = None, desc: str = "train", progress: bool = True,
        extra_metrics: Callable[[int, object], dict] | None = None,
        on_log: Callable[[int, dict], None] | None = None,
        config: Mapping | None = None, max_bad_steps: int = 0) -> FitResult:
  """Run `train_step` until `state.step == total_steps`, resuming from `workdir`.

  `data` must be a grain iterator (its position is checkpointed with the state).
  `extra_metrics(step, state)` adds host-side values to each log line (e.g. the learning
  rate, or an evaluation of `state.params`).
  `config` (a ConfigDict, a dict, or `config_checks.run_config(cfg, **derived)` to add
  values computed from it) is stored with each checkpoint and checked on resume. `max_bad_steps` non-finite steps are tolerated (logged and
  counted) before `NonFiniteError`; tolerating any is useful only with an optimizer
  that skips non-finite updates.
  """
  with interrupt.watch():
    return _fit(state, train_step, data, workdir=workdir, total_steps=total_steps,
                tokens_per_step=tokens_per_step, log_every=log_every,
                checkpoint_every=checkpoint_every, mesh=mesh, stop_after=stop_after, desc=desc,
                progress=progress, extra_metrics=extra_metrics, on_log=on_log,
                config=None if config is None else config_checks.flatten(config),
                max_bad_steps=max_bad_steps)


def _fit(state, train_step, data, *, workdir, total_steps, tokens_per_step, log_every,
         checkpoint_every, mesh, stop_after, desc, progress, extra_metrics, on_log, config,
         max_bad_steps) -> FitResult:
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     save_every=checkpoint_every)
  start, elapsed_before = 0, 0.0
  try:
    meta = ckpt.read_metadata()
    if meta is not None:
      _check_config(meta, config, ckpt.directory)
      state, meta = ckpt.restore(state, data_iterator=data)
      start, elapsed_before = int(state.step), float(meta.get("elapsed_s", 0.0))
      log.info("%s: resumed from step %d", desc, start)
  except BaseException:
    ckpt.close()
    raise
  writer = jax.process_index() == 0  # processes share the file system: one writes the metrics
  if writer:
    _truncate_metrics(workdir, start)
  end = total_steps if stop_after is None else min(stop_after, total_steps)
  logger = metrics_lib.MetricsLogger(os.path.join(workdir, "train_metrics.jsonl"),
                                     total_steps=total_steps, initial_step=start, desc=desc,
                                     disable=not progress, write_file=writer)
  guard = _Guard(ckpt, max_bad_steps)
  last: dict = {}
  t0 = time.perf_counter()

  def save(step: int) -> None:
    guard.flush()  # never checkpoint a non-finite step
    ckpt.save(step, state, data_iterator=data, metadata={
        "step": step, "desc": desc, "config": config,
        "elapsed_s": elapsed_before + time.perf_counter() - t0})

  try:
    for step in range(start + 1, end + 1):
      batch = sharding.shard_batch(next(data), mesh)
      state, metrics = train_step(state, batch)
      guard.push(step, metrics)
      logger.update(1, tokens=tokens_per_step)
      if step % log_every == 0 or step == end:
        extra = extra_metrics(step, state) if extra_metrics else {}
        last = logger.log(step, {**metrics, **extra})
        if on_log:
          on_log(step, last)
      saved = ckpt.should_save(step) or step == end
      if saved:
        save(step)
      if step < end and interrupt.agreed_stop(step, ckpt.manager):
        if not saved:
          save(step)
        raise interrupt.stop(f"{desc}: stopped at step {step} of {total_steps}, checkpoint "
                             f"saved in {ckpt.directory}; rerun the same command to resume")
    guard.flush()
  finally:
    logger.close()
    ckpt.close()
  return FitResult(state=state, finished=end == total_steps, start_step=start,
                   seconds=time.perf_counter() - t0, last_metrics=last,
                   elapsed_s=elapsed_before + time.perf_counter() - t0,
                   bad_steps=guard.bad_steps)
