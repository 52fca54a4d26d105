"""Synthetic arithmetic task: format, generation, splits, step checking, corruptions."""
import numpy as np
import pytest

from rewardlab import tasks
from rewardlab.tasks import arithmetic as ar
from rewardlab.tasks.arithmetic import Problem

# The worked example of the format: 37 + 45 = 82, 82 * 3 = 246, 246 - 12 = 234.
EXAMPLE = Problem(37, (("+", 45), ("*", 3), ("-", 12)))
CORRECT = "37+45=82\n82*3=246\n246-12=234\nA:234\n"


@pytest.fixture(scope="module")
def problems():
  return ar.generate_problems(600, seed=3)


def test_problem_format_matches_hand_written_text():
  assert EXAMPLE.prompt == "Q:37+45*3-12\n"
  assert EXAMPLE.solution == CORRECT
  assert EXAMPLE.steps == ("37+45=82", "82*3=246", "246-12=234")
  assert EXAMPLE.intermediates == (82, 246, 234)
  assert EXAMPLE.answer == 234
  assert EXAMPLE.key == "37+45*3-12"
  assert EXAMPLE.num_ops == 3
  assert ar.parse_prompt(EXAMPLE.prompt) == EXAMPLE
  assert set(EXAMPLE.prompt + EXAMPLE.solution) <= set(ar.ALPHABET)
  assert ar.STEP_SEPARATOR == "\n"


def test_left_to_right_evaluation_ignores_precedence():
  # With precedence 2 + 3 * 4 would be 14; left to right it is 20.
  assert Problem(2, (("+", 3), ("*", 4))).answer == 20


@pytest.mark.parametrize("start, ops, field", [
    (-1, (("+", 1),), "start"),
    (1, (), "ops"),
    (1, (("/", 2),), "operator"),
    (1, (("+", -2),), "negative"),
    (1, (("-", 2),), "intermediate"),
])
def test_problem_rejects_invalid_fields(start, ops, field):
  with pytest.raises(ValueError, match=field):
    Problem(start, ops)


def test_parse_prompt_rejects_garbage():
  with pytest.raises(ValueError, match="not an arithmetic prompt"):
    ar.parse_prompt("Q:12+")


def test_generation_is_deterministic_by_seed():
  a = ar.generate_problems(50, seed=7)
  assert a == ar.generate_problems(50, seed=7)
  assert a != ar.generate_problems(50, seed=8)


def test_generated_problems_are_unique_and_in_range(problems):
  assert len({p.key for p in problems}) == len(problems)
  assert {p.num_ops for p in problems} == {2, 3, 4}
  for p in problems:
    assert 0 <= p.start <= 99
    for op, b in p.ops:
      assert (2 <= b <= 9) if op == "*" else (0 <= b <= 99)
    assert all(0 <= v <= 999 for v in p.intermediates)
  ops = {op for p in problems for op, _ in p.ops}
  assert ops == {"+", "-", "*"}


def test_generation_respects_custom_ranges():
  small = ar.generate_problems(200, seed=0, num_ops=(5,), operand_max=9, result_max=50)
  assert all(p.num_ops == 5 and p.start <= 9 for p in small)
  assert all(0 <= v <= 50 for p in small for v in p.intermediates)
  assert all(b <= 9 for p in small for _, b in p.ops)


def test_train_and_test_never_overlap_across_seeds():
  train = ar.generate_problems(3000, seed=0, split="train")
  test = ar.generate_problems(400, seed=1, split="test")
  assert not {p.key for p in train} & {p.key for p in test}
  assert all(ar.split_of(p.key) == "train" for p in train)
  assert all(ar.split_of(p.key) == "test" for p in test)


def test_split_fraction_is_close_to_requested():
  keys = [p.key for p in ar.generate_problems(4000, seed=11)]
  frac = np.mean([ar.split_of(k, 0.1) == "test" for k in keys])
  # Binomial(4000, 0.1): std 0.0047; 5 std either side.
  assert 0.076 < frac < 0.124
  assert all(ar.split_of(k, 0.0) == "train" for k in keys[:100])
  assert all(ar.split_of(k, 1.0) == "test" for k in keys[:100])


def test_generation_raises_when_space_is_too_small():
  # Start in {0, 1}, one op: at most 2 * (2 + 2 + 8) = 24 distinct problems.
  with pytest.raises(ValueError, match="too small"):
    ar.generate_problems(100, seed=0, num_ops=(1,), operand_max=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_ops=()), "num_ops"),
    (dict(num_ops=(0,)), "num_ops"),
    (dict(test_fraction=1.5), "test_fraction"),
    (dict(split="val"), "split"),
    (dict(split="test", test_fraction=0.0), "empty"),
    (dict(operand_max=100, result_max=50), "operand_max"),
])
def test_generation_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ar.generate_problems(5, seed=0, **kwargs)


def test_parse_solution_and_extract_answer():
  parsed = ar.parse_solution(CORRECT)
  assert parsed.steps == ["37+45=82", "82*3=246", "246-12=234"]
  assert parsed.answer == "234"
  # A prompt line, blank lines and text after the answer line are ignored.
  parsed = ar.parse_solution("Q:37+45*3-12\n37+45=82\n\n82*3=246\nA:246\n1+1=2\nA:9")
  assert parsed.steps == ["37+45=82", "82*3=246"] and parsed.answer == "246"
  assert ar.parse_solution("no answer here").answer is None
  assert ar.parse_solution("").steps == []


@pytest.mark.parametrize("text, expected", [
    (CORRECT, 234),
    ("A:7", 7),
    ("A:-5\n", -5),
    ("A: 12 \n", 12),
    ("A:\n", None),
    ("A:12x\n", None),
    ("A:1 2\n", None),
    ("A:+\n", None),
    ("37+45=82\n", None),
    ("", None),
    ("xxA:5\n", None),
    ("QA:*=\n\n", None),
])
def test_extract_answer_on_malformed_text(text, expected):
  assert ar.extract_answer(text) == expected


def test_is_correct_checks_only_the_final_answer():
  assert ar.is_correct(CORRECT, EXAMPLE)
  assert ar.is_correct("A:234\n", EXAMPLE)
  assert not ar.is_correct(CORRECT.replace("A:234", "A:235"), EXAMPLE)
  assert not ar.is_correct("37+45=82\n", EXAMPLE)


@pytest.mark.parametrize("text, expected", [
    (CORRECT, -1),
    # slip at step 1 (82*3 written as 264), later steps consistent with it
    ("37+45=82\n82*3=264\n264-12=252\nA:252\n", 1),
    # operand miscopied at step 0 (45 -> 54)
    ("37+54=91\n91*3=273\n273-12=261\nA:261\n", 0),
    # step 1 (*3) skipped: step 1 applies -12 instead
    ("37+45=82\n82-12=70\nA:70\n", 1),
    # last step missing
    ("37+45=82\n82*3=246\nA:246\n", 2),
    # all steps right, answer line wrong / missing / malformed
    ("37+45=82\n82*3=246\n246-12=234\nA:235\n", 3),
    ("37+45=82\n82*3=246\n246-12=234\n", 3),
    ("37+45=82\n82*3=246\n246-12=234\nA:abc\n", 3),
    # extra step after K right ones
    ("37+45=82\n82*3=246\n246-12=234\n234+0=234\nA:234\n", 3),
    # wrong left operand, wrong operator, right result with a wrong operand
    ("37+45=82\n28*3=246\n246-12=234\nA:234\n", 1),
    ("37+45=82\n82+3=246\n246-12=234\nA:234\n", 1),
    ("37+45=82\n82*3=246\n246-2=234\nA:234\n", 2),
    # garbage, empty, truncated
    ("hello\n", 0),
    ("", 0),
    ("37+45=8", 0),
    ("37+45=82\n82*3=", 1),
])
def test_first_wrong_step_on_hand_written_solutions(text, expected):
  assert ar.first_wrong_step(text, EXAMPLE) == expected


def test_first_wrong_step_accepts_a_list_of_steps():
  assert ar.first_wrong_step(["37+45=82", "82*3=246", "246-12=234", "A:234"], EXAMPLE) == -1
  assert ar.first_wrong_step(["37+45=82", "82*3=246", "246-12=234"], EXAMPLE) == 3
  assert ar.first_wrong_step(["37+45=82", "82*3=247"], EXAMPLE) == 1


def test_correct_solutions_have_no_wrong_step(problems):
  for p in problems:
    assert ar.first_wrong_step(p.solution, p) == -1
    assert ar.is_correct(p.solution, p)
    assert ar.extract_answer(p.solution) == p.answer


def _text_diff(text, problem):
  """Reference label by plain text comparison with the canonical steps."""
  steps = ar.parse_solution(text).steps
  for k, (a, b) in enumerate(zip(steps, problem.steps)):
    if a != b:
      return k
  return min(len(steps), problem.num_ops)


@pytest.mark.parametrize("kind", ["slip", "copy", "skip", None])
def test_corruptions_have_the_known_first_wrong_step(kind, problems):
  rng = np.random.default_rng(0)
  ks = []
  for p in problems[:300]:
    text, k = ar.corrupt_solution(p, rng, kind)
    assert ar.first_wrong_step(text, p) == k == _text_diff(text, p)
    assert ar.extract_answer(text) is not None and not ar.is_correct(text, p)
    assert set(text) <= set(ar.ALPHABET)
    ks.append(k / (p.num_ops - 1))
  # k is uniform over range(K): its relative position spreads over the chain.
  assert 0.35 < np.mean(ks) < 0.65 and min(ks) == 0.0 and max(ks) == 1.0


def test_corruption_kinds_do_what_they_say():
  rng = np.random.default_rng(1)
  for _ in range(30):
    text, k = ar.corrupt_solution(EXAMPLE, rng, "skip")
    assert len(ar.parse_solution(text).steps) == 2
    text, k = ar.corrupt_solution(EXAMPLE, rng, "slip")
    step = ar.parse_solution(text).steps[k]
    assert step.split("=")[0] == EXAMPLE.steps[k].split("=")[0]  # only the result is wrong
    text, k = ar.corrupt_solution(EXAMPLE, rng, "copy")
    left = ar.parse_solution(text).steps[k].split("=")[0]
    assert left != EXAMPLE.steps[k].split("=")[0] and left[:1] == EXAMPLE.steps[k][:1]


def test_corruption_is_deterministic_and_validates_kind():
  a = [ar.corrupt_solution(EXAMPLE, np.random.default_rng(5)) for _ in range(2)]
  assert a[0] == a[1]
  with pytest.raises(ValueError, match="unknown corruption kind"):
    ar.corrupt_solution(EXAMPLE, np.random.default_rng(0), "swap")
  # One op that is the identity when skipped cannot be corrupted by skipping.
  with pytest.raises(ValueError, match="could not corrupt"):
    ar.corrupt_solution(Problem(5, (("+", 0),)), np.random.default_rng(0), "skip")


def test_arithmetic_task_implements_the_protocol():
  task = tasks.get_task("arithmetic")
  assert isinstance(task, tasks.Task)
  assert task.prompt(EXAMPLE) == "Q:37+45*3-12\n"
  assert task.extract_answer(CORRECT) == 234 == task.reference_answer(EXAMPLE)
  assert task.is_correct(CORRECT, EXAMPLE) and not task.is_correct("A:1\n", EXAMPLE)
  assert task.first_wrong_step("37+45=82\n82*3=264\n", EXAMPLE) == 1
  with pytest.raises(ValueError, match="unknown task"):
    tasks.get_task("chess")


def test_error_kind_names_what_the_first_wrong_step_got_wrong():
    from rewardlab.search.completer import solution_steps
    rng = np.random.default_rng(0)
    problems = ar.generate_problems(40, seed=3, num_ops=(3, 4))
    expected = {"slip": "slip", "copy": "copy", "skip": "skip_or_extra"}
    for kind, name in expected.items():
        for p in problems:
            text, _ = ar.corrupt_solution(p, rng, kind)
            steps = solution_steps(p.prompt + text)
            got = ar.error_kind(steps, p)
            # a skipped op equal to the next one reads as a miscopied value
            assert got == name or (kind == "skip" and got == "copy"), (kind, p.key, steps, got)
    p = problems[0]
    right = solution_steps(p.prompt + p.solution)
    assert ar.error_kind(right, p) is None
    assert ar.error_kind(right[:-1] + ["A:1000000"], p) == "answer"
    assert ar.error_kind(right[:-1] + [right[-2], right[-1]], p) == "skip_or_extra"
    assert ar.error_kind(["12+x=3"] + right[1:], p) == "malformed"
