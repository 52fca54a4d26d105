"""Reward-model batches padded to their own bucket: same loss and gradients as full padding,
bounded compiles, length-sorted windows that resume exactly."""

import functools

import grain
import jax
import numpy as np
import pytest

from experiments.configs import rm_bt
from rewardlab import models
from rewardlab.data import buckets, encode
from rewardlab.data.formats import PreferencePair, StepwiseSolution
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.models import reward as reward_lib
from rewardlab.tasks import arithmetic, rm_data
from rewardlab.train import reward

TOK = CharTokenizer.for_arithmetic()
KEYS = reward.LENGTH_KEYS
BACKBONE = models.tiny_config(vocab_size=TOK.vocab_size, hidden_size=16, num_layers=2,
                              intermediate_size=32, num_heads=2, num_kv_heads=1)


@functools.lru_cache(maxsize=None)
def _pairs(n: int = 96) -> list[dict]:
  problems = arithmetic.generate_problems(n, seed=3, num_ops=(1, 2, 3, 4))
  rows = rm_data.preference_rows(problems, np.random.default_rng(3))
  pairs = [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
  return reward.trim_length([encode.encode_preference(TOK, p, 128) for p in pairs])


def test_bucket_lengths_by_hand():
  assert buckets.bucket_lengths(72, multiple=8, max_buckets=9) == tuple(range(8, 73, 8))
  # 72 / 8 = 9 buckets > 8: spaced by 16 instead; the data set's longest closes the set.
  assert buckets.bucket_lengths(72, multiple=8, max_buckets=8) == (16, 32, 48, 64, 72)
  assert buckets.bucket_lengths(72, multiple=32, max_buckets=8) == (32, 64, 72)
  assert buckets.bucket_lengths(500, multiple=8, max_buckets=4) == (128, 256, 384, 500)
  assert buckets.bucket_lengths(40, multiple=64) == (40,)
  assert buckets.bucket_lengths(72, lengths=(48, 24, 96)) == (24, 48, 72)
  for bad, field in ((dict(multiple=0), "pad_to_multiple"), (dict(max_buckets=0), "max_length"),
                     (dict(lengths=(0, 8)), "length_buckets")):
    with pytest.raises(ValueError, match=field):
      buckets.bucket_lengths(72, **bad)


def test_trim_batch_cuts_only_padding_to_the_bucket():
  batch = encode.stack_examples(_pairs()[:4])
  longest = int(buckets.example_lengths(batch, KEYS).max())
  trimmed = buckets.trim_batch(batch, (8, 16, 24, 32, 48, 64, batch["chosen_tokens"].shape[1]),
                               KEYS)
  keep = trimmed["chosen_tokens"].shape[1]
  assert keep >= longest and keep - longest < 16 and keep < batch["chosen_tokens"].shape[1]
  for key in KEYS:
    if key in batch:
      np.testing.assert_array_equal(trimmed[key], batch[key][:, :keep])
      assert batch[key][:, keep:].sum() == 0 or not key.endswith("mask")
  np.testing.assert_array_equal(trimmed["chosen_score_index"], batch["chosen_score_index"])
  with pytest.raises(ValueError, match="longer than every bucket"):
    buckets.trim_batch(batch, (8,), KEYS)


def _rm(head: str, **kw):
  rm = reward_lib.RewardModelConfig(backbone=BACKBONE, head=head, **kw)
  return rm, reward_lib.init_reward_model(rm, jax.random.key(0))


def _bt_batches():
  full = encode.stack_examples(_pairs()[:6])
  return full, buckets.trim_batch(full, (8, 16, 24, 32, 40, 48, 56, 64, 72, 80), KEYS)


def _prm_batches():
  sols = [StepwiseSolution("Q:12+7\n", ("12+7=19\n", "A:19\n"), (True, True)),
          StepwiseSolution("Q:3*4-2\n", ("3*4=12\n", "12-2=11\n", "A:11\n"), (True, False, False)),
          StepwiseSolution("Q:5+5\n", ("A:10\n",), (True,))]
  full = encode.stack_examples([encode.encode_solution(TOK, s, 80, max_steps=4) for s in sols])
  return full, buckets.trim_batch(full, (8, 16, 24, 32, 40), KEYS)


@pytest.mark.parametrize("kind,head,batches", [
    ("bt", "outcome", _bt_batches), ("genarm", "genarm", _bt_batches),
    ("prm", "process", _prm_batches)])
def test_per_batch_padding_keeps_loss_and_gradients(kind, head, batches):
  cfg = rm_bt.base_config()
  cfg.loss.lm_coef = 0.5 if kind != "genarm" else 0.0  # the LM regularizer's path too
  rm, params = _rm(head)
  loss_fn = reward.OBJECTIVES.get(kind).loss(rm, cfg)
  grad = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b)[0]))
  full, trimmed = batches()
  assert trimmed["tokens" if "tokens" in full else "chosen_tokens"].shape[1] < \
      full["tokens" if "tokens" in full else "chosen_tokens"].shape[1]
  (loss_full, g_full), (loss_cut, g_cut) = grad(params, full), grad(params, trimmed)
  np.testing.assert_allclose(loss_cut, loss_full, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g_cut), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _stream(it, n):
  return [next(it) for _ in range(n)]


def test_sorted_windows_permute_the_shuffled_stream_and_cut_padding():
  examples = _pairs()
  plain = buckets.make_iterator(examples, batch_size=24, seed=5, buckets=None, length_keys=KEYS,
                                shard_index=0, shard_count=1)
  lengths = buckets.bucket_lengths(examples[0]["chosen_tokens"].shape[0], multiple=16)
  sorted_it = buckets.make_iterator(examples, batch_size=8, seed=5, buckets=lengths,
                                    length_keys=KEYS, sort_window=3, shard_index=0, shard_count=1)
  padded_sorted = padded_plain = 0
  for _ in range(4):  # four windows (one epoch = 96 examples)
    window = next(plain)  # the same 24 shuffled examples, unsorted
    got = _stream(sorted_it, 3)
    ids = lambda b: sorted(map(tuple, b["chosen_tokens"][:, :16].tolist()))
    assert sorted(sum((ids(b) for b in got), [])) == ids(window)
    assert all(b["chosen_tokens"].shape[1] in lengths for b in got) and len(lengths) >= 4
    maxima = sorted(int(buckets.example_lengths(b, KEYS).max()) for b in got)
    minima = sorted(int(buckets.example_lengths(b, KEYS).min()) for b in got)
    assert all(lo <= hi for lo, hi in zip(maxima[:-1], minima[1:]))  # batches do not overlap
    padded_sorted += sum(b["chosen_tokens"].size for b in got)
    padded_plain += window["chosen_tokens"].size
  assert padded_sorted < 0.9 * padded_plain


def test_sorted_windows_resume_exactly_from_the_iterator_state():
  make = lambda: buckets.make_iterator(_pairs(), batch_size=8, seed=2, buckets=(24, 48, 80),
                                       length_keys=KEYS, sort_window=4, shard_index=0,
                                       shard_count=1)
  it = make()
  _stream(it, 5)  # stop inside the second window
  state = it.get_state()
  rest = _stream(it, 7)
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(rest, _stream(resumed, 7)):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  other_seed = buckets.make_iterator(_pairs(), batch_size=8, seed=3, buckets=(24, 48, 80),
                                     length_keys=KEYS, sort_window=4, shard_index=0, shard_count=1)
  assert not np.array_equal(next(make())["chosen_tokens"], next(other_seed)["chosen_tokens"])


def test_compiles_are_bounded_by_the_buckets():
  traces = []
  rm = reward_lib.RewardModelConfig(backbone=BACKBONE.replace(num_layers=1), head="outcome")
  params = reward_lib.init_reward_model(rm, jax.random.key(0))
  loss_fn = reward.OBJECTIVES.get("bt").loss(rm, rm_bt.base_config())

  @jax.jit
  def step(params, batch):
    traces.append(batch["chosen_tokens"].shape)
    return loss_fn(params, batch)[0]

  longest = _pairs()[0]["chosen_tokens"].shape[0]
  lengths = buckets.bucket_lengths(longest, multiple=8, max_buckets=3)
  it = buckets.make_iterator(_pairs(), batch_size=4, seed=0, buckets=lengths, length_keys=KEYS,
                             sort_window=6, shard_index=0, shard_count=1)
  seen = set()
  for _ in range(48):  # two epochs
    batch = next(it)
    seen.add(batch["chosen_tokens"].shape[1])
    step(params, batch)
  assert len(lengths) == 3 and seen <= set(lengths)
  assert len(traces) == len(seen) >= 2  # one trace per distinct bucket, never more


def test_batch_padding_config_resolves_and_rejects_unknown_modes():
  cfg = rm_bt.base_config()
  assert reward.batch_padding(cfg) == "batch"  # one process
  cfg.data.batch_padding = "dataset"
  data, lengths = reward.train_batches(_pairs(), cfg)
  assert lengths == [_pairs()[0]["chosen_tokens"].shape[0]]
  assert next(data)["chosen_tokens"].shape[1] == lengths[0]
  cfg.data.batch_padding = "padded"
  with pytest.raises(ValueError, match="data.batch_padding='padded'"):
    reward.batch_padding(cfg)


def test_default_batch_order_is_the_plain_pipelines():
  """Per-batch padding alone (no sort window) keeps the data order of before."""
  from rewardlab.data import pipeline  # pylint: disable=import-outside-toplevel

  cfg = rm_bt.base_config()
  cfg.train.batch_size = 8
  data, lengths = reward.train_batches(_pairs(), cfg)
  plain = pipeline.make_iterator(_pairs(), batch_size=8, seed=cfg.seed)
  assert len(lengths) <= cfg.data.max_length_buckets
  for _ in range(15):
    got, want = next(data), next(plain)
    keep = got["chosen_tokens"].shape[1]
    for k in want:
      np.testing.assert_array_equal(got[k], want[k][:, :keep] if k in KEYS else want[k])
  assert isinstance(data, grain.DatasetIterator)


def _params(model_dir):
  _, params, _ = reward_lib.load_reward_model(model_dir)
  return jax.tree.leaves(params)


@pytest.mark.slow
def test_bucketed_sorted_bt_run_resumes_exactly(tmp_path):
  """`reward.run` with per-batch buckets and sorted windows, interrupted at step 4 (inside
  a window) and resumed, ends with the uninterrupted run's parameters."""
  cfg = rm_bt.tiny().unlock()
  cfg.data.update(batch_padding="batch", sort_window=3)
  cfg.lock()
  full = reward.run(cfg, str(tmp_path / "full"))
  assert len(full["length_buckets"]) > 1
  assert reward.run(cfg, str(tmp_path / "resumed"), stop_after=4) == {"stopped_at": 4}
  resumed = reward.run(cfg, str(tmp_path / "resumed"))
  for a, b in zip(_params(full["reward_model_dir"]), _params(resumed["reward_model_dir"])):
    np.testing.assert_array_equal(a, b)
