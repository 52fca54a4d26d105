"""Benchmark files scored by a generative judge instead of a trained scalar reward model.

`evaluate_files_with_judge` reads the same formats as `reward_model.evaluate_files` and
returns the same report, plus what only judges have: position consistency (pairwise),
unparseable critiques and chains, and the judge's generated tokens.

Modes:
* `pointwise`: each response gets P(yes) at the verdict position (`num_samples=0`) or the
  aggregate of K sampled critiques (`aggregation`); a pair is right iff chosen > rejected
  (strict), so a response none of whose critiques parsed (NaN) makes its pair wrong and is
  counted in `unscored_responses`; calibration uses the scored pairs only.
* `pairwise`: p(chosen > rejected) judged in both orders and debiased (K = 0: verdict
  probabilities; K >= 1: shares of parsed sampled verdicts); right iff p > 1/2.
  RewardBench 2 rows score each completion by its mean debiased win probability against
  the row's other completions (round robin).
* `steps` (ProcessBench, stepwise, Math-Shepherd): verification chains give per-step
  probabilities (`rewardlab.judges.steps`); a step no chain judged is not flagged as the
  error (the verifier found none there), takes no part in calibration and is counted.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from rewardlab import judges
from rewardlab.eval import calibration, processbench, rewardbench
from rewardlab.eval.reward_model import _records, first_error_label, pairwise_report
from rewardlab.judges import aggregate
from rewardlab.judges import templates as tmpl

MODES = ("pointwise", "pairwise", "steps")
PAIR_FORMATS = ("preference", "helpsteer2_preference", "rewardbench", "rewardbench2")
STEP_FORMATS = ("processbench", "stepwise", "math_shepherd")
DEFAULT_TEMPLATES = {"pointwise": tmpl.POINTWISE, "pairwise": tmpl.PAIRWISE, "steps": tmpl.STEPS}


class _Run:
  """Judge, options and the counters of one evaluation."""

  def __init__(self, judge, mode, template, options):
    self.judge, self.mode, self.template, self.o = judge, mode, template, options
    self.rng = jax.random.key(options["seed"])
    self.tokens_read = self.tokens_generated = self.unparsed = 0

  def key(self):
    self.rng, key = jax.random.split(self.rng)
    return key

  def count(self, usage, unparsed=0):
    self.tokens_read += usage.tokens_read
    self.tokens_generated += usage.tokens_generated
    self.unparsed += unparsed

  def sampling(self):
    return dict(num_samples=self.o["num_samples"], max_new_tokens=self.o["max_new_tokens"],
                temperature=self.o["temperature"], rng=self.key(), batch_size=self.o["batch_size"])

  def pointwise(self, prompts, responses) -> np.ndarray:
    if self.o["num_samples"] == 0:
      probs, usage = judges.verdict_probabilities(self.judge, prompts, responses, self.template,
                                                  batch_size=self.o["batch_size"])
      self.count(usage)
      return probs
    crit = judges.sample_critiques(self.judge, prompts, responses, self.template,
                                   **self.sampling())
    self.count(crit.usage, crit.unparsed)
    source = {"mean_probability": crit.probs, "majority": crit.verdicts,
              "score_vote": crit.scores}[self.o["aggregation"]]
    return aggregate.AGGREGATORS[self.o["aggregation"]](source)

  def pairwise(self, prompts, a, b) -> judges.Preferences:
    if self.o["num_samples"] == 0:
      out = judges.preferences(self.judge, prompts, a, b, self.template,
                               batch_size=self.o["batch_size"])
    else:
      out = judges.sampled_preferences(self.judge, prompts, a, b, self.template,
                                       **self.sampling())
    self.count(out.usage, out.unparsed)
    return out

  def summary(self) -> dict:
    return {"judge_mode": self.mode, "num_samples": self.o["num_samples"],
            "aggregation": self.o["aggregation"] if self.o["num_samples"] else None,
            "unparsed": self.unparsed, "tokens_scored": self.tokens_read + self.tokens_generated,
            "tokens_read": self.tokens_read, "tokens_generated": self.tokens_generated}


def _scores_report(chosen, rejected, n_bins) -> dict:
  """Strict accuracy over all pairs (NaN sides make a pair wrong), calibration over the rest."""
  chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
  scored = np.isfinite(chosen) & np.isfinite(rejected)
  report = pairwise_report(chosen[scored], rejected[scored], n_bins) if scored.any() else {}
  with np.errstate(invalid="ignore"):
    report.update(pairwise_accuracy=float(np.mean(chosen > rejected)), num_pairs=int(chosen.size),
                  unscored_pairs=int((~scored).sum()))
  return report


def _preference_report(p, n_bins) -> dict:
  """Accuracy `mean[p > 1/2]` and calibration of p on both orders (labels 1 and 0)."""
  p = np.asarray(p, np.float64)
  scored = np.isfinite(p)
  with np.errstate(invalid="ignore"):
    report = {"pairwise_accuracy": float(np.mean(p > 0.5)), "ties": float(np.mean(p == 0.5)),
              "num_pairs": int(p.size), "unscored_pairs": int((~scored).sum())}
  if scored.any():
    q = p[scored]
    report["calibration"] = calibration.calibration_report(
        np.concatenate([q, 1 - q]), np.concatenate([np.ones_like(q), np.zeros_like(q)]), n_bins)
  return report


def _pair_scores(run, records):
  prompts = [r.prompt for r, _ in records]
  chosen, rejected = [r.chosen for r, _ in records], [r.rejected for r, _ in records]
  if run.mode == "pointwise":
    scores = run.pointwise(prompts * 2, chosen + rejected)
    c, j = scores[:len(records)], scores[len(records):]
    return c, j, _scores_report(c, j, run.o["n_bins"])
  prefs = run.pairwise(prompts, chosen, rejected)
  report = _preference_report(prefs.p_a, run.o["n_bins"])
  report["position_consistency"] = prefs.position_consistency
  return prefs.p_a, 1 - prefs.p_a, report


def _pairs(run, records) -> dict:
  return _pair_scores(run, records)[2]


def _rewardbench(run, records) -> dict:
  chosen, rejected, report = _pair_scores(run, records)
  rows = [{"subset": r.subset, "chosen_score": float(c), "rejected_score": float(j)}
          for (r, _), c, j in zip(records, chosen, rejected)]
  result = rewardbench.score_v1(rows)
  return {**report, "overall": result.overall, "sections": result.sections,
          "subsets": result.subsets, "counts": result.counts, "missing": list(result.missing)}


def _rewardbench2(run, records) -> dict:
  rows, consistent = [], []
  if run.mode == "pointwise":
    prompts, texts = [], []
    for r, _ in records:
      prompts += [r.prompt] * (len(r.chosen) + len(r.rejected))
      texts += list(r.chosen) + list(r.rejected)
    flat, start = run.pointwise(prompts, texts), 0
    per_row = []
    for r, _ in records:
      n = len(r.chosen) + len(r.rejected)
      per_row.append(flat[start:start + n])
      start += n
  else:  # round robin of debiased pairwise preferences
    prompts, a, b, where = [], [], [], []
    for i, (r, _) in enumerate(records):
      texts = list(r.chosen) + list(r.rejected)
      for x in range(len(texts)):
        for y in range(x + 1, len(texts)):
          prompts.append(r.prompt), a.append(texts[x]), b.append(texts[y]), where.append((i, x, y))
    prefs = run.pairwise(prompts, a, b)
    consistent = prefs.consistent.tolist()
    wins = [np.zeros(len(r.chosen) + len(r.rejected)) for r, _ in records]
    for (i, x, y), p in zip(where, prefs.p_a):
      wins[i][x] += p
      wins[i][y] += 1 - p
    per_row = [w / max(1, len(w) - 1) for w in wins]
  chosen, rejected = [], []
  for (r, _), scores in zip(records, per_row):
    scores = np.where(np.isfinite(scores), scores, -np.inf)  # an unscored completion never wins
    rows.append({"id": r.id, "subset": r.subset, "num_correct": r.num_correct,
                 "scores": scores.tolist()})
    for c in scores[:r.num_correct]:
      chosen += [c] * (len(scores) - r.num_correct)
      rejected += scores[r.num_correct:].tolist()
  result = rewardbench.score_v2(rows)
  report = _scores_report(np.where(np.isinf(chosen), np.nan, chosen),
                          np.where(np.isinf(rejected), np.nan, rejected), run.o["n_bins"])
  if consistent:
    report["position_consistency"] = float(np.mean(consistent))
  return {**report, "overall": result.overall, "subsets": result.subsets,
          "counts": result.counts, "missing": list(result.missing),
          "ties": None if result.ties is None else vars(result.ties)}


def judge_step_report(step_probs, first_errors, splits=None, *, threshold=0.5, n_bins=15) -> dict:
  """ProcessBench F1 and calibration of per-step probabilities that may hold NaN (unjudged).

  Prediction: the first step with p < threshold (NaN is never below it); calibration over
  the judged steps up to the first wrong one (ProcessBench convention), as `step_report`.
  """
  preds = processbench.first_error_predictions([np.asarray(r) for r in step_probs], threshold)
  scores = processbench.processbench_scores(np.asarray(first_errors, np.int64), preds, splits)
  probs, labels = [], []
  for row, first in zip(step_probs, first_errors):
    judged = len(row) if first < 0 else min(first + 1, len(row))
    p = np.asarray(row[:judged], np.float64)
    keep = np.isfinite(p)
    probs.append(p[keep])
    labels.append((np.arange(judged) != first).astype(np.float64)[keep])
  report = {"processbench_f1": scores.average_f1,
            "splits": {name: vars(s) for name, s in scores.splits.items()},
            "num_solutions": len(step_probs), "threshold": threshold,
            "unjudged_steps": int(sum(np.isnan(np.asarray(r, np.float64)).sum()
                                      for r in step_probs))}
  if sum(len(p) for p in probs):
    report["calibration"] = calibration.calibration_report(np.concatenate(probs),
                                                           np.concatenate(labels), n_bins)
  return report


def _steps(run, prompts, steps, first_errors, splits) -> dict:
  out = judges.verify_steps(run.judge, prompts, steps, run.template,
                            num_samples=max(1, run.o["num_samples"]),
                            max_new_tokens=run.o["max_new_tokens"],
                            temperature=run.o["temperature"] if run.o["num_samples"] else 0.0,
                            rng=run.key(), batch_size=run.o["batch_size"])
  run.count(out.usage, out.unparsed)
  return judge_step_report(out.probs, first_errors, splits, threshold=run.o["threshold"],
                           n_bins=run.o["n_bins"])


def _processbench(run, records) -> dict:
  return _steps(run, [r.problem for r, _ in records], [list(r.steps) for r, _ in records],
                [r.label for r, _ in records], [s for _, s in records])


def _stepwise(run, records) -> dict:
  return _steps(run, [r.prompt for r, _ in records], [list(r.steps) for r, _ in records],
                [first_error_label(r.labels) for r, _ in records], [s for _, s in records])


JUDGE_EVALUATORS = {"preference": _pairs, "helpsteer2_preference": _pairs,
                    "rewardbench": _rewardbench, "rewardbench2": _rewardbench2,
                    "processbench": _processbench, "stepwise": _stepwise,
                    "math_shepherd": _stepwise}


def evaluate_files_with_judge(paths: Sequence[str], fmt: str, judge, *, mode: str,
                              template: tmpl.JudgeTemplate | None = None, num_samples: int = 0,
                              aggregation: str = "mean_probability", max_new_tokens: int = 128,
                              temperature: float = 1.0, seed: int = 0, batch_size: int = 16,
                              threshold: float = 0.5, n_bins: int = 15, strict: bool = True
                              ) -> dict:
  """Score files of format `fmt` with a `JudgeModel` in `mode` (see the module docstring)."""
  if mode not in MODES:
    raise ValueError(f"judge mode {mode!r}; expected one of {MODES}")
  if fmt not in JUDGE_EVALUATORS:
    raise ValueError(f"cannot evaluate format {fmt!r} with a judge; "
                     f"known: {sorted(JUDGE_EVALUATORS)}")
  if (mode == "steps") != (fmt in STEP_FORMATS):
    raise ValueError(f"judge mode {mode!r} does not fit format {fmt!r}: step formats "
                     f"{STEP_FORMATS} need mode 'steps', pair formats {PAIR_FORMATS} "
                     "need 'pointwise' or 'pairwise'")
  if aggregation not in aggregate.AGGREGATORS:
    raise ValueError(f"unknown aggregation {aggregation!r}; "
                     f"known: {sorted(aggregate.AGGREGATORS)}")
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  records, stats = _records(paths, fmt, strict)
  options = dict(num_samples=int(num_samples), aggregation=aggregation,
                 max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                 seed=int(seed), batch_size=int(batch_size), threshold=float(threshold),
                 n_bins=int(n_bins))
  run = _Run(judge, mode, template or DEFAULT_TEMPLATES[mode], options)
  report = JUDGE_EVALUATORS[fmt](run, records)
  return {"format": fmt, "files": list(paths), "read": stats, "head": "judge",
          **report, **run.summary()}
