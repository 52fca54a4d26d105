"""Problem-file readers (gsm8k / math / prompt_answer) on fixtures in the real layouts."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardlab.data.formats import FormatError
from rewardlab.tasks import MathProblem, MathTask
from rewardlab.tasks.problem_files import read_problems, split_files

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
  return os.path.join(FIXTURES, name)


def test_gsm8k_answers_after_the_marker_and_intermediates():
  problems, stats = read_problems(fixture("gsm8k.jsonl"), "gsm8k")
  assert [p.answer for p in problems] == ["36", "875", "7.5", "11"]
  assert problems[0].question.startswith("A baker makes 24 rolls")
  assert problems[0].intermediates is None
  assert problems[3] == MathProblem(problems[3].question, "11", ("13", "11"))
  assert stats[fixture("gsm8k.jsonl")].kept == 4
  # The gold answer is checked with the math task's own checker.
  assert MathTask().is_correct("so the total is \\boxed{875}", problems[1])
  assert not MathTask().is_correct("#### 876", problems[1])


def test_math_boxed_answers():
  problems, _ = read_problems(fixture("math.jsonl"), "math")
  assert [p.answer for p in problems] == ["\\frac{5}{6}", "2\\sqrt{2}", "4"]
  assert MathTask().is_correct("The answer is $\\boxed{\\sqrt{8}}$.", problems[1])


def test_prompt_answer_strings_and_numbers():
  problems, _ = read_problems(fixture("prompt_answer.jsonl"), "prompt_answer")
  assert problems == [MathProblem("Compute 17 * 3. Put the answer after '####'.", "51"),
                      MathProblem("What is 2 to the power 10?", "1024")]


def test_comma_separated_files_in_order_and_limit(tmp_path):
  files = f"{fixture('gsm8k.jsonl')}, {fixture('gsm8k.jsonl')}"
  assert split_files(files) == [fixture("gsm8k.jsonl")] * 2
  problems, _ = read_problems(files, "gsm8k")
  assert len(problems) == 8 and problems[4] == problems[0]
  first, stats = read_problems(files, "gsm8k", limit=3)
  assert first == problems[:3] and len(stats) == 1


def test_parquet_reads_like_jsonl(tmp_path):
  with open(fixture("math.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  path = str(tmp_path / "math.parquet")
  pq.write_table(pa.Table.from_pylist(rows), path)
  assert read_problems(path, "math")[0] == read_problems(fixture("math.jsonl"), "math")[0]


@pytest.mark.parametrize("fmt, where, field, message", [
    ("gsm8k", "line 2", "answer", "no '####' answer marker"),
    ("math", "line 2", "solution", "no complete \\boxed"),
    ("prompt_answer", "line 2", "answer", "expected a string or a number, got list"),
])
def test_strict_errors_name_file_row_and_field(fmt, where, field, message):
  path = fixture(f"malformed/{fmt}.jsonl")
  with pytest.raises(FormatError) as err:
    read_problems(path, fmt)
  assert (err.value.path, err.value.location, err.value.field) == (path, where, field)
  assert str(err.value).startswith(f"{path}, {where}: field {field!r}: ")
  assert message in str(err.value)


def test_lenient_mode_skips_and_counts():
  path = fixture("malformed/gsm8k.jsonl")
  problems, stats = read_problems(path, "gsm8k", strict=False)
  assert [p.answer for p in problems] == ["12", "5"]
  assert stats[path].rows == 6 and stats[path].kept == 2
  assert dict(stats[path].skipped) == {"bad_value": 2, "missing_field": 1, "invalid_json": 1}
  assert stats[path].first_error["bad_value"].startswith(f"{path}, line 2: field 'answer'")
  problems, stats = read_problems(fixture("malformed/prompt_answer.jsonl"), "prompt_answer",
                                  strict=False)
  assert len(problems) == 1 and stats[fixture("malformed/prompt_answer.jsonl")].num_skipped == 2


def test_bad_intermediates(tmp_path):
  path = str(tmp_path / "steps.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps({"question": "q", "answer": "#### 3", "intermediates": [1, 3]}) + "\n")
    f.write(json.dumps({"question": "q", "answer": "#### 2", "intermediates": [1, "two"]}) + "\n")
  with pytest.raises(FormatError, match="line 2: field 'intermediates': item 1: expected a number"):
    read_problems(path, "gsm8k")


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown problem file format 'csv'"):
    read_problems(fixture("gsm8k.jsonl"), "csv")
  with pytest.raises(ValueError, match="no problem files"):
    read_problems(" , ", "gsm8k")
  with pytest.raises(ValueError, match="unsupported file extension '.json'"):
    read_problems(fixture("gsm8k.json"), "gsm8k")
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    read_problems(fixture("missing.jsonl"), "gsm8k")
