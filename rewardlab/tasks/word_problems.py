"""GSM8K-format word problems built from the synthetic arithmetic task.

Each problem is an arithmetic :class:`~rewardlab.tasks.arithmetic.Problem` (a start value
and K operations applied in order, every intermediate result in ``[0, result_max]``)
told as a short story about a person and a count of things, for example::

    question: Mia has 37 apples. She buys 45 more apples. Then she has 3 times as many
              apples as before. She gives away 12 apples. How many apples does Mia have now?
    answer:   Mia buys 45 more, so she has 37 + 45 = 82 apples.
              3 times as many is 82 * 3 = 246 apples.
              After giving away 12, Mia has 246 - 12 = 234 apples.
              #### 234

One solution step per line, each ending its computation with ``= <result>`` (the
step's expected result), then ``#### <answer>``. Rows carry the extra fields
``intermediates`` (the K step results, which the ``gsm8k`` reader keeps so that
:meth:`MathTask.first_wrong_step` can locate a model's first wrong step), ``key`` (the
arithmetic expression, e.g. ``37+45*3-12``) and ``num_ops``.

Difficulty: the number of operations ``num_ops`` (K drawn uniformly from the tuple),
the operand range ``[0, operand_max]`` of ``+`` / ``-`` (multipliers are 2..9) and the
bound ``result_max`` of every intermediate result; :data:`DIFFICULTIES` names three
levels. Generation is deterministic in ``seed``; train and test are disjoint whatever
the seeds, because a problem's split is a hash of its expression
(:func:`arithmetic.split_of`).

CLI (writes ``train.jsonl``, ``test.jsonl`` and ``info.json`` into ``--out``)::

    python -m rewardlab.tasks.word_problems --out data/wp --num_train 2000 --num_test 200 \\
        --difficulty medium [--num_ops 2,3] [--operand_max 50] [--seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from rewardlab.tasks import arithmetic


@dataclasses.dataclass(frozen=True)
class Difficulty:
  num_ops: tuple[int, ...]
  operand_max: int
  result_max: int


DIFFICULTIES = {
    "easy": Difficulty(num_ops=(1, 2), operand_max=20, result_max=100),
    "medium": Difficulty(num_ops=(2, 3), operand_max=50, result_max=500),
    "hard": Difficulty(num_ops=(3, 4, 5), operand_max=99, result_max=999),
}

NAMES = (("Mia", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Zoe", "she"),
         ("Omar", "he"), ("Lena", "she"), ("Ravi", "he"))
ITEMS = (("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("coin", "coins"),
         ("book", "books"), ("card", "cards"), ("shell", "shells"), ("pencil", "pencils"))

# (question sentence, solution line) per operator; the line's last "= x" is the step result.
PHRASES = {
    "+": (("{Pron} buys {b} more {b_items}.", "{Name} buys {b} more, so {pron} has {prev} + {b} = {res} {items}."),
          ("{Pron} finds another {b} {b_items}.", "Finding {b} more gives {prev} + {b} = {res} {items}."),
          ("A friend gives {Name} {b} {b_items}.", "With the gift, {Name} has {prev} + {b} = {res} {items}.")),
    "-": (("{Pron} gives away {b} {b_items}.", "After giving away {b}, {Name} has {prev} - {b} = {res} {items}."),
          ("{Pron} sells {b} of the {items}.", "Selling {b} leaves {prev} - {b} = {res} {items}."),
          ("{Pron} loses {b} {b_items}.", "Losing {b} leaves {prev} - {b} = {res} {items}.")),
    "*": (("Then {pron} has {b} times as many {items} as before.", "{b} times as many is {prev} * {b} = {res} {items}."),
          ("Then the number of {items} {Name} has becomes {b} times as large.", "{Name} now has {prev} * {b} = {res} {items}.")),
}


@dataclasses.dataclass(frozen=True)
class WordProblem:
  """A rendered problem: the GSM8K ``question`` / ``answer`` texts and its arithmetic."""

  problem: arithmetic.Problem
  question: str
  answer: str

  def to_row(self) -> dict:
    return {"question": self.question, "answer": self.answer,
            "intermediates": list(self.problem.intermediates), "key": self.problem.key,
            "num_ops": self.problem.num_ops}


def _count(n: int, item: tuple[str, str]) -> str:
  return item[0] if n == 1 else item[1]


def render(problem: arithmetic.Problem, rng: np.random.Generator) -> WordProblem:
  """Tell ``problem`` as a story; names, things and phrasings are drawn from ``rng``."""
  name, pron = NAMES[int(rng.integers(len(NAMES)))]
  item = ITEMS[int(rng.integers(len(ITEMS)))]
  fields = dict(Name=name, pron=pron, Pron=pron.capitalize(), items=item[1])
  sentences = [f"{name} has {problem.start} {_count(problem.start, item)}."]
  lines, prev = [], problem.start
  for (op, b), res in zip(problem.ops, problem.intermediates):
    question, line = PHRASES[op][int(rng.integers(len(PHRASES[op])))]
    values = dict(fields, b=b, b_items=_count(b, item), prev=prev, res=res)
    sentences.append(question.format(**values))
    lines.append(line.format(**values))
    prev = res
  sentences.append(f"How many {item[1]} does {name} have now?")
  return WordProblem(problem, " ".join(sentences), "\n".join(lines) + f"\n#### {problem.answer}")


def generate(num: int, *, seed: int, split: str, difficulty: Difficulty | str = "medium",
             test_fraction: float = 0.1) -> list[WordProblem]:
  """``num`` distinct word problems of ``split`` (``train`` | ``test``), deterministic in
  ``seed``; the arithmetic comes from :func:`arithmetic.generate_problems`."""
  if isinstance(difficulty, str):
    if difficulty not in DIFFICULTIES:
      raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {list(DIFFICULTIES)}")
    difficulty = DIFFICULTIES[difficulty]
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  problems = arithmetic.generate_problems(
      num, seed=seed, num_ops=difficulty.num_ops, operand_max=difficulty.operand_max,
      result_max=difficulty.result_max, split=split, test_fraction=test_fraction)
  rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
  return [render(p, rng) for p in problems]


def write_jsonl(path: str, problems: Sequence[WordProblem]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for p in problems:
      f.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="directory for train.jsonl / test.jsonl")
  parser.add_argument("--num_train", type=int, default=1000)
  parser.add_argument("--num_test", type=int, default=200)
  parser.add_argument("--difficulty", default="medium", choices=sorted(DIFFICULTIES))
  parser.add_argument("--num_ops", default="", help="override, e.g. 2,3")
  parser.add_argument("--operand_max", type=int, default=None, help="override")
  parser.add_argument("--result_max", type=int, default=None, help="override")
  parser.add_argument("--test_fraction", type=float, default=0.1,
                      help="share of the problem space reserved for test (by hash)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  base = DIFFICULTIES[args.difficulty]
  try:
    num_ops = tuple(int(k) for k in args.num_ops.split(",")) if args.num_ops else base.num_ops
  except ValueError:
    parser.error(f"--num_ops must be comma-separated integers, got {args.num_ops!r}")
  difficulty = Difficulty(
      num_ops, base.operand_max if args.operand_max is None else args.operand_max,
      base.result_max if args.result_max is None else args.result_max)
  os.makedirs(args.out, exist_ok=True)
  info = {"seed": args.seed, "difficulty": args.difficulty, **dataclasses.asdict(difficulty),
          "test_fraction": args.test_fraction}
  for split, num in (("train", args.num_train), ("test", args.num_test)):
    problems = generate(num, seed=args.seed, split=split, difficulty=difficulty,
                        test_fraction=args.test_fraction)
    write_jsonl(os.path.join(args.out, f"{split}.jsonl"), problems)
    info[f"num_{split}"] = len(problems)
  with open(os.path.join(args.out, "info.json"), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2)
  print(f"wrote {info['num_train']} train / {info['num_test']} test problems to {args.out}")
  return info


if __name__ == "__main__":
  main()
