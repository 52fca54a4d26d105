"""GSM8K-format word problems: determinism, splits, the reader round trip, step checking."""
import json

import pytest

from rewardlab.tasks import MathProblem, MathTask, arithmetic, source
from rewardlab.tasks import word_problems as wp
from rewardlab.tasks.problem_files import read_problems

# 37 + 45 = 82, 82 * 3 = 246, 246 - 12 = 234: the arithmetic task's worked example.
EXAMPLE = arithmetic.Problem(37, (("+", 45), ("*", 3), ("-", 12)))
QUESTION = ("Mia has 37 apples. She buys 45 more apples. Then she has 3 times as many apples "
            "as before. She gives away 12 apples. How many apples does Mia have now?")
PROBLEM = MathProblem(QUESTION, "234", ("82", "246", "234"))
REFERENCE = ("Mia buys 45 more, so she has 37 + 45 = 82 apples.\n"
             "3 times as many is 82 * 3 = 246 apples.\n"
             "After giving away 12, Mia has 246 - 12 = 234 apples.\n"
             "#### 234")


class FirstChoice:
  """An rng stand-in that always draws 0: Mia, apples and each operator's first phrasing."""

  def integers(self, n):
    del n
    return 0


def test_render_reads_like_the_docstring_example():
  w = wp.render(EXAMPLE, FirstChoice())
  assert w.question == QUESTION
  assert w.answer == REFERENCE
  assert w.to_row() == {"question": QUESTION, "answer": REFERENCE, "intermediates": [82, 246, 234],
                        "key": "37+45*3-12", "num_ops": 3}


def test_deterministic_by_seed():
  a = wp.generate(50, seed=3, split="train", difficulty="medium")
  b = wp.generate(50, seed=3, split="train", difficulty="medium")
  c = wp.generate(50, seed=4, split="train", difficulty="medium")
  assert [w.to_row() for w in a] == [w.to_row() for w in b]
  assert [w.question for w in a] != [w.question for w in c]


@pytest.mark.parametrize("difficulty", sorted(wp.DIFFICULTIES))
def test_difficulty_and_train_test_disjoint(difficulty):
  level = wp.DIFFICULTIES[difficulty]
  train = wp.generate(300, seed=0, split="train", difficulty=difficulty)
  test = wp.generate(30, seed=0, split="test", difficulty=difficulty)
  test_other_seed = wp.generate(30, seed=9, split="test", difficulty=difficulty)
  train_keys = {w.problem.key for w in train}
  assert len(train_keys) == 300
  assert not train_keys & {w.problem.key for w in test + test_other_seed}
  assert not {w.question for w in train} & {w.question for w in test + test_other_seed}
  for w in train + test:
    assert w.problem.num_ops in level.num_ops
    assert max(w.problem.intermediates) <= level.result_max
    assert all(b <= level.operand_max for op, b in w.problem.ops if op != "*")
    assert len(w.answer.split("\n")) == w.problem.num_ops + 1  # one step per line, then ####
  assert {w.problem.num_ops for w in train} == set(level.num_ops)


def test_cli_files_read_back_and_check_with_the_math_task(tmp_path):
  info = wp.main(["--out", str(tmp_path), "--num_train", "40", "--num_test", "10",
                  "--difficulty", "easy", "--num_ops", "2", "--operand_max", "30", "--seed", "1"])
  assert info["num_ops"] == (2,)
  assert json.loads((tmp_path / "info.json").read_text())["operand_max"] == 30
  expected = wp.generate(40, seed=1, split="train",
                         difficulty=wp.Difficulty((2,), 30, wp.DIFFICULTIES["easy"].result_max))
  problems, stats = read_problems(str(tmp_path / "train.jsonl"), "gsm8k")
  assert stats[str(tmp_path / "train.jsonl")].num_skipped == 0
  assert [(p.question, p.answer, p.intermediates) for p in problems] == [
      (w.question, str(w.problem.answer), tuple(str(v) for v in w.problem.intermediates))
      for w in expected]
  task = MathTask()
  for w, p in zip(expected, problems):
    assert task.is_correct(w.answer, p) and task.first_wrong_step(w.answer, p) == -1
    assert not task.is_correct(w.answer.replace(f"#### {w.problem.answer}",
                                                f"#### {w.problem.answer + 1}"), p)
  cfg = source.config()
  cfg.update(dict(name="math", train_files=str(tmp_path / "train.jsonl"),
                  eval_files=str(tmp_path / "test.jsonl")))
  assert len(source.build(cfg).problems("test", 0, 0)) == 10


def test_answer_checks_with_math_verify():
  task = MathTask()
  assert task.is_correct("So she has \\boxed{234} apples.", PROBLEM)
  assert task.is_correct("The answer is $\\boxed{2.34 \\times 10^2}$.", PROBLEM)  # math-verify
  assert task.is_correct("#### 234.0", PROBLEM)
  assert not task.is_correct("\\boxed{243}", PROBLEM)


@pytest.mark.parametrize("completion, wrong", [
    (REFERENCE, -1),
    ("Let's solve it step by step.\n" + REFERENCE, -1),  # narration claims nothing
    (REFERENCE.replace("= 246 apples", "= 245 apples"), 1),  # a slip at step 1
    (REFERENCE.replace("#### 234", "#### 235"), 3),  # right steps, wrong answer line
    ("x = 37 + 45 = 82\nThen 82 * 3 - 12 = 234\nSo the answer is \\boxed{234}.", -1),  # merged
    ("37 + 45 = 82\n82 * 3 = 246\n246 - 12 = 234", -1),  # no marker: the last step's number
    ("37 + 45 = 82\n82 * 3 = 246\n246 - 12 = 224", 2),
    ("37 + 45 = 72\n72 * 3 = 216\n#### 204", 0),
    ("She has 37 + 45 apples.\nThat makes 246 - 12.\n#### 300", 2),  # no claims: answer step
    ("#### 234\n1 + 1 = 3", -1),  # steps after the answer are ignored
    ("", 0),
])
def test_first_wrong_step_hand_cases(completion, wrong):
  assert MathTask().first_wrong_step(completion, PROBLEM) == wrong


def test_first_wrong_step_of_partial_solutions():
  task = MathTask()
  assert task.first_wrong_step("37 + 45 = 82\n82 * 3 = 246", PROBLEM, finished=False) == -1
  assert task.first_wrong_step("37 + 45 = 82\n82 * 3 = 246", PROBLEM) == 1  # no answer yet
  assert task.first_wrong_step("37 + 45 = 82\n82 * 3 = 264", PROBLEM, finished=False) == 1
  assert task.first_wrong_step("37 + 45 = 82\n#### 82", PROBLEM, finished=False) == 1
  assert task.first_wrong_step("", PROBLEM, finished=False) == -1


def test_first_wrong_step_with_a_multi_token_separator_and_errors():
  task = MathTask(step_separator="\n\n")
  text = "37 + 45 = 82\nso far so good\n\n82 * 3 = 264\n\n264 - 12 = 252\n\n\\boxed{252}"
  assert task.first_wrong_step(text, PROBLEM) == 1
  with pytest.raises(ValueError, match="per-step intermediates"):
    task.first_wrong_step(text, MathProblem(QUESTION, "234"))
  with pytest.raises(ValueError, match="unknown difficulty"):
    wp.generate(3, seed=0, split="train", difficulty="brutal")
