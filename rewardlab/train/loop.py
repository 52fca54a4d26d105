"""A resumable training loop shared by every experiment that fits a model to batches.

`fit` owns: restoring the latest checkpoint (state and data-iterator position), the step
loop with a progress bar and JSONL metrics, periodic and final checkpoints, and an
optional interruption point (`stop_after`) used to test exact resumption. What a step
computes is the caller's `train_step(state, batch) -> (state, metrics)`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Iterator

from rewardlab import sharding
from rewardlab.train import checkpoint as checkpoint_lib
from rewardlab.train import metrics as metrics_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
  state: object
  finished: bool          # False when stopped early by `stop_after`
  start_step: int         # step the run resumed from (0 for a fresh run)
  seconds: float          # wall time of the loop in this invocation
  last_metrics: dict


def fit(state, train_step: Callable, data: Iterator, *, workdir: str, total_steps: int,
        tokens_per_step: float = 0.0, log_every: int = 50, checkpoint_every: int = 0,
        mesh=None, stop_after: int | None = None, desc: str = "train", progress: bool = True,
        extra_metrics: Callable[[int, object], dict] | None = None,
        on_log: Callable[[int, dict], None] | None = None) -> FitResult:
  """Run `train_step` until `state.step == total_steps`, resuming from `workdir`.

  `data` must be a grain iterator (its position is checkpointed with the state).
  `extra_metrics(step, state)` adds host-side values to each log line (e.g. the learning
  rate, or an evaluation of `state.params`).
  """
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     save_every=checkpoint_every)
  restored = ckpt.restore(state, data_iterator=data)
  start = 0
  if restored is not None:
    state, meta = restored
    start = int(state.step)
    log.info("%s: resumed from step %d (%s)", desc, start, meta)
  end = total_steps if stop_after is None else min(stop_after, total_steps)
  logger = metrics_lib.MetricsLogger(os.path.join(workdir, "train_metrics.jsonl"),
                                     total_steps=total_steps, initial_step=start, desc=desc,
                                     disable=not progress)
  last: dict = {}
  t0 = time.perf_counter()
  try:
    for step in range(start + 1, end + 1):
      batch = sharding.shard_batch(next(data), mesh)
      state, metrics = train_step(state, batch)
      logger.update(1, tokens=tokens_per_step)
      if step % log_every == 0 or step == end:
        extra = extra_metrics(step, state) if extra_metrics else {}
        last = logger.log(step, {**metrics, **extra})
        if on_log:
          on_log(step, last)
      if ckpt.should_save(step) or step == end:
        ckpt.save(step, state, data_iterator=data, metadata={"step": step, "desc": desc})
  finally:
    logger.close()
    ckpt.close()
  return FitResult(state=state, finished=end == total_steps, start_step=start,
                   seconds=time.perf_counter() - t0, last_metrics=last)
