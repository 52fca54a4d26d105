"""A policy's own samples on a task's problems, checked, and (right, wrong) preference pairs.

`run(cfg, workdir)` (config: experiments/configs/policy_pairs.py) samples `cfg.samples`
completions per problem of the `task` section's `split` at `temperature`, checks each with
the task's checker (math-verify for `task.name=math`) and keeps up to `pairs_per_problem`
pairs of one right and one wrong completion of the same problem: the training data of an
outcome reward model for best-of-N with a learned verifier. It writes `samples.jsonl`
(per problem: prompt, completions, correct), `preference.jsonl` (the `preference` format
that `train_rm.py --config.data.format=preference` reads) and `summary.json`.
"""

import logging
import os
import time

import numpy as np
from tqdm.auto import tqdm

from rewardlab.search.policy import LMPolicy
from rewardlab.tasks import source
from rewardlab.train import metrics as metrics_lib
from rewardlab.train import sft

log = logging.getLogger(__name__)


def problem_key(problem, index: int) -> str:
  return str(getattr(problem, "key", None) or getattr(problem, "id", None) or index)


def run(cfg, workdir: str) -> dict:
  if cfg.samples < 2 or cfg.pairs_per_problem < 1 or cfg.batch_problems < 1:
    raise ValueError(f"samples ({cfg.samples}) must be >= 2, pairs_per_problem "
                     f"({cfg.pairs_per_problem}) and batch_problems ({cfg.batch_problems}) >= 1")
  os.makedirs(workdir, exist_ok=True)
  config, params, tokenizer = sft.load_policy(cfg.policy_dir)
  src = source.build(cfg.task, tokenizer)
  problems = src.problems(cfg.split, cfg.num_problems, cfg.seed)
  policy = LMPolicy(config, params, tokenizer, step_separator=src.step_separator)
  rng = np.random.default_rng(cfg.seed)
  samples_path = os.path.join(workdir, "samples.jsonl")
  pairs_path = os.path.join(workdir, "preference.jsonl")
  rows, pairs, tokens = [], [], 0
  start = time.perf_counter()
  bar = tqdm(total=len(problems), desc="policy_pairs", unit="problem", disable=not cfg.progress)
  for lo in range(0, len(problems), cfg.batch_problems):
    chunk = problems[lo:lo + cfg.batch_problems]
    prompts = [src.prompt(p) for p in chunk]
    drawn = policy.sample(prompts, cfg.samples, max_new_tokens=cfg.max_new_tokens,
                          temperature=cfg.temperature, stop_at_step=False, rng=rng)
    for i, (p, prompt, completions) in enumerate(zip(chunk, prompts, drawn)):
      texts = [c.text for c in completions]
      tokens += sum(c.num_tokens for c in completions)
      correct = [bool(src.task.is_correct(t, p)) for t in texts]
      key = problem_key(p, lo + i)
      rows.append({"problem": key, "prompt": prompt, "completions": texts, "correct": correct})
      right = [t for t, c in zip(texts, correct) if c]
      wrong = [t for t, c in zip(texts, correct) if not c]
      pairs += [{"prompt": prompt, "chosen": a, "rejected": b, "problem": key}
                for a, b in list(zip(right, wrong))[:cfg.pairs_per_problem]]
    bar.update(len(chunk))
    seconds = time.perf_counter() - start
    bar.set_postfix(tokens_per_s=f"{tokens / seconds:.0f}", pairs=len(pairs))
    if not cfg.progress:
      done = lo + len(chunk)
      log.info("policy_pairs: %d/%d problems, %d pairs, %.0f tokens/s, ETA %.0f s", done,
                   len(problems), len(pairs), tokens / seconds,
                   seconds / done * (len(problems) - done))
  bar.close()
  seconds = time.perf_counter() - start
  metrics_lib.write_jsonl(samples_path, rows)
  metrics_lib.write_jsonl(pairs_path, pairs)
  acc = [c for r in rows for c in r["correct"]]
  summary = {
      "policy_dir": cfg.policy_dir, "split": cfg.split, "problems": len(rows),
      "samples_per_problem": cfg.samples, "temperature": cfg.temperature,
      "sample_accuracy": float(np.mean(acc)),
      f"pass@{cfg.samples}": float(np.mean([any(r["correct"]) for r in rows])),
      "problems_all_right": sum(all(r["correct"]) for r in rows),
      "problems_all_wrong": sum(not any(r["correct"]) for r in rows),
      "pairs": len(pairs), "generated_tokens": tokens, "seconds": seconds,
      "tokens_per_s": tokens / seconds, "skipped_rows": dict(src.skipped),
      "files": {"samples": samples_path, "preference": pairs_path}}
  metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
