"""Label solution steps without humans: Monte-Carlo (Math-Shepherd) and OmegaPRM.

`run(cfg, workdir)` samples `num_solutions` solutions per problem of the `task` section
(`rewardlab.tasks.source`: the synthetic arithmetic task, or math problem files such as
GSM8K-format word problems from `python -m rewardlab.tasks.word_problems`) from the
completer policy (an SFT policy or any local Hugging Face model directory, prompted through
its chat template when it has one; temperature 1), labels every step of them with each method
in `cfg.methods` (outcomes judged by the task, steps split at `task.step_separator`), and
appends the results per problem, so an interrupted run resumes without recomputing finished
problems. `completer="scripted"` writes solutions with known slip probabilities instead
(arithmetic problems, or math problems that carry `intermediates`). Files in `workdir`:

* `labels_<method>.jsonl`: one stepwise record per solution (the TRL format the
  PRM trainer reads: `prompt`, `completions`, `labels`, plus `counts`, `outcomes`,
  `method`, `problem`, `solution`, `first_wrong_step`, `correct`);
* `states_omegaprm.jsonl` / `trees_omegaprm.jsonl`: OmegaPRM's flat per-state
  records and trees;
* `problems.jsonl`: one line per finished problem (its solutions, true first wrong
  steps and, per method and compute level, the completions spent and the first
  wrong step the labels imply); a problem is finished iff its line is here;
* `summary.json`: label statistics, label quality (agreement of the implied first
  wrong step with the true one: `arithmetic.first_wrong_step`, or `MathTask.first_wrong_step`
  for math problems with `intermediates`; without them the true step is null and no
  agreement is computed) against compute, and throughput.

Compute levels: MC labels from the first N' <= N completions of each prefix, and
OmegaPRM trees truncated at smaller budgets, so one run gives both quality-vs-
compute curves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from rewardlab import sharding
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels, omegaprm
from rewardlab.search.completer import Completer, StepView
from rewardlab.tasks import ArithmeticTask, arithmetic, source
from rewardlab.train import config_checks, interrupt
from rewardlab.train import metrics as metrics_lib

PROBLEMS_FILE = "problems.jsonl"


# ----------------------------------------------------------------------------- completers


def _policy_completer(cfg: ml_collections.ConfigDict) -> Completer:
  from rewardlab.train import sft  # pylint: disable=g-import-not-at-top
  if not cfg.policy_dir or not os.path.isdir(cfg.policy_dir):
    raise ValueError(f"config.policy_dir {cfg.policy_dir!r} is not a directory; train a policy "
                     "with experiments/sft.py or set config.completer='scripted'")
  # `mesh_shape`: the policy placed on a device mesh, its samples sharded over the data axes.
  mesh = sharding.make_mesh(tuple(cfg.mesh_shape)) if cfg.get("mesh_shape") else None
  config, params, tokenizer = sft.load_policy(cfg.policy_dir, mesh=mesh)
  return completer_lib.LMCompleter(config, params, tokenizer,
                                   max_new_tokens=cfg.sampling.max_new_tokens,
                                   temperature=cfg.sampling.temperature,
                                   batch_size=cfg.sampling.batch_size, mesh=mesh)


def _scripted_completer(cfg: ml_collections.ConfigDict, views: Sequence[StepView]) -> Completer:
  if all(v.is_arithmetic for v in views):
    return completer_lib.ScriptedCompleter(tuple(cfg.scripted_fail_probs))
  return completer_lib.ScriptedMathCompleter(views, tuple(cfg.scripted_fail_probs))


COMPLETERS = ("policy", "scripted")


# ----------------------------------------------------------------------------- labellers
# A labeller maps (step views of the problems, solution step lists, completer, cfg, rng) to
# one dict per problem: {"labels": [StepLabels per solution], "completions": int,
#           "levels": {level: {"completions": int, "implied": [int per solution]}},
#           "states": [StepLabels] (optional), "tree": dict (optional)}.


def _views_args(views: Sequence[StepView]) -> dict:
  """The labellers' task, separator and prompts for these views (one task per run)."""
  return {"task": views[0].task, "separator": views[0].separator,
          "prompts": [v.prompt for v in views]}


def _label_mc(views, solutions, completer, cfg, rng) -> list[dict]:
  n, task = cfg.mc.num_completions, views[0].task
  per_problem = mc_labels.label_solutions([v.problem for v in views], solutions, completer,
                                          num_completions=n, rng=rng, **_views_args(views))
  out = []
  for labels in per_problem:
    prefixes = mc_labels.num_sampled_prefixes(labels, task)
    # Math-Shepherd as published samples every prefix of every solution anew.
    unshared = sum(not task.is_answer_step(s) for l in labels for s in l.steps)
    levels = {}
    for level in sorted({min(int(m), n) for m in cfg.mc.quality_levels} | {n}):
      implied = [mc_labels.implied_first_wrong_step(
          mc_labels.labels_from_outcomes(l.outcomes, level)) for l in labels]
      levels[str(level)] = {"completions": level * prefixes,
                            "completions_without_sharing": level * unshared, "implied": implied}
    out.append({"labels": labels, "completions": n * prefixes, "levels": levels})
  return out


def omegaprm_config(cfg: ml_collections.ConfigDict) -> omegaprm.OmegaPRMConfig:
  o = cfg.omegaprm
  return omegaprm.OmegaPRMConfig(c_puct=o.c_puct, alpha=o.alpha, beta=o.beta,
                                 length_scale=o.length_scale,
                                 rollouts_per_state=o.rollouts_per_state,
                                 max_searches=o.max_searches, rollout_budget=o.rollout_budget)


def _label_omegaprm(views, solutions, completer, cfg, rng) -> list[dict]:
  config = omegaprm_config(cfg)
  roots = [[v.solution(s) for s in sols] for v, sols in zip(views, solutions)]
  trees = omegaprm.run_search([v.problem for v in views], completer, config, rng=rng,
                              root_rollouts=roots, **_views_args(views))
  out = []
  for tree, sols in zip(trees, solutions):
    levels = {}
    for budget in sorted({min(int(b), config.rollout_budget) for b in cfg.omegaprm.quality_levels}
                         | {config.rollout_budget}):
      view = tree.truncated(budget)
      implied = [mc_labels.implied_first_wrong_step(view.labels_for(s).labels) for s in sols]
      levels[str(budget)] = {"completions": view.rollouts_spent, "implied": implied}
    out.append({"labels": [tree.labels_for(s) for s in sols], "completions": tree.rollouts_spent,
                "levels": levels, "states": tree.state_labels(), "tree": tree.to_json()})
  return out


LABELLERS: dict[str, Callable[..., list[dict]]] = {"mc": _label_mc, "omegaprm": _label_omegaprm}


# ----------------------------------------------------------------------------- resumable files


def finished_problems(workdir: str) -> set[str]:
  """Keys of problems whose line in `problems.jsonl` is complete (a torn last line is ignored)."""
  path = os.path.join(workdir, PROBLEMS_FILE)
  if not os.path.exists(path):
    return set()
  done = set()
  with open(path) as f:
    for line in f:
      try:
        done.add(json.loads(line)["problem"])
      except (json.JSONDecodeError, KeyError):
        continue
  return done


def _keep_finished(path: str, done: set[str]) -> None:
  """Rewrite a jsonl file without the rows of unfinished problems (written before a crash)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line).get("problem") in done:
        kept.append(line if line.endswith("\n") else line + "\n")
    except json.JSONDecodeError:
      continue
  if kept != lines:
    with open(path, "w") as f:
      f.writelines(kept)


def true_first_wrong_step(view: StepView, steps: Sequence[str]) -> int | None:
  """The exact first wrong step of a solution (-1: none), or None when the task cannot
  tell: arithmetic always can, math problems need their `intermediates`."""
  if view.is_arithmetic:
    return arithmetic.first_wrong_step(steps, view.problem)
  if getattr(view.problem, "intermediates", None) is None:
    return None
  return view.task.first_wrong_step(view.solution(steps), view.problem)


def _num_steps(problem) -> int | None:
  """Reference steps of a problem (arithmetic ops, or math intermediates when known)."""
  if isinstance(problem, arithmetic.Problem):
    return problem.num_ops
  steps = getattr(problem, "intermediates", None)
  return None if steps is None else len(steps)


def _write_problem(workdir: str, index: int, view: StepView, texts: list[str],
                   solutions: list[list[str]], results: dict[str, dict]) -> None:
  """Append one finished problem: label rows first, its `problems.jsonl` line last."""
  append = functools.partial(metrics_lib.append_jsonl, sync=True)
  key = view.key
  truth = [true_first_wrong_step(view, s) for s in solutions]
  correct = [view.is_correct(t) for t in texts]
  for method, result in results.items():
    rows = [labels.to_record(problem=key, solution=i, first_wrong_step=truth[i],
                             correct=correct[i])
            for i, labels in enumerate(result["labels"]) if labels.steps]
    append(os.path.join(workdir, f"labels_{method}.jsonl"), *rows)
    if "states" in result:
      append(os.path.join(workdir, f"states_{method}.jsonl"),
             *[s.to_record(problem=key) for s in result["states"]])
    if "tree" in result:
      append(os.path.join(workdir, f"trees_{method}.jsonl"), {"problem": key, **result["tree"]})
  line = {"problem": key, "index": index, "num_ops": _num_steps(view.problem),
          "solutions": texts, "first_wrong_step": truth, "correct": correct,
          "methods": {m: {"completions": r["completions"], "levels": r["levels"]}
                      for m, r in results.items()}}
  append(os.path.join(workdir, PROBLEMS_FILE), line)


# ----------------------------------------------------------------------------- summary


def _agreement(implied: Sequence[int], truth: Sequence[int | None]) -> dict:
  """Agreement over the solutions whose true first wrong step is known (not None)."""
  known = [i for i, t in enumerate(truth) if t is not None]
  implied = np.asarray([implied[i] for i in known], int)
  truth = np.asarray([truth[i] for i in known], int)
  hit, wrong = implied == truth, truth >= 0
  mean = lambda x: float(x.mean()) if x.size else float("nan")
  return {"agreement": mean(hit), "agreement_wrong_solutions": mean(hit[wrong]),
          "agreement_right_solutions": mean(hit[~wrong])}


def label_statistics(records: Sequence[dict]) -> dict:
  """Counts, label distribution and mean label per step index of stepwise records."""
  labels = [y for r in records for y in r["labels"]]
  totals = [c[1] for r in records for c in r["counts"]]
  depth = max((len(r["labels"]) for r in records), default=0)
  by_step = [[r["labels"][k] for r in records if len(r["labels"]) > k] for k in range(depth)]
  arr = np.asarray(labels, float)
  return {"num_records": len(records), "num_steps": len(labels),
          "mean_label": float(arr.mean()) if arr.size else float("nan"),
          "fraction_zero": float((arr == 0).mean()) if arr.size else float("nan"),
          "fraction_one": float((arr == 1).mean()) if arr.size else float("nan"),
          "fraction_measured": float(np.mean(np.asarray(totals) > 0)) if totals else float("nan"),
          "mean_label_by_step": [float(np.mean(v)) for v in by_step]}


def summarize(workdir: str, methods: Sequence[str]) -> dict:
  """Label statistics, quality-vs-compute per method, and OmegaPRM's saving over MC.

  Quality = fraction of solutions whose implied first wrong step (first label 0,
  -1 if none) equals the true one (`true_first_wrong_step`; solutions without one, math
  problems lacking `intermediates`, are left out and counted in
  `num_solutions_without_truth`). Saving = completions of the
  cheapest MC level at least as good as OmegaPRM at its full budget, divided by
  OmegaPRM's completions (None when no MC level is as good).
  """
  logged = metrics_lib.read_jsonl(os.path.join(workdir, PROBLEMS_FILE), missing_ok=True)
  problems = list({p["problem"]: p for p in logged}.values())
  truth = [t for p in problems for t in p["first_wrong_step"]]
  known = [t for t in truth if t is not None]
  correct = [c for p in problems for c in p["correct"]]
  summary = {"num_problems": len(problems), "num_solutions": len(truth),
             "solution_accuracy": float(np.mean(correct)) if correct else float("nan"),
             "fraction_with_wrong_step": float(np.mean(np.asarray(known) >= 0)) if known else
                                         float("nan"),
             "methods": {}}
  if len(known) < len(truth):
    summary["num_solutions_without_truth"] = len(truth) - len(known)
  for method in methods:
    levels = {}
    for level in problems[0]["methods"][method]["levels"] if problems else []:
      rows = [p["methods"][method]["levels"][level] for p in problems]
      costs = {k: int(sum(r[k] for r in rows)) for k in rows[0] if k.startswith("completions")}
      implied = [i for r in rows for i in r["implied"]]
      levels[level] = {**costs, "completions_per_problem": costs["completions"] / len(rows),
                       **_agreement(implied, truth)}
    records = metrics_lib.read_jsonl(os.path.join(workdir, f"labels_{method}.jsonl"),
                                   missing_ok=True)
    spent = [p["methods"][method]["completions"] for p in problems]
    summary["methods"][method] = {
        "completions": int(np.sum(spent)),
        "completions_per_problem": float(np.mean(spent)) if spent else 0.0,
        "labels": label_statistics(records), "quality_vs_compute": levels}
  if {"mc", "omegaprm"} <= set(methods) and problems:
    summary["omegaprm_vs_mc"] = _compare(summary["methods"]["mc"]["quality_vs_compute"],
                                         summary["methods"]["omegaprm"]["quality_vs_compute"])
  return summary


def _compare(mc_levels: dict, omega_levels: dict) -> dict:
  """Compute ratio of MC to OmegaPRM at matched agreement, both ways."""
  omega = omega_levels[max(omega_levels, key=int)]
  mc = mc_levels[max(mc_levels, key=int)]
  as_good = [v for v in mc_levels.values() if v["agreement"] >= omega["agreement"]]
  cheapest_mc = min(as_good, key=lambda v: v["completions"]) if as_good else None
  as_good = [v for v in omega_levels.values() if v["agreement"] >= mc["agreement"]]
  cheapest_omega = min(as_good, key=lambda v: v["completions"]) if as_good else None
  ratio = lambda a, b: a["completions"] / b["completions"] if a and b and b["completions"] else None
  unshared = mc.get("completions_without_sharing")
  return {"mc_full_completions_without_sharing": unshared,
          "saving_over_unshared_mc": ratio({"completions": unshared}, omega) if unshared else None,
          "omegaprm_agreement": omega["agreement"], "omegaprm_completions": omega["completions"],
          "mc_full_agreement": mc["agreement"], "mc_full_completions": mc["completions"],
          "mc_completions_matching_omegaprm": cheapest_mc and cheapest_mc["completions"],
          "saving_at_omegaprm_quality": ratio(cheapest_mc, omega),
          "omegaprm_completions_matching_mc_full": cheapest_omega and cheapest_omega["completions"],
          "saving_at_mc_full_quality": ratio(mc, cheapest_omega)}


# ----------------------------------------------------------------------------- run


def label_problems(cfg: ml_collections.ConfigDict, src: source.TaskSource | None = None) -> list:
  """`data.num_problems` problems of the task's `data.split` ("" = both for arithmetic,
  "train" for files), seed `data.seed` (arithmetic generation only; files: 0 = all)."""
  d, src = cfg.data, source.build(cfg.task) if src is None else src
  split = d.split or (None if isinstance(src.task, ArithmeticTask) else "train")
  return src.problems(split, d.num_problems, d.seed)


def problem_views(src: source.TaskSource, problems: Sequence) -> list[StepView]:
  """How the labellers read each problem: `src.prompt` (chat-wrapped when the policy's
  template applies), `task.step_separator`, and a stable name: the arithmetic key, or for
  file problems their index and a hash of the prompt (resuming matches problems by it)."""
  views = []
  for i, p in enumerate(problems):
    view = completer_lib.step_view(p, src.step_separator, task=src.task, prompt=src.prompt(p))
    views.append(view if view.is_arithmetic else dataclasses.replace(view, name=f"{i}-{view.key}"))
  return views


def _label_batch(cfg, completer: completer_lib.MeteredCompleter, workdir: str,
                 batch: list[tuple[int, StepView]], method_stats: dict) -> None:
  rng = np.random.default_rng([cfg.seed, batch[0][0]])
  views = [v for _, v in batch]
  texts = completer.complete([v.prompt for v in views], cfg.num_solutions, rng)
  solutions = [[v.steps(t) for t in ts] for v, ts in zip(views, texts)]
  results: list[dict] = [{} for _ in views]
  for method in cfg.methods:
    before = completer.stats.completions, completer.stats.seconds
    for i, result in enumerate(LABELLERS[method](views, solutions, completer, cfg, rng)):
      results[i][method] = result
    stats = method_stats.setdefault(method, {"completions": 0, "seconds": 0.0})
    stats["completions"] += completer.stats.completions - before[0]
    stats["seconds"] += completer.stats.seconds - before[1]
  for (index, view), ts, sols, result in zip(batch, texts, solutions, results):
    _write_problem(workdir, index, view, ts, sols, result)


def run(cfg: ml_collections.ConfigDict, workdir: str, *, completer: Completer | None = None,
        stop_after: int | None = None) -> dict:
  """Label `cfg.data.num_problems` problems (resuming), then write and return the summary.

  `completer` overrides `cfg.completer` (tests pass scripted ones). `stop_after` ends
  this invocation once that many problems are finished in total, as an interruption
  would; running again continues with the rest.
  """
  unknown = sorted(set(cfg.methods) - set(LABELLERS))
  if unknown or not cfg.methods:
    raise ValueError(f"config.methods: unknown {unknown}; known: {sorted(LABELLERS)}")
  if cfg.completer not in COMPLETERS:
    raise ValueError(f"config.completer {cfg.completer!r}; known: {sorted(COMPLETERS)}")
  config_checks.check_values(cfg)
  if completer is None and cfg.completer == "policy":
    completer = _policy_completer(cfg)
  # Prompts through the policy's tokenizer (its chat template) when it has one.
  src = source.build(cfg.task, getattr(completer, "tokenizer", None))
  problems = problem_views(src, label_problems(cfg, src))
  if completer is None:
    completer = _scripted_completer(cfg, problems)
  os.makedirs(workdir, exist_ok=True)
  done = finished_problems(workdir)
  for name in os.listdir(workdir):  # drop rows of unfinished problems and torn lines
    if name.endswith(".jsonl"):
      _keep_finished(os.path.join(workdir, name), done)
  pending = [(i, v) for i, v in enumerate(problems) if v.key not in done]
  finished_before = len(problems) - len(pending)
  todo = pending if stop_after is None else pending[:max(stop_after - finished_before, 0)]

  metered = completer_lib.MeteredCompleter(completer)
  method_stats: dict = {}
  t0 = time.perf_counter()
  bar = tqdm(total=len(problems), initial=finished_before, unit="problem", desc="label_steps",
             dynamic_ncols=True, disable=not cfg.progress, mininterval=1.0)
  try:
    with interrupt.watch():  # SIGTERM / SIGINT: stop after the batch, its problems saved
      for start in range(0, len(todo), cfg.problems_per_batch):
        batch = todo[start:start + cfg.problems_per_batch]
        _label_batch(cfg, metered, workdir, batch, method_stats)
        bar.update(len(batch))
        bar.set_postfix({"completions/s": f"{metered.stats.completions_per_s:.4g}"},
                        refresh=False)
        if start + cfg.problems_per_batch < len(todo):
          interrupt.check(f"label_steps: stopped with {finished_before + start + len(batch)} of "
                          f"{len(problems)} problems labelled (saved in {workdir}); rerun the "
                          "same command to continue")
  finally:
    bar.close()
  seconds = time.perf_counter() - t0

  finished = finished_problems(workdir)
  throughput = {"problems_this_run": len(todo), "seconds_this_run": seconds,
                "problems_per_s": len(todo) / seconds if seconds > 0 else 0.0,
                "completer": metered.stats.as_dict(),
                "methods": {m: {**s, "completions_per_s": s["completions"] / s["seconds"]
                                if s["seconds"] > 0 else 0.0} for m, s in method_stats.items()}}
  if len(finished) < len(problems):
    return {"stopped_at": len(finished), "throughput": throughput}
  summary = summarize(workdir, list(cfg.methods))
  summary["throughput"] = throughput
  metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
