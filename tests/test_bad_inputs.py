"""Bad input names the file, the row and the field; `strict=False` counts instead.

Decoding errors, byte-order marks, text a tokenizer cannot encode, corrupt parquet,
truncated or mismatched safetensors and out-of-range config values. Generated rows
(hypothesis) check that every reader raises nothing but `FormatError` and never loses
a valid row.
"""

import json
import string

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewardlab
from experiments.configs import rm_bt
from rewardlab import models
from rewardlab.data import formats
from rewardlab.data.formats import FormatError, read_records
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.models import hf as hf_lib
from rewardlab.models.config import TransformerConfig
from rewardlab.train import config_checks, reward

TOK = CharTokenizer.for_arithmetic()
GOOD = {"prompt": "Q:1+2\n", "chosen": "1+2=3\n", "rejected": "1+2=4\n"}


def _write(path, lines: list[bytes]):
  path.write_bytes(b"".join(lines))
  return str(path)


def test_invalid_utf8_names_the_line_and_lenient_mode_keeps_the_other_rows(tmp_path):
  row = json.dumps(GOOD).encode() + b"\n"
  path = _write(tmp_path / "p.jsonl", [row, b'{"prompt": "\xff\xfe", "chosen": "a"}\n', row])
  with pytest.raises(FormatError, match=r"p.jsonl, line 2: not valid UTF-8 \(byte 0xff"):
    read_records(path, "preference")
  records, stats = read_records(path, "preference", strict=False)
  assert len(records) == 2 and stats.skipped == {"invalid_utf8": 1} and stats.rows == 3


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path):
  row = json.dumps(GOOD).encode() + b"\n"
  path = _write(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + row, row])
  records, stats = read_records(path, "preference", strict=False)
  assert len(records) == 2 and stats.num_skipped == 0


def test_text_the_tokenizer_cannot_encode_names_file_line_and_field(tmp_path):
  rows = [GOOD, {**GOOD, "rejected": "1+2=Ω\n"}, GOOD]
  path = _write(tmp_path / "p.jsonl", [json.dumps(r).encode() + b"\n" for r in rows])
  with pytest.raises(FormatError, match=r"p.jsonl, line 2: field 'rejected': character 'Ω' "
                                        r"at position 4 is not in the alphabet"):
    read_records(path, "preference", check_text=TOK.unencodable)
  records, stats = read_records(path, "preference", strict=False, check_text=TOK.unencodable)
  assert len(records) == 2 and stats.skipped == {"unencodable": 1}


def test_the_rm_trainer_counts_unencodable_rows_with_strict_false(tmp_path):
  rows = [{"prompt": f"Q:{i}+1\n", "chosen": f"{i}+1={i + 1}\n", "rejected": f"{i}+1={i}\n"}
          for i in range(12)]
  rows[3]["chosen"] = "ünïcode\n"
  for split in ("train", "eval"):
    _write(tmp_path / f"{split}.jsonl", [json.dumps(r).encode() + b"\n" for r in rows])
  cfg = rm_bt.tiny().unlock()
  cfg.data.source, cfg.data.format = "files", "preference"
  cfg.data.train_files, cfg.data.eval_files = str(tmp_path / "train.jsonl"), str(tmp_path / "eval.jsonl")
  with pytest.raises(FormatError, match=r"train.jsonl, line 4: field 'chosen': character 'ü'"):
    reward.load_split([cfg.data.train_files], "preference", TOK, cfg, reward.OBJECTIVES.get("bt"))
  cfg.data.strict = False
  examples, stats = reward.load_split([cfg.data.train_files], "preference", TOK, cfg,
                                      reward.OBJECTIVES.get("bt"))
  assert len(examples) == 11 and stats.skipped["unencodable"] == 1


def test_corrupt_parquet_names_the_file(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path = tmp_path / "p.parquet"
  pq.write_table(pa.Table.from_pylist([GOOD] * 5), path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  for strict in (True, False):
    with pytest.raises(FormatError, match=r"p.parquet, file: not a readable parquet file"):
      read_records(str(path), "preference", strict=strict)


def _tiny_checkpoint(path, num_layers=2):
  config = TransformerConfig(vocab_size=32, hidden_size=16, num_layers=num_layers, num_heads=2,
                             num_kv_heads=1, intermediate_size=32, max_position_embeddings=64)
  rewardlab.save_pretrained(str(path), config, models.init_params(config, jax.random.key(0)))
  return path


def test_a_truncated_safetensors_file_names_the_file(tmp_path):
  path = _tiny_checkpoint(tmp_path / "m")
  weights = path / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-100])
  with pytest.raises(hf_lib.CheckpointError, match=r"model.safetensors: not a readable "
                                                   r"safetensors file \(truncated"):
    rewardlab.load_pretrained(str(path))


def test_weights_the_config_does_not_describe_are_an_error(tmp_path):
  path = _tiny_checkpoint(tmp_path / "m")
  config = json.loads((path / "config.json").read_text())
  (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
  with pytest.raises(hf_lib.CheckpointError,
                     match=r"tensors are not used by the causal LM that config.json describes "
                           r"\(1 layers\): model.layers.1"):
    rewardlab.load_pretrained(str(path))


@pytest.mark.parametrize("field,value,message", [
    ("train.learning_rate", -1e-4, "train.learning_rate=-0.0001 (must be > 0)"),
    ("train.batch_size", 0, "train.batch_size=0 (must be > 0)"),
    ("data.correct_fraction", 1.2, "data.correct_fraction=1.2 (must be in [0, 1])"),
])
def test_out_of_range_values_are_refused_before_anything_is_written(tmp_path, field, value,
                                                                    message):
  cfg = rm_bt.tiny().unlock()
  section, name = field.split(".")
  cfg[section][name] = value
  with pytest.raises(config_checks.ConfigValueError) as err:
    reward.run(cfg, str(tmp_path / "run"))
  assert message in str(err.value)
  assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- generated rows

_text = st.text(alphabet=string.printable + "ки+-Ω\u00e9", max_size=12)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6)
FIELDS = {
    "preference": ("prompt", "chosen", "rejected", "margin"),
    "helpsteer2": ("prompt", "response") + formats.ATTRIBUTES,
    "helpsteer2_preference": ("prompt", "response_1", "response_2", "preference_strength"),
    "stepwise": ("prompt", "completions", "labels"),
    "math_shepherd": ("input", "label", "task"),
    "rewardbench": ("id", "prompt", "chosen", "rejected", "subset", "chosen_model"),
    "rewardbench2": ("id", "prompt", "chosen", "rejected", "num_correct", "subset"),
    "processbench": ("id", "problem", "steps", "label", "generator", "final_answer_correct"),
}
VALID = {
    "preference": GOOD,
    "helpsteer2": {"prompt": "p", "response": "r", **{a: 2 for a in formats.ATTRIBUTES}},
    "helpsteer2_preference": {"prompt": "p", "response_1": "a", "response_2": "b",
                              "preference_strength": -2},
    "stepwise": {"prompt": "p", "completions": ["a", "b"], "labels": [1, 0]},
    "math_shepherd": {"input": "Q Step 1: a ки\nStep 2: b ки", "label": "Q Step 1: a +\nStep 2: b -"},
    "rewardbench": {"id": 1, "prompt": "p", "chosen": "a", "rejected": "b", "subset": "s"},
    "rewardbench2": {"id": "x", "prompt": "p", "chosen": ["a"], "rejected": ["b", "c"],
                     "num_correct": 1, "subset": "s"},
    "processbench": {"id": "x", "problem": "p", "steps": ["a", "b"], "label": 1},
}


def _malformed(kind):
  """A valid row with fields dropped, replaced by random JSON values, or the whole line
  replaced by random bytes."""
  fields = FIELDS[kind]
  edits = st.dictionaries(st.sampled_from(fields), _json_value | st.just(None), max_size=3)
  row = edits.map(lambda e: json.dumps({k: v for k, v in {**VALID[kind], **e}.items()
                                        if v is not None}).encode())
  return row | st.binary(max_size=30).filter(lambda b: b"\n" not in b)


@pytest.mark.parametrize("kind", sorted(FIELDS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_rows_raise_only_format_errors_and_keep_every_valid_row(tmp_path, kind, data):
  rows = data.draw(st.lists(_malformed(kind), min_size=1, max_size=5))
  valid = json.dumps(VALID[kind]).encode()
  lines = [valid] + rows + [valid]
  path = _write(tmp_path / f"{kind}.jsonl", [line + b"\n" for line in lines])
  good, bad = 0, 0
  for line in lines:  # each line alone: a record, a skipped tie, or a FormatError
    one = _write(tmp_path / "one.jsonl", [line + b"\n"])
    try:
      good += len(read_records(one, kind)[0])
    except FormatError as err:
      assert err.path == one and err.location == "line 1", err
      bad += 1
  records, stats = read_records(path, kind, strict=False)
  assert len(records) == good >= 2
  assert stats.num_skipped - stats.skipped.get("tie", 0) == bad
  if bad:
    with pytest.raises(FormatError):
      read_records(path, kind)
  else:
    assert len(read_records(path, kind)[0]) == good
