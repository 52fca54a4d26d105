"""TFDS datasets stored as ArrayRecord files, built and read without TensorFlow.

``build_from_files`` reads local jsonl/parquet files of a public format
(``rewardlab.data.formats``), encodes every record into fixed-shape numpy
arrays (``rewardlab.data.encode``) and writes one TFDS dataset,
``<data_dir>/<name>/<version>/<name>-<split>.array_record-*``, in record order.
``load_source`` (``tfds.data_source``) then gives random access for grain.

Why a builder class of our own instead of
``tfds.dataset_builders.store_as_tfds_dataset``: in tensorflow-datasets 4.9.10
``DatasetBuilder.code_path`` does ``import importlib_resources`` unconditionally
(the package only declares it for Python < 3.9), so the ad-hoc builder fails
with ``ModuleNotFoundError: importlib_resources`` in an environment without it.
``ArrayRecordBuilder`` overrides ``code_path``; nothing else in the
``GeneratorBasedBuilder`` → ArrayRecord path imports TensorFlow.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from rewardlab.data.encode import Example, iter_encoded
from rewardlab.data.formats import ReadStats, iter_records
from rewardlab.data.tokenizers import Tokenizer

PathLike = str | os.PathLike


def features_for(example: Example) -> tfds.features.FeaturesDict:
  """Fixed-shape TFDS features matching one numpy example (shape and dtype per key)."""
  return tfds.features.FeaturesDict({
      key: tfds.features.Tensor(shape=np.shape(value), dtype=np.asarray(value).dtype)
      for key, value in example.items()
  })


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes in-memory iterables of examples as one TFDS dataset (ArrayRecord files).

  Record order is kept (``disable_shuffling``): index ``i`` of a split's data source
  is the ``i``-th example written. Shuffling belongs to the grain pipeline.
  """

  def __init__(self, *, name: str, features: tfds.features.FeaturesDict,
               split_examples: Mapping[str, Iterable[Example]] | None = None,
               version: str = "1.0.0", description: str = "", data_dir: PathLike,
               **kwargs: Any):
    self.name = name
    self.VERSION = tfds.core.Version(version)  # pylint: disable=invalid-name
    self._features = features
    self._split_examples = dict(split_examples or {})
    self._description = description or f"{name}: encoded reward-model examples"
    super().__init__(data_dir=os.fspath(data_dir), file_format="array_record", **kwargs)

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:  # see the module docstring
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self._description,
                                 features=self._features, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(examples)
            for split, examples in self._split_examples.items()}

  def _generate_examples(self, examples: Iterable[Example]) -> Iterator[tuple[int, Example]]:
    yield from enumerate(examples)


def write_examples(name: str, splits: Mapping[str, Iterable[Example]], *, data_dir: PathLike,
                   version: str = "1.0.0", features: tfds.features.FeaturesDict | None = None,
                   description: str = "", overwrite: bool = False) -> ArrayRecordBuilder:
  """Write example iterables (split -> examples) as a TFDS ArrayRecord dataset.

  ``features`` default: inferred from the first example. An existing dataset of the
  same name and version is reused unless ``overwrite``.
  """
  splits = dict(splits)
  if features is None:
    for split, examples in splits.items():
      iterator = iter(examples)
      first = next(iterator, None)
      if first is not None:
        features = features_for(first)
        splits[split] = itertools.chain([first], iterator)
        break
    else:
      raise ValueError(f"{name}: every split is empty; nothing to write")
  builder = ArrayRecordBuilder(name=name, features=features, split_examples=splits,
                               version=version, description=description, data_dir=data_dir)
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return builder


def _encoded(paths: Sequence[PathLike], kind: str, tokenizer: Tokenizer, max_length: int,
             strict: bool, stats: ReadStats, options: dict[str, Any]) -> Iterator[Example]:
  for path in paths:
    records = iter_records(path, kind, strict=strict, stats=stats)
    yield from iter_encoded(tokenizer, records, max_length, stats=stats, **options)


def build_from_files(name: str, files: Mapping[str, PathLike | Sequence[PathLike]], kind: str,
                     tokenizer: Tokenizer, *, data_dir: PathLike, max_length: int,
                     strict: bool = True, version: str = "1.0.0", overwrite: bool = False,
                     **encode_options: Any) -> tuple[ArrayRecordBuilder, dict[str, ReadStats]]:
  """Read, encode and write ``files`` (split -> path or paths) of format ``kind``.

  ``encode_options`` go to the encoder (``max_steps=…``, ``separator=…`` for
  stepwise data). Returns the builder and, per split, the ``ReadStats`` with the
  rows skipped while reading and the examples dropped while encoding (``too_long``,
  ``too_many_steps``); report them. With ``overwrite=False`` an existing dataset is
  reused and its stats are empty (nothing was read).
  """
  stats = {split: ReadStats() for split in files}
  splits = {}
  for split, paths in files.items():
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    splits[split] = _encoded(paths, kind, tokenizer, max_length, strict, stats[split],
                             encode_options)
  builder = write_examples(name, splits, data_dir=data_dir, version=version,
                           description=f"{name}: {kind} records encoded to length {max_length}",
                           overwrite=overwrite)
  return builder, stats


class TypedSource(Sequence):
  """A TFDS data source whose examples keep the stored dtypes.

  TFDS decodes shape-``()`` tensors to Python ``int``/``float``, which batching
  would widen to int64/float64; this view casts every field back to its feature
  dtype (int32 indices stay int32, float32 margins stay float32).
  """

  def __init__(self, source):
    self.source = source
    self.dtypes = {k: f.np_dtype for k, f in source.dataset_info.features.items()}

  def __len__(self) -> int:
    return len(self.source)

  def _cast(self, example: dict) -> Example:
    return {k: np.asarray(v, dtype=self.dtypes[k]) for k, v in example.items()}

  def __getitem__(self, index: int) -> Example:
    return self._cast(self.source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[Example]:
    return [self._cast(ex) for ex in self.source.__getitems__(indices)]


def load_source(name: str, split: str, *, data_dir: PathLike,
                version: str | None = None) -> TypedSource:
  """Random-access source (``len``, ``[i]``) of one split, for grain.

  ``tfds.data_source`` reads the ArrayRecord files; examples are dicts of numpy
  arrays with the stored shapes and dtypes.
  """
  full_name = f"{name}:{version}" if version else name
  return TypedSource(tfds.data_source(full_name, split=split, data_dir=os.fspath(data_dir)))
