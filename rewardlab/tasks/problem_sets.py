"""Which seed draws which problem set: the one place that owns the seeds of the SFT / RL
problem sets, so that every script sees the same held-out problems for the same seed.

For a run seeded `seed`:
  held-out   arithmetic: `num_per_k` problems per number of operations K, each K drawn
             with seed `seed + 1000 + K` from the test split (the SFT evaluation set, so
             an RL run's step 0 reproduces its SFT policy's reported accuracy);
             files: the first `num` problems of `task.eval_files` (0 = all).
  RL train   `source.problems("train", num, seed + 1)`; files: the first `num` rows of
             `task.train_files` (0 = all).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from rewardlab.tasks import source as source_lib

HELD_OUT_SEED_OFFSET = 1000
RL_TRAIN_SEED_OFFSET = 1


def held_out(source, *, seed: int, num_per_k: int = 0, num: int = 0) -> list:
  """The held-out problems of a `TaskSource` (see the module docstring)."""
  c = source.cfg
  if c.name != "arithmetic":
    return source.problems("test", num, seed)
  problems = []
  for k in c.num_ops:
    per_k = ml_collections.ConfigDict(c.to_dict())
    per_k.num_ops = (k,)
    problems += dataclasses.replace(source, cfg=per_k).problems(
        "test", num_per_k, seed + HELD_OUT_SEED_OFFSET + k)
  return problems


def rl_train(source, *, seed: int, num: int) -> list:
  """The problems an RL run samples its prompts from (see the module docstring)."""
  return source.problems("train", num, seed + RL_TRAIN_SEED_OFFSET)


def arithmetic_source(num_ops, operand_max: int):
  """The arithmetic `TaskSource` of a config that has `num_ops` / `operand_max` but no
  task section (the SFT config)."""
  c = source_lib.config()
  c.num_ops, c.operand_max = tuple(num_ops), operand_max
  return source_lib.build(c)
