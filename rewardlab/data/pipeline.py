"""Deterministic, checkpointable, per-host sharded batches with grain.

Pipeline: ``source`` (any random-access sequence: a ``tfds.data_source`` split
or a list of example dicts) -> this host's shard -> shuffle(seed) ->
repeat(num_epochs) -> map(transform) -> batch(batch_size, drop_remainder=True)
-> iterator of dicts of numpy arrays with a leading ``[batch_size]`` axis.

* Sharding: host ``i`` of ``n`` reads indices ``i, i + n, i + 2n, …`` of the first
  ``n * (len // n)`` examples, so hosts are disjoint and all have the same number
  of examples (at most ``n - 1`` trailing examples are never read). ``batch_size``
  is per host: the global batch is ``batch_size * shard_count``.
* Shuffling: a fresh permutation of the shard every epoch, fixed by ``seed``.
* Remainder: batches may span an epoch boundary; only the final incomplete batch
  of a finite run (``num_epochs`` set) is dropped, so every batch has the same
  shape (one compile) and every host yields the same number of batches.
* Checkpointing: the iterator's position is ``it.get_state()`` / ``it.set_state()``;
  with orbax, save it as ``grain.checkpoint.CheckpointSave(it)`` inside
  ``ocp.args.Composite`` and restore into a freshly made iterator (same arguments)
  with ``grain.checkpoint.CheckpointRestore(it)``: it continues with the next batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax

Example = dict[str, Any]


def shard_indices(num_examples: int, shard_index: int, shard_count: int) -> slice:
  """The strided slice of ``range(num_examples)`` read by one host (equal-size shards)."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count})")
  per_shard = num_examples // shard_count
  return slice(shard_index, per_shard * shard_count, shard_count)


def make_dataset(source: Sequence[Example], *, batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, shard_index: int | None = None,
                 shard_count: int | None = None,
                 transform: Callable[[Example], Example] | None = None) -> grain.MapDataset:
  """The grain ``MapDataset`` of batches described in the module docstring.

  ``shard_index``/``shard_count`` default to ``jax.process_index()`` /
  ``jax.process_count()``. ``num_epochs=None`` repeats forever. ``transform`` maps
  one example to one example (it must not drop any: filter when building).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  ds = grain.MapDataset.source(source)
  ds = ds.slice(shard_indices(len(ds), shard_index, shard_count))
  if len(ds) == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of {len(source)} examples is empty")
  if len(ds) < batch_size and num_epochs == 1:
    raise ValueError(f"shard {shard_index}/{shard_count} has {len(ds)} examples, fewer than "
                     f"batch_size {batch_size}: one epoch would give no batch")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if transform is not None:
    ds = ds.map(transform)
  return ds.batch(batch_size, drop_remainder=True)


def make_iterator(source: Sequence[Example], *, batch_size: int, seed: int, shuffle: bool = True,
                  num_epochs: int | None = None, shard_index: int | None = None,
                  shard_count: int | None = None,
                  transform: Callable[[Example], Example] | None = None,
                  read_options: grain.ReadOptions | None = None) -> grain.DatasetIterator:
  """A checkpointable iterator over ``make_dataset(...)`` batches (dicts of numpy arrays)."""
  ds = make_dataset(source, batch_size=batch_size, seed=seed, shuffle=shuffle,
                    num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
                    transform=transform)
  return iter(ds.to_iter_dataset(read_options))
