"""GSM8K / MATH answer extraction, canonical forms and equivalence (math-verify)."""
import threading

import pytest

from rewardlab import tasks
from rewardlab.tasks import math_answers as ma


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is $\boxed{42}$.", "42"),
    (r"\boxed{\frac{a}{b+\{c\}}} done", r"\frac{a}{b+\{c\}}"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"first \boxed{1}, then \fbox{2}", "2"),
    (r"first \fbox{1}, then \boxed{ x^{2} }", "x^{2}"),
    (r"\boxed 5$", "5"),
    (r"\boxed{3", None),            # cut off before the closing brace
    (r"no box here 7", None),
    (r"\boxedx{3}", None),          # another macro, not a box
])
def test_extract_boxed(text, expected):
  assert ma.extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("He paid $1,234.50 in total.", "1234.50"),
    ("the difference 5-3 is 2, not 5-3", "3"),
    ("x = -3.", "-3"),
    ("temperature \u22124 degrees", "-4"),
    ("Step 1: 42.\n#### 1,000\nextra 7", "1000"),   # the GSM8K marker wins
    ("#### -5", "-5"),
    ("It costs .5 dollars", ".5"),
    ("1,234,567 people", "1234567"),
    ("no digits", None),
    ("", None),
    ("1. Add: 14 + 8 = 22 pencils.\n2. So the answer is 22.\n3. To check", "22"),  # list markers
    ("Step 1: 14 + 8 = 22\nStep 2: check", "22"),
    ("The answer is\n5.", "5"),                    # a number alone on its line is an answer
    ("3.5 apples each", "3.5"),
    ("  2) then 7 more", "7"),
])
def test_extract_last_number(text, expected):
  assert ma.extract_last_number(text) == expected


def test_extract_math_answer_priority():
  assert ma.extract_math_answer(r"12 then \boxed{7} then 9") == "7"
  assert ma.extract_math_answer("12 then 9\n#### 8\n10") == "8"
  assert ma.extract_math_answer("12 then 9") == "9"
  assert ma.extract_math_answer("nothing") is None


@pytest.mark.parametrize("text, expected", [
    (r"\frac{1}{2}", "0.5"),
    ("0.50", "0.5"),
    ("1/2", "0.5"),
    (r"\dfrac12", "0.5"),
    (r"-\frac{1}{3}", "-1/3"),
    (r"\frac{-3}{4}", "-0.75"),
    ("1,000", "1000"),
    ("$1,000$", "1000"),
    (r"\boxed{\dfrac{3}{4}}", "0.75"),
    ("x = 5", "5"),
    (r"10\text{ cm}", "10"),
    (r"\$5.00", "5"),
    ("42.", "42"),
    ("-.5", "-0.5"),
    (r"\sqrt{2}", r"\sqrt{2}"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    ("7/0", "7/0"),
    ("", None),
    (None, None),
])
def test_canonical_answer(text, expected):
  assert ma.canonical_answer(text) == expected


def test_canonical_answer_groups_equal_numbers_for_voting():
  votes = [ma.canonical_answer(a) for a in (r"\frac{1}{2}", "0.5", "0.50", "1/2", r"\tfrac{1}{2}")]
  assert len(set(votes)) == 1


@pytest.mark.parametrize("pred, gold, expected", [
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", r"\frac{1}{2}", True),
    ("1,000", "1000", True),
    ("3", "4", False),
    (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"\frac{\pi}{2}", r"\pi/2", True),
    ("0.333333", r"\frac{1}{3}", True),   # math-verify rounds floats to 6 digits
    ("0.5", r"\frac{1}{3}", False),
    ("x^2+1", "1+x^2", True),
    (r"\text{blue}", r"\text{red}", False),
    (r"\{1,2\}", r"\{2,1\}", True),
    ("2x", "x", False),
    (None, "1", False),
    ("", "1", False),
])
def test_answers_equal(pred, gold, expected):
  assert ma.answers_equal(pred, gold) is expected


def test_answers_equal_works_off_the_main_thread():
  # math-verify's SIGALRM timeout fails outside the main thread; we switch it off there.
  result = []
  thread = threading.Thread(target=lambda: result.append(ma.answers_equal(r"\sqrt{8}", r"2\sqrt{2}")))
  thread.start()
  thread.join()
  assert result == [True]


def test_math_task():
  task = tasks.get_task("math")
  assert isinstance(task, tasks.Task)
  problem = tasks.MathProblem.from_gsm8k("How many?", "2 + 2 = 4\n#### 4")
  assert problem.answer == "4"
  assert task.prompt(problem).startswith("How many?\n")
  assert task.is_correct(r"The answer is \boxed{4}.", problem)
  assert not task.is_correct("I think 5", problem)
  assert task.extract_answer(r"so \boxed{\frac{8}{2}}") == task.reference_answer(problem) == "4"
  half = tasks.MathProblem.from_math("Half?", r"It is $\boxed{\frac{1}{2}}$.")
  assert half.answer == r"\frac{1}{2}" and task.is_correct("0.5", half)
  with pytest.raises(ValueError, match="####"):
    tasks.MathProblem.from_gsm8k("q", "no marker 4")
  with pytest.raises(ValueError, match="boxed"):
    tasks.MathProblem.from_math("q", "no box")
  assert tasks.MathTask(template="Q: {question}\nA:").prompt(problem) == "Q: How many?\nA:"
