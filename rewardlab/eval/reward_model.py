"""Reports on a reward model's scores: pairs, steps, and whole benchmark files.

`pairwise_report` and `step_report` turn scores into the numbers we publish (strict
pairwise accuracy; ProcessBench F1; ECE / Brier / AUROC with reliability bins).
`evaluate_files` scores local files of a public format with a saved model's text
scorers (`rewardlab.models.reward`) and returns one report; `write_report` writes it as
JSON with its reliability diagram.

Calibration of a pairwise model uses `P(a ≻ b) = σ(r_a - r_b)` on both orders of every
pair (label 1 for chosen-first, 0 for rejected-first), so it is symmetric and AUROC is
defined. Step calibration uses the ProcessBench convention: steps before the first wrong
step are right (1), the first wrong step is wrong (0), later steps are not judged.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from rewardlab.data.formats import read_records
from rewardlab.eval import calibration, plots, processbench, rewardbench
from rewardlab.models import reward as reward_lib
from rewardlab.train import metrics as metrics_lib

Report = dict


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def pairwise_report(r_chosen, r_rejected, n_bins: int = 15) -> Report:
  """Strict accuracy `mean[r_c > r_r]`, mean margin, and calibration of `σ(r_c - r_r)`."""
  r_chosen, r_rejected = np.asarray(r_chosen, np.float64), np.asarray(r_rejected, np.float64)
  if r_chosen.shape != r_rejected.shape or r_chosen.ndim != 1 or r_chosen.size == 0:
    raise ValueError(f"need two non-empty [N] score arrays, got {r_chosen.shape}, "
                     f"{r_rejected.shape}")
  diff = r_chosen - r_rejected
  probs = np.concatenate([_sigmoid(diff), _sigmoid(-diff)])
  labels = np.concatenate([np.ones_like(diff), np.zeros_like(diff)])
  return {"pairwise_accuracy": float(np.mean(diff > 0)), "ties": float(np.mean(diff == 0)),
          "mean_margin": float(np.mean(diff)), "num_pairs": int(diff.size),
          "calibration": calibration.calibration_report(probs, labels, n_bins)}


def first_error_label(labels: Sequence[float]) -> int:
  """Index of the first step labelled wrong (label < 0.5), -1 if none."""
  wrong = np.flatnonzero(np.asarray(labels, np.float64) < 0.5)
  return int(wrong[0]) if wrong.size else -1


def step_report(step_probs: Sequence[np.ndarray], first_errors: Sequence[int],
                splits: Sequence[str] | None = None, *, threshold: float = 0.5,
                n_bins: int = 15) -> Report:
  """ProcessBench scores of per-step probabilities, plus step- and solution-level calibration.

  Solution level: the minimum step probability against "every step is right".
  """
  if len(step_probs) != len(first_errors) or not step_probs:
    raise ValueError(f"{len(step_probs)} step-probability rows for {len(first_errors)} labels")
  preds = processbench.first_error_predictions(list(step_probs), threshold)
  scores = processbench.processbench_scores(np.asarray(first_errors, np.int64), preds, splits)
  probs, labels = [], []
  for row, first in zip(step_probs, first_errors):
    judged = len(row) if first < 0 else min(first + 1, len(row))
    probs.append(np.asarray(row[:judged], np.float64))
    labels.append((np.arange(judged) != first).astype(np.float64))
  solution_probs = np.array([np.min(r) if len(r) else 1.0 for r in step_probs], np.float64)
  return {
      "processbench_f1": scores.average_f1,
      "splits": {name: vars(s) for name, s in scores.splits.items()},
      "num_solutions": len(step_probs),
      "threshold": threshold,
      "calibration": calibration.calibration_report(np.concatenate(probs),
                                                    np.concatenate(labels), n_bins),
      "solution_calibration": calibration.calibration_report(
          solution_probs, (np.asarray(first_errors) == -1).astype(np.float64), n_bins),
  }


# ----------------------------------------------------------------------------- files


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _records(paths: Sequence[str], fmt: str, strict: bool, tokenizer=None):
  """(record, file stem) for every record of every file, and the per-file read stats.
  Rows with text the tokenizer cannot encode are bad rows (named, or skipped and counted)."""
  out, stats = [], {}
  for path in paths:
    records, stats[path] = read_records(path, fmt, strict=strict,
                                        check_text=getattr(tokenizer, "unencodable", None))
    out += [(r, _stem(path)) for r in records]
  if not out:
    raise ValueError(f"no {fmt} records in {list(paths)}")
  return out, {p: s.summary() for p, s in stats.items()}


def _score_pairs(model, records, options):
  """Scores `[N]` of the chosen and of the rejected responses, and the scorer."""
  scorer = reward_lib.sequence_scorer(*model, batch_size=options["batch_size"])
  prompts = [r.prompt for r, _ in records]
  scores = scorer.score(prompts * 2,
                        [r.chosen for r, _ in records] + [r.rejected for r, _ in records])
  return scores[:len(records)], scores[len(records):], scorer


def _pairs(model, records, options) -> Report:
  chosen, rejected, scorer = _score_pairs(model, records, options)
  return {**pairwise_report(chosen, rejected, options["n_bins"]),
          "tokens_scored": scorer.tokens_scored}


def _rewardbench(model, records, options) -> Report:
  chosen, rejected, scorer = _score_pairs(model, records, options)
  rows = [{"subset": r.subset, "chosen_score": c, "rejected_score": j}
          for (r, _), c, j in zip(records, chosen, rejected)]
  result = rewardbench.score_v1(rows)
  return {**pairwise_report(chosen, rejected, options["n_bins"]), "overall": result.overall,
          "sections": result.sections, "subsets": result.subsets, "counts": result.counts,
          "missing": list(result.missing), "tokens_scored": scorer.tokens_scored}


def _rewardbench2(model, records, options) -> Report:
  scorer = reward_lib.sequence_scorer(*model, batch_size=options["batch_size"])
  prompts, texts, rows = [], [], []
  for r, _ in records:
    completions = list(r.chosen) + list(r.rejected)
    prompts += [r.prompt] * len(completions)
    texts += completions
  flat = scorer.score(prompts, texts)
  chosen, rejected, start = [], [], 0
  for r, _ in records:
    scores = flat[start:start + len(r.chosen) + len(r.rejected)]
    start += len(scores)
    rows.append({"id": r.id, "subset": r.subset, "num_correct": r.num_correct,
                 "scores": scores.tolist()})
    for c in scores[:r.num_correct]:  # every (correct, incorrect) pair, for calibration
      chosen += [c] * (len(scores) - r.num_correct)
      rejected += scores[r.num_correct:].tolist()
  result = rewardbench.score_v2(rows)
  report = pairwise_report(chosen, rejected, options["n_bins"])
  return {**report, "overall": result.overall, "subsets": result.subsets,
          "counts": result.counts, "missing": list(result.missing),
          "ties": None if result.ties is None else vars(result.ties),
          "tokens_scored": scorer.tokens_scored}


def _steps(model, prompts, steps, first_errors, splits, options) -> Report:
  scorer = reward_lib.ProcessScorer(*model, batch_size=options["batch_size"])
  probs = scorer.score_steps(prompts, steps)
  report = step_report(probs, first_errors, splits, threshold=options["threshold"],
                       n_bins=options["n_bins"])
  return {**report, "tokens_scored": scorer.tokens_scored}


def _processbench(model, records, options) -> Report:
  return _steps(model, [r.problem for r, _ in records], [list(r.steps) for r, _ in records],
                [r.label for r, _ in records], [s for _, s in records], options)


def _stepwise(model, records, options) -> Report:
  return _steps(model, [r.prompt for r, _ in records], [list(r.steps) for r, _ in records],
                [first_error_label(r.labels) for r, _ in records], [s for _, s in records],
                options)


FILE_EVALUATORS: dict[str, Callable] = {
    "preference": _pairs,
    "helpsteer2_preference": _pairs,
    "rewardbench": _rewardbench,
    "rewardbench2": _rewardbench2,
    "processbench": _processbench,
    "stepwise": _stepwise,
    "math_shepherd": _stepwise,
}


def evaluate_files(paths: Sequence[str], fmt: str, config, params, tokenizer, *,
                   batch_size: int = 32, threshold: float = 0.5, n_bins: int = 15,
                   strict: bool = True) -> Report:
  """Score files of format `fmt` (a key of `FILE_EVALUATORS`) with a reward model.

  ProcessBench-style formats report one split per file (named by the file stem).
  """
  if fmt not in FILE_EVALUATORS:
    raise ValueError(f"cannot evaluate format {fmt!r}; known: {sorted(FILE_EVALUATORS)}")
  records, stats = _records(paths, fmt, strict, tokenizer)
  options = {"batch_size": batch_size, "threshold": threshold, "n_bins": n_bins}
  report = FILE_EVALUATORS[fmt]((config, params, tokenizer), records, options)
  return {"format": fmt, "files": list(paths), "read": stats, "head": config.head, **report}


def write_report(out_dir: str, report: Report, *, name: str = "report",
                 title: str = "Reward model", calibration: dict | None = None) -> dict[str, str]:
  """`<out_dir>/<name>.json` and, when there is a calibration (`calibration`, else
  `report["calibration"]`), its reliability diagram `<out_dir>/<name>_reliability.png`."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, f"{name}.json")
  metrics_lib.write_json(json_path, report)  # non-finite values as null
  out = {"json": json_path}
  calibration = calibration or report.get("calibration")
  if calibration is not None:
    out["png"] = plots.plot_reliability(calibration["bins"],
                                        os.path.join(out_dir, f"{name}_reliability.png"),
                                        title=title)
  return out
