"""Orbax checkpoints of a train state, the data iterator's position and JSON metadata.

One `ocp.CheckpointManager` step holds a Composite of `state` (params, optimizer state,
step), optionally `data` (a grain iterator, via `grain.checkpoint.CheckpointSave`) and
`metadata` (JSON: the step, the run's config, the elapsed time). Restore always passes
explicit args, restores arrays with the shardings of the given template, and continues
the data iterator exactly where it was. A step is written into a temporary folder and
renamed when complete (orbax), so a crash mid-write leaves the previous step as the
latest; leftover temporary folders are removed when the directory is opened again.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
  """Save/restore `(state, data iterator, metadata)` under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 2, save_every: int = 0):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return bool(self.save_every) and step % self.save_every == 0

  def save(self, step: int, state, *, data_iterator=None, metadata: dict | None = None) -> None:
    args = {"state": ocp.args.StandardSave(state),
            "metadata": ocp.args.JsonSave(metadata or {})}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    start = time.perf_counter()
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.manager.wait_until_finished()
    log.info("checkpoint: step %d saved in %.1f s (%s)", step, time.perf_counter() - start,
             self.directory)

  def read_metadata(self, step: int | None = None) -> dict | None:
    """The JSON metadata of the latest (or `step`) checkpoint, without restoring arrays."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    return dict(restored["metadata"] or {})

  def restore(self, state_template, *, data_iterator=None, step: int | None = None
              ) -> tuple[Any, dict] | None:
    """Latest (or `step`) checkpoint into the template's structure and shardings.

    Returns `(state, metadata)` or None when there is no checkpoint; the data iterator,
    if given, is moved to the saved position in place.
    """
    step = self.manager.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    args = {"state": ocp.args.StandardRestore(abstract), "metadata": ocp.args.JsonRestore()}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["state"], dict(restored["metadata"] or {})

  def close(self) -> None:
    self.manager.close()
