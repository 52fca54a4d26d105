"""Batches padded to their own length (rounded up to a bucket), optionally length-sorted.

Examples arrive right padded to one length, the data set's longest (`trim_length` in
`rewardlab.train.reward`). Padding every batch to that length computes on padding: on the
synthetic arithmetic pairs (32-70 tokens, padded to 72) a quarter of the tokens. Here each
batch's length axis is cut to its longest real sequence rounded up to the next *bucket*:

* `bucket_lengths(longest, multiple, max_buckets)`: multiples of `multiple`, spaced wider
  (by multiples of `multiple`) until at most `max_buckets` of them cover `longest`, whose
  own length is always the last bucket. Each distinct bucket is one compiled shape of
  the train step, so `max_buckets` bounds the compiles. Explicit lengths may be given
  instead.
* `trim_batch`: cuts the arrays named in `length_keys` to the batch's bucket. Only
  padding goes: right padding is masked out of attention and of every loss, so the loss
  and its gradients are those of the fully padded batch (to float rounding; tested).
* `SortedWindows` (optional, `sort_window` batches per window): consecutive windows of
  `sort_window x batch_size` examples of the shuffled stream are sorted by length and cut
  into batches, which are then emitted in a seeded random order. Batches become
  homogeneous in length (less padding) while every example is still seen once per epoch
  at about the same time as without sorting. A window is a pure function of (seed, its
  index), so the grain iterator's position still checkpoints and resumes exactly.

Lengths are the mask sums: a `*mask` array in `length_keys` marks real tokens.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import grain
import numpy as np

from rewardlab.data import pipeline

Example = dict[str, np.ndarray]


def bucket_lengths(longest: int, *, multiple: int = 8, max_buckets: int = 8,
                   lengths: Sequence[int] = ()) -> tuple[int, ...]:
  """The padded lengths a batch may take, ascending; the last is `longest`.

  With `lengths` given they are used (those above `longest` dropped, `longest` added
  when missing); else multiples of `step` below `longest`, then `longest`, where `step`
  is the smallest multiple of `multiple` giving at most `max_buckets` buckets.
  """
  if longest < 1:
    raise ValueError(f"longest length must be positive, got {longest}")
  if lengths:
    if any(int(n) < 1 for n in lengths):
      raise ValueError(f"data.length_buckets must be positive lengths, got {tuple(lengths)}")
    return tuple(sorted({int(n) for n in lengths if int(n) < longest} | {longest}))
  if multiple < 1:
    raise ValueError(f"data.pad_to_multiple must be positive, got {multiple}")
  if max_buckets < 1:
    raise ValueError(f"data.max_length_buckets must be positive, got {max_buckets}")
  step = multiple * math.ceil(longest / (multiple * max_buckets))
  return tuple(range(step, longest, step)) + (longest,)


def example_lengths(examples: Sequence[Example] | Example, length_keys: Sequence[str]
                    ) -> np.ndarray:
  """Real tokens of each example's longest sequence: `[N]` (from a list or a stacked batch)."""
  batch = examples if isinstance(examples, dict) else {
      k: np.stack([ex[k] for ex in examples]) for k in examples[0] if k in length_keys}
  masks = [np.asarray(v) for k, v in batch.items() if k in length_keys and k.endswith("mask")]
  if not masks:
    raise ValueError(f"no mask among {sorted(batch)} to measure lengths with ({length_keys})")
  return np.max([m.sum(axis=-1) for m in masks], axis=0)


def bucket_of(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `length`."""
  for bucket in buckets:
    if bucket >= length:
      return bucket
  raise ValueError(f"a sequence of {length} tokens is longer than every bucket {tuple(buckets)}")


def trim_batch(batch: Example, buckets: Sequence[int], length_keys: Sequence[str]) -> Example:
  """`batch` with its `length_keys` arrays cut to the bucket of its longest sequence."""
  keep = bucket_of(int(example_lengths(batch, length_keys).max()), buckets)
  return {k: (v[:, :keep] if k in length_keys else v) for k, v in batch.items()}


class SortedWindows(grain.MapDataset):
  """Batches of a `MapDataset` of windows (stacked `window x batch_size` examples).

  Batch `i` is batch `i % window` of window `i // window` after that window's examples
  are stably sorted by length, cut into `window` batches and those put in an order drawn
  from `(seed, window index)`.
  """

  def __init__(self, windows: grain.MapDataset, *, window: int, batch_size: int, seed: int,
               length_keys: Sequence[str]):
    super().__init__(windows)
    self._windows, self._window, self._batch_size = windows, window, batch_size
    self._seed, self._length_keys = seed, tuple(length_keys)
    self._cached: tuple[int, list[Example]] | None = None

  def __len__(self) -> int:
    return min(len(self._windows) * self._window, sys.maxsize)

  def __str__(self) -> str:
    return f"SortedWindows(window={self._window}, batch_size={self._batch_size})"

  def _split(self, index: int) -> list[Example]:
    if self._cached is None or self._cached[0] != index:
      stacked = self._windows[index]
      order = np.argsort(example_lengths(stacked, self._length_keys), kind="stable")
      batches = [{k: v[order[i:i + self._batch_size]] for k, v in stacked.items()}
                 for i in range(0, len(order), self._batch_size)]
      shuffle = np.random.default_rng([self._seed, index]).permutation(len(batches))
      self._cached = (index, [batches[j] for j in shuffle])
    return self._cached[1]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._split(index // self._window)[index % self._window]


def make_iterator(source: Sequence[Example], *, batch_size: int, seed: int,
                  buckets: Sequence[int] | None, length_keys: Sequence[str],
                  sort_window: int = 0, shard_index: int | None = None,
                  shard_count: int | None = None) -> grain.DatasetIterator:
  """A checkpointable iterator of batches (`pipeline.make_dataset`: sharded, shuffled,
  repeated forever), each cut to its bucket (`buckets=None`: left at the examples' one
  length) after optional length-sorting in windows of `sort_window` batches."""
  if sort_window < 0:
    raise ValueError(f"data.sort_window must be >= 0, got {sort_window}")
  per = batch_size * max(sort_window, 1)
  ds = pipeline.make_dataset(source, batch_size=per, seed=seed, shard_index=shard_index,
                             shard_count=shard_count)
  if sort_window:
    ds = SortedWindows(ds, window=sort_window, batch_size=batch_size, seed=seed,
                       length_keys=length_keys)
  if buckets is not None:
    ds = ds.map(lambda batch: trim_batch(batch, buckets, length_keys))
  return iter(ds.to_iter_dataset())
