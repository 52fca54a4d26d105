"""Synthetic reward-model data: labels by the task's checker, files in the public formats."""

import numpy as np
import pytest

from rewardlab.data import encode
from rewardlab.data.formats import PreferencePair, StepwiseSolution, read_records
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.tasks import arithmetic, rm_data
from rewardlab.tasks.arithmetic import Problem

PROBLEMS = arithmetic.generate_problems(40, seed=7)
SMALL = Problem(3, (("+", 4), ("*", 2)))  # 3+4=7, 7*2=14


def test_step_labels_hand_cases():
  assert rm_data.step_labels(-1, 3) == [1.0, 1.0, 1.0]
  assert rm_data.step_labels(0, 3) == [0.0, 0.0, 0.0]
  assert rm_data.step_labels(2, 4) == [1.0, 1.0, 0.0, 0.0]
  assert rm_data.solution_steps("3+4=7\n7*2=14\nA:14\n") == ["3+4=7", "7*2=14", "A:14"]
  assert rm_data.solution_steps("3+4=7\n") == ["3+4=7"]  # no answer line, no answer step


def test_preference_rows_pair_a_right_and_a_wrong_solution(tmp_path):
  rows = rm_data.preference_rows(PROBLEMS, np.random.default_rng(0), pairs_per_problem=2)
  assert len(rows) == 2 * len(PROBLEMS)
  for problem, row in zip(np.repeat(PROBLEMS, 2), rows):
    assert row["prompt"] == problem.prompt
    assert arithmetic.first_wrong_step(row["chosen"], problem) == -1
    assert not arithmetic.is_correct(row["rejected"], problem)
  path = rm_data.write_jsonl(str(tmp_path / "pairs.jsonl"), rows)
  records, stats = read_records(path, "preference")
  assert stats.kept == len(rows) and isinstance(records[0], PreferencePair)
  assert (records[3].chosen, records[3].rejected) == (rows[3]["chosen"], rows[3]["rejected"])


def test_stepwise_rows_label_steps_before_the_first_error(tmp_path):
  rows = rm_data.stepwise_rows(PROBLEMS, np.random.default_rng(1), correct_fraction=0.5)
  kinds = set()
  for problem, row in zip(PROBLEMS, rows):
    text = "".join(s + "\n" for s in row["completions"])
    first = arithmetic.first_wrong_step(text, problem)
    assert row["labels"] == rm_data.step_labels(first, len(row["completions"]))
    assert row["completions"][-1].startswith("A:")
    kinds.add(first == -1)
  assert kinds == {True, False}  # both correct and corrupted solutions occur
  path = rm_data.write_jsonl(str(tmp_path / "steps.jsonl"), rows)
  records, _ = read_records(path, "stepwise")
  assert isinstance(records[0], StepwiseSolution)
  ex = encode.encode_solution(CharTokenizer.for_arithmetic(), records[0], 96, max_steps=6)
  tok = CharTokenizer.for_arithmetic()
  n = len(records[0].steps)
  assert all(tok.decode([t]) == "\n" for t in ex["tokens"][ex["step_positions"][:n]])
  assert all(rm_data.stepwise_rows(PROBLEMS[:5], np.random.default_rng(2), correct_fraction=1.0)
             [i]["labels"] == [1.0] * (PROBLEMS[i].num_ops + 1) for i in range(5))


def test_processbench_rows_match_first_wrong_step(tmp_path):
  rows = rm_data.processbench_rows(PROBLEMS, np.random.default_rng(3))
  for problem, row in zip(PROBLEMS, rows):
    assert row["label"] == arithmetic.first_wrong_step(row["steps"], problem)
    assert row["final_answer_correct"] == (row["label"] == -1)
  records, stats = read_records(rm_data.write_jsonl(str(tmp_path / "pb.jsonl"), rows),
                                "processbench")
  assert stats.kept == len(rows) and records[0].label == rows[0]["label"]


def test_ratings_follow_the_documented_rules(tmp_path):
  right = SMALL.solution
  assert rm_data.ratings(SMALL, right) == {"helpfulness": 4, "correctness": 4, "coherence": 4,
                                           "complexity": 2, "verbosity": 2}
  wrong_second = "3+4=7\n7*2=15\nA:15\n"  # first wrong step 1 of K = 2: round(4/3) = 1
  assert rm_data.ratings(SMALL, wrong_second)["correctness"] == 1
  assert rm_data.ratings(SMALL, wrong_second)["helpfulness"] == 1
  rows = rm_data.rating_rows(PROBLEMS, np.random.default_rng(4))
  records, _ = read_records(rm_data.write_jsonl(str(tmp_path / "r.jsonl"), rows), "helpsteer2")
  assert all(0 <= v <= 4 for r in records for v in r.ratings)


def test_strength_rows_point_to_the_right_solution(tmp_path):
  table = {(k, f): rm_data.preference_strength(f, k) for k in (2, 3, 4) for f in range(k)}
  assert table == {(2, 0): 3, (2, 1): 1, (3, 0): 3, (3, 1): 2, (3, 2): 1,
                   (4, 0): 3, (4, 1): 2, (4, 2): 1, (4, 3): 1}
  rows = rm_data.strength_rows(PROBLEMS, np.random.default_rng(5))
  assert {r["preference_strength"] > 0 for r in rows} == {True, False}
  records, _ = read_records(rm_data.write_jsonl(str(tmp_path / "s.jsonl"), rows),
                            "helpsteer2_preference")
  for problem, record in zip(PROBLEMS, records):
    assert arithmetic.is_correct(record.chosen, problem)
    assert not arithmetic.is_correct(record.rejected, problem)
    first = arithmetic.first_wrong_step(record.rejected, problem)
    assert record.strength == rm_data.preference_strength(first, problem.num_ops)


def test_policy_samples_supply_chosen_and_hard_negatives():
  right = SMALL.solution
  slip = "3+4=7\n7*2=16\nA:16\n"
  unfinished = "3+4=8\n"  # no answer line: not used as a negative
  flawed_chain = "3+4=8\n8*2=14\nA:14\n"  # right answer reached by a wrong step
  rows = rm_data.preference_rows([SMALL], np.random.default_rng(0), pairs_per_problem=3,
                                 samples=[[unfinished, flawed_chain, slip, right]])
  assert [r["chosen"] for r in rows] == [right] * 3
  assert [r["rejected"] for r in rows[:2]] == [flawed_chain, slip]
  assert not arithmetic.is_correct(rows[2]["rejected"], SMALL)  # topped up by a corruption
  only_wrong = rm_data.preference_rows([SMALL], np.random.default_rng(0), samples=[[slip]])
  assert only_wrong[0]["chosen"] == SMALL.solution  # the reference when no sample is right
  steps = rm_data.stepwise_rows([SMALL], np.random.default_rng(0), correct_fraction=0.0,
                                samples=[[flawed_chain]])
  assert steps[0]["labels"] == [0.0, 0.0, 0.0]


def test_unknown_format_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="no synthetic builder for format 'rewardbench'"):
    rm_data.write_synthetic(str(tmp_path / "x.jsonl"), "rewardbench", PROBLEMS, seed=0)
