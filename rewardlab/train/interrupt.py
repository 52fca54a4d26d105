"""A graceful stop on SIGTERM and SIGINT (a preemption notice, Ctrl-C).

While `watch()` is active the first signal only sets a flag: the running work reaches
its next safe point (the end of a train step, of a labelled problem, of a search
method), saves what it has, logs one line and raises `Interrupted`, a `SystemExit`
with status 128 + the signal number (143 for SIGTERM, 130 for SIGINT), so the process
exits non-zero within seconds. A second signal exits at once. Outside `watch()` the
signals keep their usual effect. `watch()` nests: the pipeline holds it around all of
its stages and each stage's own `watch()` shares the flag.

With several processes (`jax.process_count() > 1`) the processes must stop at the same
step; `loop.fit` agrees on it (see `agreed_stop`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SystemExit):
  """Raised at a safe point after a signal; `code` is 128 + the signal number."""

  def __init__(self, signum: int, message: str):
    super().__init__(128 + signum)
    self.signum, self.message = signum, message

  def __str__(self) -> str:
    return self.message


_state = {"depth": 0, "signum": None, "previous": {}}


def _handler(signum, frame):
  del frame
  if _state["signum"] is not None:  # the second signal: no more waiting
    sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting now\n")
    sys.stderr.flush()
    os._exit(128 + signum)
  _state["signum"] = signum
  sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the next safe point "
                   "(send it again to exit at once)\n")
  sys.stderr.flush()


@contextlib.contextmanager
def watch():
  """Catch SIGTERM / SIGINT for the duration (main thread only; elsewhere a no-op)."""
  main = threading.current_thread() is threading.main_thread()
  if main and _state["depth"] == 0:
    _state["signum"] = None
    _state["previous"] = {s: signal.signal(s, _handler) for s in SIGNALS}
  _state["depth"] += main
  try:
    yield
  finally:
    _state["depth"] -= main
    if main and _state["depth"] == 0:
      for s, previous in _state["previous"].items():
        signal.signal(s, previous)
      _state["previous"] = {}


def requested() -> int | None:
  """The signal number received under `watch()`, or None."""
  return _state["signum"]


def clear() -> None:
  """Forget a received signal (tests that interrupt and resume in one process)."""
  _state["signum"] = None


def stop(message: str) -> Interrupted:
  """Log `message` (the one line that says what was saved) and return the exception."""
  signum = requested() or signal.SIGTERM
  log.warning("%s: %s", signal.Signals(signum).name, message)
  return Interrupted(signum, message)


def check(message: str) -> None:
  """Raise `Interrupted(message)` if a signal arrived (call it where the work is saved)."""
  if requested() is not None:
    raise stop(message)


def agreed_stop(step: int, checkpoint_manager=None) -> bool:
  """Whether every process stops after `step`.

  One process: whether a signal arrived. Several: true on all of them at the same
  step when any one received a signal (an all-gather of the flags) or when orbax's
  preemption check (`CheckpointManager.reached_preemption`, JAX's preemption sync
  point) says the cluster's preemption notice reached this step.
  """
  import jax  # pylint: disable=g-import-not-at-top
  local = requested() is not None
  if jax.process_count() == 1:
    return local
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(local)], np.int32))
  preempted = checkpoint_manager is not None and checkpoint_manager.reached_preemption(step)
  if (bool(np.max(flags)) or preempted) and not local:
    _state["signum"] = signal.SIGTERM  # another process (or the cluster) was told to stop
  return bool(np.max(flags)) or preempted
