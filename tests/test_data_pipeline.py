"""Encoding to fixed-shape arrays, TFDS ArrayRecord round trip, grain batching/sharding/resume."""
import os
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rewardlab.data import builders, encode, pipeline
from rewardlab.data.formats import Message, PreferencePair, RatedResponse, ReadStats, read_records
from rewardlab.data.tokenizers import CharTokenizer as ProjectCharTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PAD, BOS, EOS = 0, 1, 2


class CharTokenizer:
  """One token per character: id = 3 + ord(c); 0/1/2 are pad/bos/eos."""

  def __init__(self, *, chat: bool = False, pad_id: int = PAD):
    self.vocab_size = 3 + 0x110000
    self.pad_id, self.bos_id, self.eos_id = pad_id, BOS, EOS
    self._chat = chat

  def encode(self, text, *, add_bos=False):
    return ([self.bos_id] if add_bos else []) + [3 + ord(c) for c in text]

  def decode(self, ids, *, skip_special=True):
    return "".join(chr(i - 3) for i in ids if i >= 3 or not skip_special)

  def token_to_id(self, token):
    return {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS}.get(token) or 3 + ord(token)

  def chat_prompt(self, messages, *, add_generation_prompt=True):
    if not self._chat:  # the plain fallback of rewardlab.data.tokenizers: contents + "\n"
      return "".join(m["content"].rstrip("\n") + "\n" for m in messages)
    text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")

  @property
  def has_chat_template(self):
    return self._chat


def ids(text):
  return [3 + ord(c) for c in text]


# --------------------------------------------------------------------------- encode
def test_pad_to_right_pads_and_refuses_overflow():
  out = encode.pad_to([5, 6], 4, 9)
  np.testing.assert_array_equal(out, [5, 6, 9, 9])
  assert out.dtype == np.int32
  with pytest.raises(ValueError, match="3 tokens do not fit in length 2"):
    encode.pad_to([1, 2, 3], 2, 0)


def test_encode_pair_plain_appends_eos_and_scores_at_it():
  enc = encode.encode_pair(CharTokenizer(), "ab", "c", 8)
  expected = [BOS] + ids("ab") + ids("c") + [EOS]
  np.testing.assert_array_equal(enc.tokens, expected + [PAD] * 3)
  np.testing.assert_array_equal(enc.mask, [1, 1, 1, 1, 1, 0, 0, 0])
  assert (enc.length, enc.score_index, enc.prompt_length) == (5, 4, 3)
  assert enc.tokens[enc.score_index] == EOS
  assert enc.tokens.dtype == enc.mask.dtype == np.int32


def test_score_index_uses_length_when_pad_equals_eos():
  tok = CharTokenizer(pad_id=EOS)
  enc = encode.encode_pair(tok, "a", "b", 6)
  np.testing.assert_array_equal(enc.tokens, [BOS] + ids("ab") + [EOS] * 3)
  assert enc.score_index == 3 and enc.mask.sum() == 4


def test_encode_pair_chat_template_has_no_extra_bos():
  tok = CharTokenizer(chat=True)
  prompt = (Message("system", "s"), Message("user", "q"))
  enc = encode.encode_pair(tok, prompt, "r", 32)
  expected = ids("<system>s\n<user>q\n<assistant>") + ids("r") + [EOS]
  np.testing.assert_array_equal(enc.tokens[:enc.length], expected)
  assert enc.prompt_length == len(expected) - 2
  # A plain-string prompt becomes one user message.
  enc2 = encode.encode_pair(tok, "q", "r", 32)
  np.testing.assert_array_equal(enc2.tokens[:enc2.length], ids("<user>q\n<assistant>r") + [EOS])


def test_plain_prompt_rendering():
  tok = CharTokenizer()
  prompt = (Message("user", "hi"), Message("assistant", "yo"), Message("user", "q"))
  assert encode.render_prompt(tok, prompt) == "hi\nyo\nq\n"  # the tokenizer's plain fallback
  assert encode.render_prompt(tok, "Q:1+2\n") == "Q:1+2\n"      # strings are used verbatim
  enc = encode.encode_pair(tok, prompt, "r", 16)
  np.testing.assert_array_equal(enc.tokens[:enc.length], [BOS] + ids("hi\nyo\nq\nr") + [EOS])


def test_too_long_is_dropped_not_truncated_and_counted():
  tok, stats = CharTokenizer(), ReadStats()
  # BOS + 2 + 2 + EOS = 6 tokens: fits in 6, not in 5.
  assert encode.encode_pair(tok, "ab", "cd", 6, stats=stats).length == 6
  assert encode.encode_pair(tok, "ab", "cd", 5, stats=stats) is None
  assert stats.skipped == {"too_long": 1}


def test_encode_preference_fields():
  pair = PreferencePair("p", "yes", "no", margin=0.5, strength=2.0)
  ex = encode.encode_preference(CharTokenizer(), pair, 8)
  np.testing.assert_array_equal(ex["chosen_tokens"], [BOS] + ids("pyes") + [EOS, PAD, PAD])
  np.testing.assert_array_equal(ex["rejected_tokens"], [BOS] + ids("pno") + [EOS, PAD, PAD, PAD])
  np.testing.assert_array_equal(ex["rejected_mask"], [1, 1, 1, 1, 1, 0, 0, 0])
  assert (ex["chosen_score_index"], ex["rejected_score_index"]) == (5, 4)
  assert (ex["chosen_prompt_length"], ex["rejected_prompt_length"]) == (2, 2)
  assert ex["margin"] == np.float32(0.5) and ex["strength"] == np.float32(2.0)
  assert ex["margin"].dtype == np.float32 and ex["chosen_tokens"].shape == (8,)
  no_margin = encode.encode_preference(CharTokenizer(), PreferencePair("p", "a", "b"), 8)
  assert no_margin["margin"] == 0.0 and no_margin["strength"] == 1.0


def test_pair_dropped_whole_when_one_side_is_too_long():
  stats = ReadStats()
  pair = PreferencePair("p", "short", "much too long reply")
  assert encode.encode_preference(CharTokenizer(), pair, 10, stats=stats) is None
  assert stats.skipped == {"too_long": 1}


def test_encode_rating_targets():
  ex = encode.encode_rating(CharTokenizer(), RatedResponse("q", "r", (4, 3, 2, 1, 0)), 6)
  np.testing.assert_array_equal(ex["targets"], [4, 3, 2, 1, 0])
  assert ex["targets"].dtype == np.float32 and ex["score_index"] == 3
  np.testing.assert_array_equal(ex["tokens"], [BOS] + ids("qr") + [EOS, PAD, PAD])


def test_step_positions_point_at_the_separator():
  tok = CharTokenizer()
  ex = encode.encode_steps(tok, "Q:", ["1+1=2", "2*3=6"], [1.0, 0.25], 20, 4)
  text = "Q:" + "1+1=2\n" + "2*3=6\n"
  np.testing.assert_array_equal(ex["tokens"][:1 + len(text)], [BOS] + ids(text))
  # BOS + "Q:" = 3 tokens; step 1 + "\n" ends at 3 + 6 - 1 = 8, step 2 at 14.
  np.testing.assert_array_equal(ex["step_positions"], [8, 14, 0, 0])
  assert all(ex["tokens"][p] == ids("\n")[0] for p in ex["step_positions"][:2])
  np.testing.assert_array_equal(ex["step_labels"], [1.0, 0.25, 0, 0])
  np.testing.assert_array_equal(ex["step_mask"], [1, 1, 0, 0])
  assert ex["mask"].sum() == 15 and ex["tokens"][15] == PAD  # no EOS for PRM inputs


def test_step_positions_with_multi_token_separator_and_drops():
  tok, stats = CharTokenizer(), ReadStats()
  ex = encode.encode_steps(tok, "q", ["a", "bc"], [0.0, 1.0], 16, 2, separator=" ки")
  # BOS q | a ␠ к и | b c ␠ к и  -> last tokens at 5 and 10, both the final 'и'.
  np.testing.assert_array_equal(ex["step_positions"], [5, 10])
  assert ex["tokens"][5] == ex["tokens"][10] == ids("и")[0]
  assert encode.encode_steps(tok, "q", ["a", "b", "c"], [1, 1, 1], 16, 2, stats=stats) is None
  assert encode.encode_steps(tok, "q", ["abcdefgh"] * 2, [1, 1], 16, 2, stats=stats) is None
  assert stats.skipped == {"too_many_steps": 1, "too_long": 1}


def test_with_the_project_char_tokenizer():
  tok = ProjectCharTokenizer("Q:0123456789+=\n")
  ex = encode.encode_steps(tok, "Q:1+2\n", ["1+2=3"], [1.0], 16, 2)
  sep = tok.token_to_id("\n")
  assert ex["tokens"][0] == tok.bos_id and ex["step_positions"][0] == 12
  assert ex["tokens"][12] == sep and tok.decode(ex["tokens"]) == "Q:1+2\n1+2=3\n"
  pair = encode.encode_pair(tok, "Q:1\n", "1", 8)
  assert pair.tokens[pair.score_index] == tok.eos_id == 2


def test_encode_records_dispatches_on_record_type_and_counts_drops():
  records, stats = read_records(os.path.join(FIXTURES, "stepwise.jsonl"), "stepwise")
  examples = encode.encode_records(CharTokenizer(), records, 64, stats=stats, max_steps=3)
  # Row 1 takes BOS + 36 + 28 + 31 = 96 tokens > 64; rows 2 and 3 (51 and 39 tokens) fit.
  assert len(examples) == 2 and stats.skipped == {"too_long": 1}
  batch = encode.stack_examples(examples)
  assert batch["tokens"].shape == (2, 64) and batch["step_positions"].shape == (2, 3)
  np.testing.assert_array_equal(batch["step_labels"][1], [1.0, 0.75, 0.0])


# --------------------------------------------------------------------------- TFDS / ArrayRecord
@pytest.fixture(scope="module")
def built_pairs(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  files = [os.path.join(FIXTURES, "preference_strings.jsonl"),
           os.path.join(FIXTURES, "preference_hh.jsonl")]
  tok = CharTokenizer()
  builder, stats = builders.build_from_files(
      "toy_pairs", {"train": files}, "preference", tok, data_dir=data_dir, max_length=48)
  return data_dir, builder, stats, tok


def test_tfds_round_trip_without_tensorflow(built_pairs):
  data_dir, builder, stats, tok = built_pairs
  assert "tensorflow" not in sys.modules
  # HH rows 1 and 2 need BOS + 31 + 19 + EOS = 52 and BOS + 42 + 19 + EOS = 63 > 48 tokens
  # for their chosen side: both pairs are dropped and counted; the other 5 pairs fit.
  assert stats["train"].rows == 7 and stats["train"].skipped == {"too_long": 2}
  source = builders.load_source("toy_pairs", "train", data_dir=data_dir)
  assert len(source) == 5 == builder.info.splits["train"].num_examples
  records = (read_records(os.path.join(FIXTURES, "preference_strings.jsonl"), "preference")[0]
             + read_records(os.path.join(FIXTURES, "preference_hh.jsonl"), "preference")[0])
  expected = encode.encode_records(tok, records, 48)
  assert len(expected) == len(source)
  for i, want in enumerate(expected):  # record order is kept
    got = source[i]
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
      assert np.asarray(got[key]).dtype == want[key].dtype, key
  files = sorted(os.listdir(data_dir / "toy_pairs" / "1.0.0"))
  assert any(f.startswith("toy_pairs-train.array_record") for f in files)


def test_write_examples_reuses_or_overwrites(tmp_path):
  def examples(n, offset):
    return ({"x": np.full((3,), i + offset, np.int32)} for i in range(n))
  builders.write_examples("toy", {"train": examples(4, 0)}, data_dir=tmp_path)
  builders.write_examples("toy", {"train": examples(2, 10)}, data_dir=tmp_path)  # reused
  assert len(builders.load_source("toy", "train", data_dir=tmp_path)) == 4
  builders.write_examples("toy", {"train": examples(2, 10)}, data_dir=tmp_path, overwrite=True)
  source = builders.load_source("toy", "train", data_dir=tmp_path)
  assert len(source) == 2 and source[1]["x"].tolist() == [11, 11, 11]


# --------------------------------------------------------------------------- grain
def toy_source(n):
  return [{"id": np.int32(i), "x": np.arange(3, dtype=np.int32) + i} for i in range(n)]


def take(it, k):
  return [next(it) for _ in range(k)]


def test_batches_shapes_and_drop_remainder():
  it = pipeline.make_iterator(toy_source(10), batch_size=3, seed=0, num_epochs=1,
                              shard_index=0, shard_count=1)
  batches = list(it)
  assert len(batches) == 3  # 10 // 3; the last example is dropped
  assert batches[0]["x"].shape == (3, 3) and batches[0]["id"].shape == (3,)
  ids_seen = np.concatenate([b["id"] for b in batches])
  assert len(set(ids_seen.tolist())) == 9
  for b in batches:
    np.testing.assert_array_equal(b["x"], b["id"][:, None] + np.arange(3))


def test_determinism_and_epoch_reshuffle():
  kw = dict(batch_size=5, num_epochs=2, shard_index=0, shard_count=1)
  run = lambda seed: np.concatenate([b["id"] for b in pipeline.make_iterator(toy_source(10), seed=seed, **kw)])
  a, b, c = run(1), run(1), run(2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert sorted(a[:10]) == sorted(a[10:]) == list(range(10))  # each epoch is a permutation
  assert not np.array_equal(a[:10], a[10:])                   # reshuffled per epoch
  plain = pipeline.make_iterator(toy_source(4), batch_size=2, seed=0, shuffle=False, num_epochs=1,
                                 shard_index=0, shard_count=1)
  assert [x["id"].tolist() for x in plain] == [[0, 1], [2, 3]]


def test_transform_is_applied_per_example():
  it = pipeline.make_iterator(toy_source(4), batch_size=4, seed=0, shuffle=False, num_epochs=1,
                              shard_index=0, shard_count=1,
                              transform=lambda ex: {**ex, "y": ex["x"] * 2})
  batch = next(it)
  np.testing.assert_array_equal(batch["y"], 2 * batch["x"])


@pytest.mark.parametrize("n", [10, 11])
def test_shards_are_disjoint_equal_and_cover(n):
  seen = []
  for shard in range(2):
    it = pipeline.make_iterator(toy_source(n), batch_size=1, seed=7, num_epochs=1,
                                shard_index=shard, shard_count=2)
    seen.append([int(b["id"][0]) for b in it])
  assert len(seen[0]) == len(seen[1]) == n // 2
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(2 * (n // 2)))


def test_bad_shards_and_tiny_shards_are_errors():
  with pytest.raises(ValueError, match="shard_index 2 is not in"):
    pipeline.make_iterator(toy_source(4), batch_size=1, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="fewer than batch_size 3"):
    pipeline.make_iterator(toy_source(4), batch_size=3, seed=0, num_epochs=1,
                           shard_index=0, shard_count=2)


def test_defaults_shard_by_jax_process():
  # A single process: shard 0 of 1 reads everything.
  it = pipeline.make_iterator(toy_source(6), batch_size=6, seed=0, num_epochs=1)
  assert sorted(next(it)["id"].tolist()) == list(range(6))


def assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_resume_from_get_state():
  make = lambda: pipeline.make_iterator(toy_source(7), batch_size=2, seed=3,
                                        shard_index=0, shard_count=1)
  it = make()
  take(it, 3)
  state = it.get_state()
  after = take(it, 5)  # crosses the epoch boundary (7 examples, 2 per batch)
  fresh = make()
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 5), after)


def test_resume_with_orbax_composite_on_tfds_source(built_pairs, tmp_path):
  data_dir = built_pairs[0]
  source = builders.load_source("toy_pairs", "train", data_dir=data_dir)
  make = lambda: pipeline.make_iterator(source, batch_size=2, seed=11, shard_index=0,
                                        shard_count=1)
  it = make()
  first = take(it, 3)
  assert first[0]["chosen_tokens"].shape == (2, 48)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = take(it, 2)
  fresh = make()
  manager.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  assert_batches_equal(take(fresh, 2), expected)
  manager.close()
