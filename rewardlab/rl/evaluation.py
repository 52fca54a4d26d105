"""Held-out evaluation of a policy on a task: greedy pass@1, sampled pass@1 and maj@k.

`greedy_correct` is the one greedy evaluation of the package (SFT reports it too):
per-problem correctness of greedy decoding, judged by the task's checker, so runs can
be compared problem by problem (paired intervals, `rewardlab.eval.compare`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.sampling import generate
from rewardlab.rl.rollout import sample_rollout
from rewardlab.search.selection import majority_vote


def greedy_correct(config, params, tokenizer, task, problems: Sequence, *, max_new_tokens: int,
                   prompt: Callable | None = None, batch_size: int = 100,
                   mesh=None) -> np.ndarray:
  """Per-problem correctness `[P]` (bool) of greedy decoding (stop at EOS).

  Prompts are `tokenizer.encode(prompt(problem), add_bos=True)`; `prompt` defaults to
  `task.prompt` (a task source's `prompt` adds the chat template)."""
  prompt = task.prompt if prompt is None else prompt
  correct = []
  for start in range(0, len(problems), batch_size):
    chunk = problems[start:start + batch_size]
    ids = [tokenizer.encode(prompt(p), add_bos=True) for p in chunk]
    out = generate(config, params, ids, max_new_tokens=max_new_tokens, temperature=0.0,
                   stop_tokens=(tokenizer.eos_id,), pad_id=tokenizer.pad_id, mesh=mesh)
    correct += [task.is_correct(decode_sampled(tokenizer, c), p)
                for p, c in zip(chunk, out.completions())]
  return np.array(correct, dtype=bool)


def accuracy_by_num_ops(correct: np.ndarray, problems: Sequence, prefix: str) -> dict:
  """`{prefix + "k<K>": accuracy}` per number of operations for problems that have one
  (the arithmetic task); `{}` for other tasks."""
  if not problems or not all(hasattr(p, "num_ops") for p in problems):
    return {}
  ops = np.array([p.num_ops for p in problems])
  return {f"{prefix}k{k}": float(correct[ops == k].mean()) for k in sorted(set(ops.tolist()))}


def evaluate(config, params, tokenizer, source, problems: Sequence, *, max_new_tokens: int,
             maj_k: int = 0, maj_problems: int = 0, rng=None, batch_size: int = 100,
             mesh=None) -> dict:
  """Held-out greedy pass@1 (overall and per K) and per-problem correctness
  (`greedy_correct`, for paired comparisons); with `maj_k`, also sampled pass@1 and maj@k
  (temperature 1) on `maj_problems` problems evenly spaced through `problems`.
  `source` gives the prompts, the task and its step separator (a `TaskSource`); with a
  `mesh` the sampling is sharded over its data axes."""
  task = source.task
  correct = greedy_correct(config, params, tokenizer, task, problems,
                           max_new_tokens=max_new_tokens, prompt=source.prompt,
                           batch_size=batch_size, mesh=mesh)
  result = {"pass1_greedy": float(correct.mean()), "greedy_correct": correct.astype(int).tolist()}
  result.update(accuracy_by_num_ops(correct, problems, "pass1_greedy_"))
  if maj_k and maj_problems:
    picks = np.linspace(0, len(problems) - 1, min(maj_problems, len(problems))).astype(int)
    subset = [problems[i] for i in picks]
    rollout, _ = sample_rollout(config, params, tokenizer, source, subset, group_size=maj_k,
                                max_new_tokens=max_new_tokens, rng=rng, mesh=mesh)
    right = []
    for i, problem in enumerate(subset):
      texts = rollout.texts[i * maj_k:(i + 1) * maj_k]
      vote = majority_vote([task.extract_answer(t) for t in texts])
      right.append(vote.answer is not None and task.is_correct(texts[vote.index], problem))
    result["pass1_sampled"] = float(rollout.correct.mean())
    result[f"maj{maj_k}"] = float(np.mean(right))
  return result
