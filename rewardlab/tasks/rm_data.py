"""Synthetic reward-model data from the arithmetic task, in the public file formats.

Every builder turns problems into rows of one public format (`rewardlab.data.formats`),
so the trainer reads them from jsonl like any user file:

===========================  ===================================================
format                       rows
===========================  ===================================================
``preference``               prompt, chosen (a correct solution), rejected (a wrong one)
``stepwise``                 prompt, completions (step lines), labels (1 before the
                             first wrong step, 0 from it on): TRL's stepwise form
``helpsteer2``               prompt, response, five 0..4 ratings (rules below)
``helpsteer2_preference``    prompt, response_1, response_2, preference_strength
``processbench``             id, problem, steps, label (first wrong step, -1 if none)
===========================  ===================================================

Wrong solutions come from `arithmetic.corrupt_solution` (a slip, a miscopied operand
or a skipped operation at a uniform step) or, when policy samples are given, first from
the policy's own samples with a wrong step (hard negatives; a right answer reached by a
flawed chain counts as wrong). Right solutions are a policy sample whose every step is
right, else the reference solution. A step list is the solution's lines,
the `A:<answer>` line included (it is step K, as in `arithmetic.first_wrong_step`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.tasks import arithmetic
from rewardlab.tasks.arithmetic import Problem
from rewardlab.train.metrics import write_jsonl  # the one JSONL writer (rm_data.write_jsonl)

Samples = Sequence[Sequence[str]] | None  # per problem, the policy's completions


def solution_steps(text: str) -> list[str]:
  """Step lines of a solution text, its `A:` line last (no separators)."""
  parsed = arithmetic.parse_solution(text)
  answer = [] if parsed.answer is None else [f"A:{parsed.answer}"]
  return list(parsed.steps) + answer


def step_labels(first_wrong: int, num_steps: int) -> list[float]:
  """1.0 before the first wrong step, 0.0 from it on (all 1.0 when `first_wrong` is -1)."""
  cut = num_steps if first_wrong < 0 else min(first_wrong, num_steps)
  return [1.0] * cut + [0.0] * (num_steps - cut)


def _wrong_solutions(problem: Problem, samples: Sequence[str], count: int,
                     rng: np.random.Generator) -> list[tuple[str, int]]:
  """`count` wrong solutions with their first wrong step: the policy's samples that have
  an `A:` line and a wrong step (a right answer reached by a flawed chain counts) first,
  then corruptions."""
  out = []
  for text in samples:
    if len(out) == count:
      break
    first_wrong = arithmetic.first_wrong_step(text, problem)
    if arithmetic.parse_solution(text).answer is not None and first_wrong >= 0:
      out.append((text, first_wrong))
  while len(out) < count:
    out.append(arithmetic.corrupt_solution(problem, rng))
  return out


def _right_solution(problem: Problem, samples: Sequence[str]) -> str:
  """A policy sample whose every step is right, else the reference solution."""
  for text in samples:
    if arithmetic.first_wrong_step(text, problem) == -1:
      return text
  return problem.solution


def _samples_for(samples: Samples, i: int) -> Sequence[str]:
  return () if samples is None else samples[i]


# ----------------------------------------------------------------------------- builders


def preference_rows(problems: Sequence[Problem], rng: np.random.Generator, *,
                    pairs_per_problem: int = 1, samples: Samples = None) -> list[dict]:
  """`pairs_per_problem` (correct, wrong) pairs per problem."""
  rows = []
  for i, problem in enumerate(problems):
    own = _samples_for(samples, i)
    chosen = _right_solution(problem, own)
    for rejected, _ in _wrong_solutions(problem, own, pairs_per_problem, rng):
      rows.append({"prompt": problem.prompt, "chosen": chosen, "rejected": rejected})
  return rows


def _labelled_solutions(problems, rng, correct_fraction, samples):
  """One (problem, text, first_wrong) per problem: right with prob. `correct_fraction`."""
  for i, problem in enumerate(problems):
    own = _samples_for(samples, i)
    if rng.random() < correct_fraction:
      yield problem, _right_solution(problem, own), -1
    else:
      text, first_wrong = _wrong_solutions(problem, own, 1, rng)[0]
      yield problem, text, first_wrong


def stepwise_rows(problems: Sequence[Problem], rng: np.random.Generator, *,
                  correct_fraction: float = 0.5, samples: Samples = None) -> list[dict]:
  """TRL stepwise rows: one solution per problem with hard step labels."""
  rows = []
  for problem, text, first_wrong in _labelled_solutions(problems, rng, correct_fraction, samples):
    steps = solution_steps(text)
    rows.append({"prompt": problem.prompt, "completions": steps,
                 "labels": step_labels(first_wrong, len(steps))})
  return rows


def processbench_rows(problems: Sequence[Problem], rng: np.random.Generator, *,
                      correct_fraction: float = 0.5, samples: Samples = None) -> list[dict]:
  """ProcessBench rows: `label` = first wrong step, -1 if none."""
  rows = []
  for i, (problem, text, first_wrong) in enumerate(
      _labelled_solutions(problems, rng, correct_fraction, samples)):
    rows.append({"id": f"arithmetic-{i}", "problem": problem.prompt, "steps": solution_steps(text),
                 "label": first_wrong, "generator": "synthetic",
                 "final_answer_correct": arithmetic.is_correct(text, problem)})
  return rows


def ratings(problem: Problem, text: str) -> dict[str, int]:
  """HelpSteer2-style 0..4 ratings of a solution, by fixed rules.

  With K operations and f = first wrong step (-1 if none):
  correctness = 4 if f = -1 else round(4 f / (K + 1)) (share of leading right steps);
  helpfulness = 4 if the answer is right else 1; coherence = 4 (well formed);
  complexity = min(K, 4); verbosity = min(number of lines - 1, 4).
  """
  k = problem.num_ops
  first_wrong = arithmetic.first_wrong_step(text, problem)
  correctness = 4 if first_wrong == -1 else int(round(4 * first_wrong / (k + 1)))
  return {"helpfulness": 4 if arithmetic.is_correct(text, problem) else 1,
          "correctness": correctness, "coherence": 4, "complexity": min(k, 4),
          "verbosity": min(len(solution_steps(text)) - 1, 4)}


def rating_rows(problems: Sequence[Problem], rng: np.random.Generator, *,
                correct_fraction: float = 0.5, samples: Samples = None) -> list[dict]:
  """HelpSteer2 rows: one solution per problem and its `ratings`."""
  return [{"prompt": problem.prompt, "response": text, **ratings(problem, text)}
          for problem, text, _ in _labelled_solutions(problems, rng, correct_fraction, samples)]


def preference_strength(first_wrong: int, num_ops: int) -> int:
  """How much better the right solution is, 1..3: `1 + ⌊2 (K - 1 - f) / (K - 1)⌋`
  (an error at the first step is "much better" (3), at the last step "slightly" (1))."""
  if num_ops == 1:
    return 3
  return 1 + (2 * max(num_ops - 1 - first_wrong, 0)) // (num_ops - 1)


def strength_rows(problems: Sequence[Problem], rng: np.random.Generator, *,
                  pairs_per_problem: int = 1, samples: Samples = None) -> list[dict]:
  """HelpSteer2-Preference rows; the right solution is `response_1` or `response_2` at
  random, and `preference_strength` is negative when `response_1` is the better one."""
  rows = []
  for i, problem in enumerate(problems):
    own = _samples_for(samples, i)
    right = _right_solution(problem, own)
    for wrong, first_wrong in _wrong_solutions(problem, own, pairs_per_problem, rng):
      s = preference_strength(first_wrong, problem.num_ops)
      if rng.random() < 0.5:
        rows.append({"prompt": problem.prompt, "response_1": right, "response_2": wrong,
                     "preference_strength": -s})
      else:
        rows.append({"prompt": problem.prompt, "response_1": wrong, "response_2": right,
                     "preference_strength": s})
  return rows


BUILDERS: dict[str, Callable[..., list[dict]]] = {
    "preference": preference_rows,
    "stepwise": stepwise_rows,
    "processbench": processbench_rows,
    "helpsteer2": rating_rows,
    "helpsteer2_preference": strength_rows,
}


# ----------------------------------------------------------------------------- files


def write_synthetic(path: str, fmt: str, problems: Sequence[Problem], *, seed: int,
                    **options) -> str:
  """Build rows of format `fmt` (a key of `BUILDERS`) for `problems` and write them as jsonl.

  `options` go to the builder (`pairs_per_problem`, `correct_fraction`, `samples`).
  """
  if fmt not in BUILDERS:
    raise ValueError(f"no synthetic builder for format {fmt!r}; known: {sorted(BUILDERS)}")
  return write_jsonl(path, BUILDERS[fmt](problems, np.random.default_rng(seed), **options))



def sample_completions(config, params, tokenizer, problems: Sequence[Problem], *,
                       num_samples: int, temperature: float = 1.0, max_new_tokens: int = 64,
                       seed: int = 0, batch_size: int = 64,
                       prompts: Sequence[str] | None = None) -> list[list[str]]:
  """`num_samples` policy completions per problem (prompt `encode(prompt, add_bos=True)`);
  `prompts[i]` is the text of `problems[i]` (default: `problem.prompt`)."""
  import jax  # pylint: disable=import-outside-toplevel

  from rewardlab.sampling import generate  # pylint: disable=import-outside-toplevel

  if prompts is None:
    prompts = [p.prompt for p in problems]
  if len(prompts) != len(problems):
    raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
  out, rng = [], jax.random.key(seed)
  for start in range(0, len(problems), batch_size):
    chunk = prompts[start:start + batch_size]
    rng, key = jax.random.split(rng)
    encoded = [tokenizer.encode(text, add_bos=True) for text in chunk]
    gen = generate(config, params, encoded, max_new_tokens=max_new_tokens,
                   temperature=temperature, stop_tokens=(tokenizer.eos_id,),
                   num_samples=num_samples, rng=key, pad_id=tokenizer.pad_id)
    texts = [decode_sampled(tokenizer, ids) for ids in gen.completions()]
    out += [texts[j * num_samples:(j + 1) * num_samples] for j in range(len(chunk))]
  return out
