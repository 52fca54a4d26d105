"""Readers for the public reward-model formats, on hand-written fixtures in the real layouts."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardlab.data import formats
from rewardlab.data.formats import (FormatError, Message, PreferencePair, ProcessBenchRow,
                                    RatedResponse, RewardBench2Row, RewardBenchPair,
                                    StepwiseSolution, read_records)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
  return os.path.join(FIXTURES, name)


def jsonl_rows(name):
  with open(fixture(name), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name, kind, count", [
    ("preference_strings.jsonl", "preference", 4),
    ("preference_chat.jsonl", "preference", 3),
    ("preference_hh.jsonl", "preference", 3),
    ("helpsteer2.jsonl", "helpsteer2", 4),
    ("helpsteer2_preference.jsonl", "helpsteer2_preference", 3),
    ("math_shepherd.jsonl", "math_shepherd", 3),
    ("stepwise.jsonl", "stepwise", 3),
    ("rewardbench.jsonl", "rewardbench", 3),
    ("rewardbench2.jsonl", "rewardbench2", 4),
    ("processbench.jsonl", "processbench", 3),
])
def test_every_fixture_reads_in_strict_mode(name, kind, count):
  records, stats = read_records(fixture(name), kind)
  assert len(records) == count == stats.kept
  assert stats.rows == count + stats.num_skipped


def test_preference_strings_and_margin():
  records, _ = read_records(fixture("preference_strings.jsonl"), "preference")
  assert records[0] == PreferencePair("The sky is", " blue.", " green.", None, 1.0)
  assert records[1].margin == 1.5
  assert records[2].margin == 2.0 and isinstance(records[2].margin, float)  # int in the file
  assert records[3].margin is None  # explicit null


def test_preference_chat_forms():
  explicit, ultrafeedback, implicit = read_records(fixture("preference_chat.jsonl"), "preference")[0]
  assert explicit == PreferencePair((Message("user", "What color is the sky?"),),
                                    "It is blue.", "It is green.")
  assert ultrafeedback == PreferencePair((Message("user", "Write a haiku about rain."),),
                                         "Soft rain on the roof", "Rain is wet.")
  # Shared prefix of four messages is the prompt, the last assistant turn the response.
  assert implicit.prompt == (Message("system", "Be brief."), Message("user", "Hi"),
                             Message("assistant", "Hello!"), Message("user", "2+3?"))
  assert (implicit.chosen, implicit.rejected) == ("5", "6")


def test_preference_hh_transcripts():
  records, _ = read_records(fixture("preference_hh.jsonl"), "preference")
  assert records[0] == PreferencePair((Message("user", "What is a good name for a cat?"),),
                                      "How about Whiskers?", "Cats do not need names.")
  assert records[1].prompt == (Message("user", "Hi"), Message("assistant", "Hello, how can I help?"),
                               Message("user", "Tell me a fact."))
  assert (records[1].chosen, records[1].rejected) == ("Honey never spoils.", "No.")


def test_helpsteer2_ratings_in_attribute_order():
  records, _ = read_records(fixture("helpsteer2.jsonl"), "helpsteer2")
  assert formats.ATTRIBUTES == ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
  assert records[2] == RatedResponse("Explain rain.", "Water falls from clouds.", (3, 3, 4, 1, 1))


def test_helpsteer2_preference_sign_strength_and_ties():
  records, stats = read_records(fixture("helpsteer2_preference.jsonl"), "helpsteer2_preference")
  # s = -3: response_1 much better; s = +2: response_2 better; s = 0: tie, skipped even in strict mode.
  assert records[0] == PreferencePair("What is 2+2?", "4", "5", None, 3.0)
  assert records[1] == PreferencePair("Say hi.", "Hello!", "hey", None, 2.0)
  assert records[2].strength == 1.0 and records[2].chosen == "apple"
  assert stats.skipped == {"tie": 1} and stats.rows == 4


def test_math_shepherd_steps_and_labels():
  records, _ = read_records(fixture("math_shepherd.jsonl"), "math_shepherd")
  first, wrong, math = records
  assert first.prompt.startswith("Janet’s ducks") and first.prompt.endswith("farmers' market?")
  assert len(first.steps) == 4 and first.labels == (1.0, 1.0, 1.0, 1.0)
  assert first.steps[0] == "Step 1: Janet's ducks lay 16 eggs per day."
  # '-' inside "16 - 3" must not be read as a label; only the tag positions count.
  assert wrong.labels == (1.0, 0.0, 0.0)
  assert wrong.steps[1] == "Step 2: She eats three for breakfast, so she has 16 - 3 = 12 eggs left."
  assert math == StepwiseSolution("What is $1+2\\cdot 3$?",
                                  ("Step 1: Multiplication first: $2\\cdot 3 = 6$.",
                                   "Step 2: Then $1 + 6 = 7$. The answer is: 7"), (1.0, 1.0), "MATH")


def test_stepwise_bool_and_soft_labels():
  records, _ = read_records(fixture("stepwise.jsonl"), "stepwise")
  assert records[1].labels == (1.0, 0.0, 0.0)
  assert records[2] == StepwiseSolution("What is 10-7?", ("10-7 = 3", "The answer is 3"), (1.0, 0.75))


def test_benchmark_rows():
  rb, _ = read_records(fixture("rewardbench.jsonl"), "rewardbench")
  assert rb[2] == RewardBenchPair("2", "What is 12*12?", "144", "124", "math-prm", "human", "unknown")
  rb2, _ = read_records(fixture("rewardbench2.jsonl"), "rewardbench2")
  assert rb2[2] == RewardBench2Row("tied:1", "Name a primary color.", ("Red.", "Blue.", "Yellow."),
                                   ("Green.", "Purple."), 3, "Ties")
  pb, _ = read_records(fixture("processbench.jsonl"), "processbench")
  assert pb[0].label == -1 and pb[0].final_answer_correct is True
  assert pb[1] == ProcessBenchRow("gsm8k-1", "A pen costs $2. How much do 4 pens cost?",
                                  ("One pen costs $2.", "4 * 2 = 6.", "The answer is $6."), 1,
                                  "Llama-3.1-8B-Instruct", False)


# --------------------------------------------------------------------------- malformed rows
def only_line(tmp_path, name, line):
  """A copy of a malformed fixture keeping only ``line`` (others blank, numbers unchanged)."""
  with open(fixture(name), encoding="utf-8") as f:
    lines = f.read().splitlines()
  path = tmp_path / os.path.basename(name)
  path.write_text("\n".join(l if i == line else "" for i, l in enumerate(lines, 1)) + "\n",
                  encoding="utf-8")
  return path


@pytest.mark.parametrize("name, kind, line, field, reason, detail", [
    ("malformed/preference.jsonl", "preference", 2, "chosen", "missing_field", "missing"),
    ("malformed/preference.jsonl", "preference", 3, "chosen", "wrong_type", "got int"),
    ("malformed/preference.jsonl", "preference", 4, "margin", "wrong_type", "expected a number"),
    ("malformed/preference.jsonl", "preference", 5, None, "invalid_json", "invalid JSON"),
    ("malformed/preference.jsonl", "preference", 6, "rejected", "missing_field", "'content'"),
    ("malformed/helpsteer2.jsonl", "helpsteer2", 2, "helpfulness", "wrong_type", "got str"),
    ("malformed/helpsteer2.jsonl", "helpsteer2", 3, "response", "missing_field", "missing"),
    ("malformed/helpsteer2.jsonl", "helpsteer2", 4, "correctness", "bad_value", "got 7"),
    ("malformed/stepwise.jsonl", "stepwise", 2, "labels", "length_mismatch", "2 labels for 3"),
    ("malformed/stepwise.jsonl", "stepwise", 3, "labels", "bad_value", "got 1.5"),
    ("malformed/stepwise.jsonl", "stepwise", 4, "completions", "wrong_type", "got str"),
    ("malformed/math_shepherd.jsonl", "math_shepherd", 2, "label", "tag_mismatch", "its 1 'ки' tags"),
    ("malformed/math_shepherd.jsonl", "math_shepherd", 3, "label", "tag_mismatch", "step tag 1 of 2"),
    ("malformed/math_shepherd.jsonl", "math_shepherd", 4, "input", "bad_value", "'Step 1:'"),
    ("malformed/math_shepherd.jsonl", "math_shepherd", 5, "input", "tag_mismatch", "no 'ки'"),
])
def test_strict_error_names_file_line_and_field(tmp_path, name, kind, line, field, reason, detail):
  path = only_line(tmp_path, name, line)
  with pytest.raises(FormatError) as info:
    read_records(path, kind)
  err = info.value
  message = str(err)
  assert isinstance(err, ValueError)
  assert message.startswith(f"{path}, line {line}: ")
  assert (f"field {field!r}" in message) if field else ("field" not in message)
  assert detail in message
  assert (err.field, err.reason) == (field, reason)


@pytest.mark.parametrize("name, kind, kept, skipped", [
    ("malformed/preference.jsonl", "preference", 2,
     {"missing_field": 2, "wrong_type": 2, "invalid_json": 1}),
    ("malformed/helpsteer2.jsonl", "helpsteer2", 2,
     {"wrong_type": 1, "missing_field": 1, "bad_value": 1}),
    ("malformed/stepwise.jsonl", "stepwise", 1,
     {"length_mismatch": 1, "bad_value": 1, "wrong_type": 1}),
    ("malformed/math_shepherd.jsonl", "math_shepherd", 1, {"tag_mismatch": 3, "bad_value": 1}),
])
def test_lenient_mode_skips_and_counts(name, kind, kept, skipped):
  with pytest.raises(FormatError):  # the same file fails in strict mode
    read_records(fixture(name), kind)
  records, stats = read_records(fixture(name), kind, strict=False)
  assert len(records) == stats.kept == kept
  assert dict(stats.skipped) == skipped
  assert stats.rows == kept + sum(skipped.values())
  assert f"{kept} kept" in stats.summary()


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


@pytest.mark.parametrize("kind, row, field, fragment", [
    ("rewardbench2", {"id": "1", "prompt": "p", "chosen": ["a", "b"], "rejected": ["c"],
                      "num_correct": 1, "subset": "Math"}, "num_correct", "'chosen' has 2"),
    ("processbench", {"id": "x", "problem": "p", "steps": ["a", "b"], "label": 2},
     "label", "[-1, 1], got 2"),
    ("helpsteer2_preference", {"prompt": "p", "response_1": "a", "response_2": "b",
                               "preference_strength": 4}, "preference_strength", "got 4"),
    ("preference", {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "rejected": "b"}, "rejected", "both"),
    ("preference", {"chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}]}, "prompt", "missing"),
    ("preference", {"chosen": "just text", "rejected": "other"}, "prompt", "transcript"),
    ("preference", {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                               {"role": "user", "content": "more"}],
                    "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
     "chosen", "exactly one assistant message"),
])
def test_more_error_paths(tmp_path, kind, row, field, fragment):
  path = write_jsonl(tmp_path / "rows.jsonl", [row])
  with pytest.raises(FormatError, match=r"rows\.jsonl, line 1: ") as info:
    read_records(path, kind)
  assert info.value.field == field and fragment in str(info.value)


def test_blank_lines_are_not_rows_but_keep_line_numbers(tmp_path):
  path = tmp_path / "gaps.jsonl"
  path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n\n{"prompt": 1}\n')
  with pytest.raises(FormatError, match="line 4: field 'prompt'"):
    read_records(path, "preference")


# --------------------------------------------------------------------------- parquet
@pytest.mark.parametrize("name, kind, rows", [
    ("preference_chat.jsonl", "preference", slice(0, 1)),  # prompt column of message lists
    ("preference_chat.jsonl", "preference", slice(1, 3)),  # prompt column of strings / nulls
    ("math_shepherd.jsonl", "math_shepherd", slice(None)),
    ("rewardbench2.jsonl", "rewardbench2", slice(None)),
    ("stepwise.jsonl", "stepwise", slice(0, 2)),           # bool labels
    ("processbench.jsonl", "processbench", slice(None)),
])
def test_parquet_matches_jsonl_including_message_lists(tmp_path, name, kind, rows):
  """A parquet column has one type, so rows mixing string and list prompts go to separate files."""
  path = tmp_path / name.replace(".jsonl", ".parquet")
  pq.write_table(pa.Table.from_pylist(jsonl_rows(name)[rows]), path)
  from_parquet, stats = read_records(path, kind)
  assert from_parquet == read_records(fixture(name), kind)[0][rows]
  assert stats.kept == len(from_parquet) > 0


def test_parquet_error_names_row_index(tmp_path):
  rows = [{"prompt": "q", "completions": ["a"], "labels": [1.0]},
          {"prompt": "q", "completions": ["a", "b"], "labels": [1.0]}]
  path = tmp_path / "prm.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  with pytest.raises(FormatError, match=r"prm\.parquet, row 1: field 'labels': 1 labels for 2"):
    read_records(path, "stepwise")
  records, stats = read_records(path, "stepwise", strict=False)
  assert len(records) == 1 and stats.skipped == {"length_mismatch": 1}


def test_unknown_kind_and_extension(tmp_path):
  with pytest.raises(ValueError, match="unknown record kind 'nope'"):
    read_records(fixture("stepwise.jsonl"), "nope")
  csv = tmp_path / "x.csv"
  csv.write_text("a,b\n")
  with pytest.raises(ValueError, match="unsupported file extension '.csv'"):
    read_records(csv, "stepwise")
