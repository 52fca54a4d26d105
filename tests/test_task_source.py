"""The shared `task` section: problems and prompts for arithmetic and problem files."""
import os

import pytest

from rewardlab.data import tokenizers as tk
from rewardlab.tasks import ArithmeticTask, MathProblem, MathTask, arithmetic, source
from rewardlab.tasks import DEFAULT_MATH_TEMPLATE

from test_tokenizers import _save_bpe

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
GSM8K = os.path.join(FIXTURES, "gsm8k.jsonl")
# Like real instruct templates: a default system turn when the messages bring none.
CHAT_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}<|system|>You are helpful.\n{% endif %}"
                 "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("chat_tok")
  _save_bpe(path, chat_template=CHAT_TEMPLATE)
  return tk.load_tokenizer(path)


def math_cfg(**fields):
  c = source.config()
  c.update(dict(name="math", train_files=GSM8K, eval_files=GSM8K) | fields)
  return c


def test_config_defaults():
  c = source.config()
  assert (c.name, c.format, c.train_files, c.eval_files, c.strict, c.chat_template,
          c.system_prompt, c.template, c.step_separator, tuple(c.num_ops), c.operand_max) == (
              "arithmetic", "gsm8k", "", "", True, True, "", "", "\n", (2, 3, 4), 99)
  c.name = "math"  # unlocked: scripts embed and override it


@pytest.mark.parametrize("tokenizer", [None, tk.CharTokenizer.for_arithmetic()])
def test_arithmetic_defaults_are_todays_problems_and_prompts(tokenizer):
  src = source.build(source.config(), tokenizer)
  assert isinstance(src.task, ArithmeticTask) and src.step_separator == "\n"
  for split, seed in (("test", 4242), ("train", 0)):
    problems = src.problems(split, 20, seed)
    assert problems == arithmetic.generate_problems(20, seed=seed, num_ops=(2, 3, 4),
                                                    operand_max=99, split=split)
    assert [src.prompt(p) for p in problems] == [p.prompt for p in problems]
  assert src.problems(None, 5, 1) == arithmetic.generate_problems(5, seed=1)
  c = source.config()
  c.num_ops, c.operand_max = (2,), 9
  assert source.build(c).problems("test", 3, 7) == arithmetic.generate_problems(
      3, seed=7, num_ops=(2,), operand_max=9, split="test")


def test_math_files_per_split_in_order_with_limit(tmp_path):
  other = tmp_path / "eval.jsonl"
  other.write_text('{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"}\n')
  src = source.build(math_cfg(eval_files=str(other)))
  assert isinstance(src.task, MathTask) and src.task.template == DEFAULT_MATH_TEMPLATE
  assert [p.answer for p in src.problems("train", 0, seed=0)] == ["36", "875", "7.5", "11"]
  assert [p.answer for p in src.problems("train", 2, seed=5)] == ["36", "875"]
  assert src.problems("test", 0, 0) == [MathProblem("What is 2+2?", "4")]
  assert src.prompt(src.problems("test", 0, 0)[0]) == (
      "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}.")
  assert src.skipped == {GSM8K: 0, str(other): 0}


def test_templates_and_prompt_answer_verbatim():
  problem = MathProblem("What is 2+2?", "4")
  src = source.build(math_cfg(template="Q: {question}\nA:"))
  assert src.prompt(problem) == "Q: What is 2+2?\nA:"
  src = source.build(math_cfg(format="prompt_answer", step_separator="\n\n"))
  assert src.prompt(problem) == "What is 2+2?"
  assert src.step_separator == src.task.step_separator == "\n\n"


def test_chat_template_applied_by_the_tokenizer(chat_tokenizer):
  problem = MathProblem("What is 2+2?", "4")
  text = MathTask().prompt(problem)
  src = source.build(math_cfg(), chat_tokenizer)
  assert src.uses_chat_template
  assert src.prompt(problem) == f"<|system|>You are helpful.\n<|user|>{text}\n<|assistant|>"
  assert src.prompt(problem) == chat_tokenizer.tokenizer.apply_chat_template(
      [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
  src = source.build(math_cfg(system_prompt="Be brief."), chat_tokenizer)
  assert src.prompt(problem) == f"<|system|>Be brief.\n<|user|>{text}\n<|assistant|>"
  src = source.build(math_cfg(chat_template=False), chat_tokenizer)
  assert not src.uses_chat_template and src.prompt(problem) == text


def test_skipped_rows_are_counted():
  bad = os.path.join(FIXTURES, "malformed", "gsm8k.jsonl")
  src = source.build(math_cfg(train_files=bad, strict=False))
  assert [p.answer for p in src.problems("train", 0, 0)] == ["12", "5"]
  assert src.skipped == {bad: 4}
  with pytest.raises(ValueError, match="line 2: field 'answer'"):
    source.build(math_cfg(train_files=bad)).problems("train", 0, 0)


@pytest.mark.parametrize("fields, message", [
    (dict(name="code"), "task.name='code'"),
    (dict(format="csv"), "task.format='csv'"),
    (dict(step_separator=""), "step_separator must be a non-empty string"),
    (dict(template="no placeholder"), "must contain '{question}'"),
    (dict(system_prompt="Be brief."), "system_prompt is set but no tokenizer given"),
    (dict(system_prompt="Be brief.", chat_template=False), "task.chat_template is off"),
])
def test_build_errors(fields, message):
  with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
    source.build(math_cfg(**fields))


def test_arithmetic_and_split_errors(tmp_path):
  c = source.config()
  c.train_files = GSM8K
  with pytest.raises(ValueError, match="need task.name='math'"):
    source.build(c)
  c = source.config()
  c.step_separator = "\n\n"
  with pytest.raises(ValueError, match="one step per line"):
    source.build(c)
  with pytest.raises(ValueError, match="task.eval_files is empty"):
    source.build(math_cfg(eval_files="")).problems("test", 0, 0)
  with pytest.raises(ValueError, match="split must be one of"):
    source.build(math_cfg()).problems("validation", 0, 0)
  with pytest.raises(ValueError, match="system_prompt is set but the tokenizer has no chat"):
    source.build(math_cfg(system_prompt="x"), tk.CharTokenizer.for_arithmetic())
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(ValueError, match="holds no usable problems"):
    source.build(math_cfg(train_files=str(empty))).problems("train", 0, 0)
