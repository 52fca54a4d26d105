"""The pipeline's report: report.md, report.json and the plots, in one directory.

Everything is read from the stage outputs; every accuracy carries a 95% interval over
problems, and each claim of the seed papers is checked by a paired difference on the
same problems (`rewardlab.eval.compare`).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from rewardlab.eval import compare
from rewardlab.eval.plots import plot_curves
from rewardlab.search import curves
from rewardlab.train import metrics as metrics_lib

LABELS = {
    "majority": "majority vote (self-consistency)",
    "best_of_n_orm": "best-of-N, outcome RM",
    "best_of_n_prm": "best-of-N, PRM",
    "weighted_best_of_n_orm": "weighted best-of-N, outcome RM",
    "weighted_best_of_n_prm": "weighted best-of-N, PRM",
    "beam_search": "PRM beam search",
    "dvts": "DVTS (PRM)",
    "qalign": "QAlign (PRM, MCMC)",
    "genarm": "GenARM-guided decoding + vote",
}


def _pct(x: float | None) -> str:
  """Percent with one decimal; "n/a" for an undefined value (e.g. an F1 without wrong
  solutions in the held-out set)."""
  return "n/a" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, spec: str) -> str:
  return "n/a" if x is None else format(x, spec)


def _ci(mean: float, low: float, high: float) -> str:
  return f"{_pct(mean)} [{_pct(low)}, {_pct(high)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _copy(src: str | None, out_dir: str, name: str) -> str | None:
  if not src or not os.path.exists(src):
    return None
  shutil.copyfile(src, os.path.join(out_dir, name))
  return name


# ----------------------------------------------------------------------------- sections


def _tts_section(tts: dict) -> tuple[str, dict]:
  ns, methods = tts["ns"], tts["methods"]
  rows = []
  for name, m in methods.items():
    rows.append([LABELS.get(name, name)] + [_ci(a, lo, hi) for a, lo, hi in
                                            zip(m["accuracy"], m["ci_low"], m["ci_high"])]
                + [f"{m['tokens_generated'][-1]:.0f}", f"{m['tokens_scored'][-1]:.0f}"])
  if "pass@n" in tts:
    p = tts["pass@n"]
    rows.append(["pass@N (oracle ceiling)"] + [_ci(a, lo, hi) for a, lo, hi in
                                               zip(p["accuracy"], p["ci_low"], p["ci_high"])]
                + ["", ""])
  header = ["method"] + [f"N={n}" for n in ns] + [f"gen. tokens at N={ns[-1]}",
                                                  f"RM tokens at N={ns[-1]}"]
  text = (f"Accuracy (%) with 95% intervals over {tts['num_problems']} held-out problems; the "
          "last columns give the tokens generated and scored per problem at the largest N. "
          "Beam search, DVTS and QAlign spend a different number of tokens than N full "
          "samples: the next table compares every method at equal generated-token budgets, "
          "and `accuracy_vs_tokens.png` draws it.\n\n" + _table(header, rows)
          + "\n\n" + _budget_table(tts))
  return text, {k: {"n": ns, "accuracy": m["accuracy"], "ci_low": m["ci_low"],
                    "ci_high": m["ci_high"], "tokens_generated": m["tokens_generated"],
                    "tokens_scored": m["tokens_scored"]} for k, m in methods.items()}


def _budget_table(tts: dict) -> str:
  """Accuracy of each method at the largest N whose generated tokens per problem fit each
  budget; the budgets are those of N plain samples (the majority-vote draw)."""
  methods, ns = tts["methods"], tts["ns"]
  plain = methods.get("majority") or next(iter(methods.values()))
  budgets = plain["tokens_generated"]
  rows = []
  for name, m in methods.items():
    row = [LABELS.get(name, name)]
    for budget in budgets:
      fit = [j for j, t in enumerate(m["tokens_generated"]) if t <= budget * 1.05]
      row.append(f"{_pct(m['accuracy'][fit[-1]])} (N={ns[fit[-1]]})" if fit else "—")
    rows.append(row)
  header = ["method"] + [f"≤{b:.0f} tokens" for b in budgets]
  return ("Accuracy (%) at equal generated-token budgets per problem (the tokens of 1, 2, 4, "
          "... plain samples, +5%); the N that fits is in brackets, — when none does.\n\n"
          + _table(header, rows))


def _rm_section(inputs: dict) -> tuple[str, dict]:
  rows, out = [], {}
  for name, title in (("rm_orm", "outcome RM (Bradley-Terry)"), ("rm_genarm", "GenARM (token-level)"),
                      ("rm_prm", "PRM (Monte-Carlo labels)")):
    s = inputs.get(name)
    if s is None:
      continue
    e, cal = s["eval"], s["eval"].get("calibration", {})
    if s["kind"] == "prm":
      split = e["splits"]["all"]
      metric = (f"step-error F1 {_num(e['processbench_f1'], '.3f')} (wrong solutions: first "
                f"error found {_pct(split['acc_error'])}%, right solutions passed "
                f"{_pct(split['acc_correct'])}%)")
    else:
      metric = f"pairwise accuracy {_pct(e['pairwise_accuracy'])}% ({e['num_pairs']} pairs)"
    calib = (f"ECE {_num(cal['ece'], '.3f')}, Brier {_num(cal['brier'], '.3f')}, "
             f"AUROC {_num(cal['auroc'], '.3f')}"
             if cal else "")
    rows.append([title, s["train_examples"], f"{s['train_seconds']:.0f}", metric, calib])
    out[name] = {"kind": s["kind"], "train_examples": s["train_examples"],
                 "train_seconds": s["train_seconds"],
                 "eval": {k: v for k, v in e.items() if k not in ("calibration",)},
                 "calibration": {k: v for k, v in cal.items() if k != "bins"}}
  base = (inputs.get("rollouts") or {}).get("policy_likelihood_pairwise_accuracy")
  if base is not None:
    rows.append(["baseline: the policy's log-likelihood (untrained)", "0", "0",
                 f"pairwise accuracy {_pct(base)}%", ""])
    out["policy_likelihood_pairwise_accuracy"] = base
  given = (inputs.get("sft") or {}).get("given")
  mc_test = "prm_eval" in ((inputs.get("labels") or {}).get("files") or {})
  text = (f"All three start from the {'given' if given else 'SFT'} policy's weights. Held-out "
          "sets: (right, wrong) pairs of policy samples on test-split problems (ORM, GenARM); "
          "for the PRM, "
          + ("the Monte-Carlo step labels of held-out labelled problems (these problems have "
             "no exact step labels)" if mc_test else
             "the policy's held-out samples with exact step labels (from the task's checker)")
          + ", ProcessBench-style F1 of finding the first wrong step.\n\n"
          + _table(["model", "train examples", "train s", "held-out", "calibration"], rows))
  return text, out


def _labels_section(labels: dict, out_dir: str) -> tuple[str, dict, str | None]:
  with open(labels["summary_file"]) as f:
    summary = json.load(f)
  rows, plot = [], {}
  for method, m in summary["methods"].items():
    full = m["quality_vs_compute"][max(m["quality_vs_compute"], key=int)]
    rows.append([method, f"{m['completions_per_problem']:.1f}", f"{full['agreement']:.3f}",
                 f"{full['agreement_wrong_solutions']:.3f}", f"{m['labels']['mean_label']:.3f}"])
    levels = sorted(m["quality_vs_compute"].values(), key=lambda v: v["completions_per_problem"])
    n = summary["num_solutions"]
    agree = np.array([v["agreement"] for v in levels])
    low, high = curves.wilson_interval(np.round(agree * n), n)
    plot[method] = {"x": [v["completions_per_problem"] for v in levels], "mean": agree,
                    "ci_low": np.atleast_1d(low), "ci_high": np.atleast_1d(high)}
  path = plot_curves(plot, os.path.join(out_dir, "labels_quality.png"),
                     xlabel="completions per problem", ylabel="agreement with true first wrong step",
                     title="step-label quality vs compute") if plot else None
  cmp = summary.get("omegaprm_vs_mc") or {}
  text = (f"{summary['num_problems']} problems x {summary['num_solutions'] // max(summary['num_problems'], 1)} "
          f"policy solutions ({_pct(summary['solution_accuracy'])}% right). Quality = agreement of "
          "the first wrong step the labels imply with the true one.\n\n"
          + _table(["method", "completions / problem", "agreement", "agreement (wrong solutions)",
                    "mean label"], rows))
  return text, {"summary": {k: v for k, v in summary.items() if k != "methods"},
                "methods": {k: {kk: vv for kk, vv in v.items() if kk != "labels"}
                            for k, v in summary["methods"].items()}, "omegaprm_vs_mc": cmp}, \
      (os.path.basename(path) if path else None)


def _read_per_problem(rl: dict) -> dict:
  """Greedy outcomes per held-out problem before and after RL (`rl/pass1_per_problem.json`)."""
  with open(rl["per_problem_file"]) as f:
    return json.load(f)


def _rl_section(rl: dict, per: dict) -> tuple[str, dict]:
  before, after = np.asarray(per["before"], float), np.asarray(per["after"], float)
  n = before.size
  ci = lambda x: curves.wilson_interval(int(x.sum()), n)
  diff = compare.paired_difference(after, before)
  s, f_ = rl["start"], rl["final"]
  rows = [["before (SFT)", _ci(before.mean(), *ci(before)), _pct(s.get("pass1_sampled", float("nan"))),
           _pct(next((v for k, v in s.items() if k.startswith("maj")), float("nan")))],
          [f"after {rl['steps']} GRPO steps", _ci(after.mean(), *ci(after)),
           _pct(f_.get("pass1_sampled", float("nan"))),
           _pct(next((v for k, v in f_.items() if k.startswith("maj")), float("nan")))]]
  text = (f"Greedy pass@1 on {n} held-out problems (95% Wilson interval); sampled pass@1 and "
          "majority vote on a subset, at temperature 1. Paired difference after - before: "
          f"{_pct(diff['diff'])} points [{_pct(diff['low'])}, {_pct(diff['high'])}].\n\n"
          + _table(["policy", "greedy pass@1", "sampled pass@1", "maj@k"], rows))
  return text, {"n": n, "before": before.mean(), "after": after.mean(), "difference": diff,
                "steps": rl["steps"], "seconds": rl["seconds"], "start": s, "final": f_}


# ----------------------------------------------------------------------------- claims


def _at(tts: dict, method: str, n: int | None = None) -> np.ndarray | None:
  m = tts["methods"].get(method)
  if m is None:
    return None
  j = len(tts["ns"]) - 1 if n is None else tts["ns"].index(n)
  return np.asarray(m["per_problem_correct"][j], float)


def _claims(tts: dict | None, labels: dict | None, rl: dict | None,
            per: dict | None) -> list[dict]:
  claims = []

  def add(paper, claim, a, b, what):
    if a is None or b is None:
      return
    d = compare.paired_difference(a, b)
    claims.append({"paper": paper, "claim": claim, "comparison": what, **d,
                   "verdict": compare.verdict(d)})

  if tts is not None:
    ns = tts["ns"]
    n_max, n_mid = ns[-1], min(4, ns[-1])
    add("Math-Shepherd (Wang et al. 2024)", "best-of-N with a PRM trained on Monte-Carlo labels "
        "beats majority voting", _at(tts, "best_of_n_prm"), _at(tts, "majority"),
        f"BoN-PRM vs majority at N={n_max}")
    add("Let's Verify Step by Step (Lightman et al. 2023)", "process supervision beats outcome "
        "supervision for best-of-N", _at(tts, "best_of_n_prm"), _at(tts, "best_of_n_orm"),
        f"BoN-PRM vs BoN-ORM at N={n_max}")
    add("Scaling test-time compute (Snell et al. 2024)", "weighted best-of-N is at least as good "
        "as best-of-N", _at(tts, "weighted_best_of_n_prm"), _at(tts, "best_of_n_prm"),
        f"weighted vs plain BoN (PRM) at N={n_max}")
    add("Scaling test-time compute (Snell et al. 2024)", "PRM beam search beats best-of-N at "
        "small budgets", _at(tts, "beam_search", n_mid), _at(tts, "best_of_n_prm", n_mid),
        f"beam search vs BoN-PRM at N={n_mid}")
    add("DVTS (Beeching et al. 2024, search-and-learn)", "DVTS beats beam search at large N",
        _at(tts, "dvts"), _at(tts, "beam_search"), f"DVTS vs beam search at N={n_max}")
    add("QAlign (Faria & Smith 2025)", "accuracy rises with test-time compute (MCMC steps)",
        _at(tts, "qalign"), _at(tts, "qalign", ns[0]), f"QAlign at N={n_max} vs N={ns[0]}")
    add("GenARM (Xu et al. 2024)", "token-level reward guidance improves the frozen policy's "
        "samples", _at(tts, "genarm", ns[0]), _at(tts, "majority", ns[0]),
        "one guided sample vs one plain sample")
    add("Test-time scaling (all)", "best-of-N with a PRM improves with N",
        _at(tts, "best_of_n_prm"), _at(tts, "best_of_n_prm", ns[0]),
        f"BoN-PRM at N={n_max} vs N={ns[0]}")
  if rl is not None:
    add("DeepSeekMath GRPO (Shao et al. 2024)", "GRPO with a verifiable reward raises pass@1",
        np.asarray(per["after"], float), np.asarray(per["before"], float),
        f"greedy pass@1 after vs before {rl['steps']} steps")
  if labels is not None and labels.get("omegaprm_vs_mc"):
    c = labels["omegaprm_vs_mc"]
    ratio = c.get("saving_at_omegaprm_quality")
    verdict = (compare.REPRODUCED if ratio and ratio > 1 else
               compare.CONTRADICTED if ratio and ratio < 1 else compare.UNRESOLVED)
    claims.append({"paper": "OmegaPRM (Luo et al. 2024)", "claim": "MCTS with binary search "
                   "labels steps as well as plain Monte-Carlo with fewer rollouts",
                   "comparison": (f"OmegaPRM agreement {c['omegaprm_agreement']:.3f} at "
                                  f"{c['omegaprm_completions']} completions; MC needs "
                                  f"{c['mc_completions_matching_omegaprm']} for as good"),
                   "a": c["omegaprm_agreement"], "b": c["mc_full_agreement"],
                   "diff": ratio, "low": None, "high": None, "n": None, "verdict": verdict})
  return claims


def _reading(inputs: dict, tts: dict | None, config: dict) -> list[str]:
  """Plain-language notes that tie the verdicts to the reward models' measured quality."""
  notes = []
  prm, orm = inputs.get("rm_prm"), inputs.get("rm_orm")
  base = (inputs.get("rollouts") or {}).get("policy_likelihood_pairwise_accuracy")
  kinds = ((inputs.get("rollouts") or {}).get("eval") or {}).get("error_kinds") or {}
  if prm is not None:
    split = prm["eval"]["splits"]["all"]
    note = (f"The PRM finds the first wrong step of {_pct(split['acc_error'])}% of the policy's "
            f"wrong held-out solutions and passes {_pct(split['acc_correct'])}% of its right ones "
            f"(F1 {_num(prm['eval']['processbench_f1'], '.2f')}).")
    total = sum(kinds.values())
    if total:
      note += (" The first error of the policy's wrong held-out solutions is an arithmetic slip "
               f"(right operation on the right value, wrong result) in {_pct(kinds['slip'] / total)}% "
               "of them (" + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ").")
    if config.get("rm", {}).get("prm_form") == "genarm":
      note += (" This PRM reads step k as the log-likelihood of the solution up to step k under "
               "an LM that starts as the policy, plus a learned bias (`rm.prm_form=genarm`). A "
               "sampled slip is usually an unlikely token, so the PRM sees slips from its first "
               "step; training on the Monte-Carlo labels moves its threshold and calibration. A "
               "linear head on the separator's hidden state (`rm.prm_form=classifier`) has to "
               "learn to compute better than the policy before it sees a slip, which a few "
               "hundred steps on a few hundred labelled solutions do not teach a model of this "
               "size.")
    methods = (tts or {}).get("methods", {})
    if "best_of_n_prm" in methods and "majority" in methods:
      gap = methods["best_of_n_prm"]["accuracy"][-1] - methods["majority"]["accuracy"][-1]
      note += (f" Best-of-{tts['ns'][-1]} with it is {_pct(abs(gap))} points "
               f"{'above' if gap >= 0 else 'below'} majority vote.")
    notes.append(note)
  if orm is not None and base is not None:
    note = (f"The outcome RM ranks a right above a wrong held-out solution "
            f"{_pct(orm['eval']['pairwise_accuracy'])}% of the time; the policy's own "
            f"log-likelihood, untrained, does so {_pct(base)}% of the time (a sampled slip is "
            "often an unlikely token).")
    genarm = (tts or {}).get("methods", {}).get("genarm")
    plain = (tts or {}).get("methods", {}).get("majority")
    if genarm and plain:
      gain = genarm["accuracy"][0] - plain["accuracy"][0]
      note += (" GenARM starts from the policy, so it keeps that signal; one guided sample is "
               f"{_pct(abs(gain))} points {'more' if gain >= 0 else 'less'} accurate than one "
               "plain sample.")
    notes.append(note)
  if tts is not None and "pass@n" in tts:
    top = max(tts["methods"], key=lambda k: tts["methods"][k]["accuracy"][-1])
    notes.append(
        f"The oracle ceiling pass@{tts['ns'][-1]} is {_pct(tts['pass@n']['accuracy'][-1])}%; the best "
        f"method at N={tts['ns'][-1]} ({LABELS.get(top, top)}) reaches "
        f"{_pct(tts['methods'][top]['accuracy'][-1])}%. pass@N is what best-of-N reaches with "
        "an exact outcome verifier, so the gap measures the reward models more than the "
        "search methods (`experiments/tts.py --config.reward.oracle=True` runs every method "
        "with the task's exact verifiers).")
  return notes


def _claims_table(claims: list[dict]) -> str:
  rows = []
  for c in claims:
    if c["low"] is None:
      numbers = f"saving x{c['diff']:.2f}" if c["diff"] else "no MC level as good"
    else:
      numbers = (f"{_pct(c['a'])} vs {_pct(c['b'])}: {_pct(c['diff'])} "
                 f"[{_pct(c['low'])}, {_pct(c['high'])}]")
    rows.append([c["paper"], c["claim"], c["comparison"], numbers, f"**{c['verdict']}**"])
  return ("A claim is *reproduced* when the 95% interval of the paired difference (same "
          "problems) is above zero, *contradicted* when it is below, and *not resolved* at this "
          "scale otherwise.\n\n" + _table(["paper", "claim", "test", "a vs b (points, 95% CI)",
                                           "verdict"], rows))


# ----------------------------------------------------------------------------- write


def write(out_dir: str, inputs: dict, seconds: dict, config: dict) -> dict:
  """Write report.md / report.json / PNGs into `out_dir` from the stage summaries."""
  os.makedirs(out_dir, exist_ok=True)
  report: dict = {"config": config, "stage_seconds": seconds,
                  "total_seconds": float(sum(seconds.values()))}
  task = config.get("task", {})
  arithmetic = task.get("name", "arithmetic") == "arithmetic"
  what = ("the synthetic arithmetic task: SFT policy" if arithmetic else
          f"the problems of `{task.get('train_files')}` / `{task.get('eval_files')}` "
          f"({task.get('format')} format): given policy")
  parts = ["# rewardlab pipeline report", "",
           f"End-to-end run on {what} -> rollouts -> step "
           "labels -> reward models -> test-time scaling -> GRPO. Numbers are measured in "
           "this run; files named here sit beside this report.", ""]
  sft = inputs.get("sft")
  if sft and sft.get("given"):
    parts += ["## Policy", "", f"Source: `{sft['source']}` (given; no SFT stage).", ""]
    report["policy"] = sft
  elif sft:
    parts += ["## Policy", "",
              f"Source: `{sft['source']}`; greedy accuracy at SFT time "
              f"{_pct(sft.get('accuracy', float('nan')))}% on {sft.get('num_problems', '?')} "
              "problems.", ""]
    report["policy"] = sft
  roll = inputs.get("rollouts")
  if roll:
    tr, ev, k = roll["train"], roll["eval"], config["rollouts"]["samples"]
    parts += ["## Rollouts", "",
              f"{tr['samples']} samples on {tr['problems']} train problems (temperature 1): "
              f"{_pct(tr['sample_accuracy'])}% right, pass@{k} "
              f"{_pct(tr['pass@%d' % k])}%, {tr['pairs']} (right, wrong) "
              f"pairs; {ev['samples']} held-out samples give {ev['pairs']} test pairs and "
              f"{ev['step_records']} step-labelled solutions. Sampler: "
              f"{tr['samples_per_s']:.0f} samples/s.", ""]
    report["rollouts"] = roll
  tts_results = None
  if inputs.get("tts"):
    with open(inputs["tts"]["results_file"]) as f:
      tts_results = json.load(f)
  labels_out = None
  if inputs.get("labels"):
    text, labels_out, plot = _labels_section(inputs["labels"], out_dir)
    parts += ["## Step labels: Monte-Carlo vs OmegaPRM", "", text, ""]
    if plot:
      parts += [f"![label quality]({plot})", ""]
    report["labels"] = labels_out
  if any(k in inputs for k in ("rm_orm", "rm_prm", "rm_genarm")):
    text, rm_out = _rm_section(inputs)
    parts += ["## Reward models", "", text, ""]
    rel = _copy(os.path.join(os.path.dirname(inputs["rm_prm"]["reward_model_dir"]),
                             "rm_results_reliability.png"), out_dir, "prm_reliability.png") \
        if "rm_prm" in inputs else None
    if rel:
      parts += ["PRM calibration on held-out steps (reliability diagram):", "",
                f"![PRM reliability]({rel})", ""]
    report["reward_models"] = rm_out
  if tts_results is not None:
    text, tts_out = _tts_section(tts_results)
    parts += ["## Test-time scaling", "", text, ""]
    tts_dir = os.path.dirname(inputs["tts"]["results_file"])
    for name in ("accuracy_vs_n.png", "accuracy_vs_tokens.png"):
      if _copy(os.path.join(tts_dir, name), out_dir, name):
        parts += [f"![{name[:-4]}]({name})", ""]
    report["tts"] = tts_out
  per = _read_per_problem(inputs["rl"]) if inputs.get("rl") else None
  if inputs.get("rl"):
    text, rl_out = _rl_section(inputs["rl"], per)
    parts += ["## GRPO", "", text, ""]
    if _copy(inputs["rl"]["curves"], out_dir, "rl_curves.png"):
      parts += ["![RL curves](rl_curves.png)", ""]
    report["rl"] = rl_out
  claims = _claims(tts_results, labels_out, inputs.get("rl"), per)
  if claims:
    parts += ["## Which claims of the seed papers this run reproduces", "", _claims_table(claims),
              "", "At this scale ("
              + ("a 0.86M-parameter policy, " if arithmetic else "")
              + "a few hundred test problems) an unresolved claim means the difference is smaller than the run can measure, not "
              "that it is absent.", ""]
    notes = _reading(inputs, tts_results, config)
    if notes:
      parts += ["### Reading the results", ""] + [f"- {n}" for n in notes] + [""]
    report["claims"] = claims
    report["reading"] = notes
  parts += ["## Runtime", "",
            _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in seconds.items()]
                   + [["total", f"{report['total_seconds']:.0f}"]]),
            "", "Seconds are those of the run that finished each stage.", ""]
  md_path, json_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.json")
  with open(md_path, "w") as f:
    f.write("\n".join(parts))
  metrics_lib.write_json(json_path, report)  # strict JSON: non-finite values as null
  return {"report_md": md_path, "report_json": json_path, "claims": [
      {k: c[k] for k in ("paper", "comparison", "verdict")} for c in claims]}
