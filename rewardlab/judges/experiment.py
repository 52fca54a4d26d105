"""The generative-verifier experiment on the synthetic arithmetic task (issue 16).

Stages (each writes into `workdir` and is skipped when its output exists, so an
interrupted run resumes; training stages also resume from their checkpoints):

1. data: solutions sampled from the policy (temperature 1) on train and held-out
   problems, plus checker-corrupted ones for training; every line labelled by the
   checker (`judge_task.first_wrong_line`).
2. verifiers, all started from the policy with the verifier's characters added:
   `untrained` (no verifier training), `sft` (checker chains on every training
   solution), `sft_few` (checker chains on `few.labels` solutions only), `filtered`
   (ThinkPRM: `sft_few` samples chains on `few.filter_labels` more labelled solutions,
   the chains whose verdicts match the labels are kept, and the policy is fine-tuned on
   them plus the few), `grpo` (J1 / RM-R1: GRPO of `sft_few` on the filter solutions'
   labels), `tool` (as `sft`, with calculator calls).
3. evaluation on the held-out solutions: greedy chains (one per solution) for every
   verifier and every PRM given in `prm_dirs`: step-error F1 (ProcessBench), calibration,
   best-of-N accuracy for N = 1..n_max; the judge-compute curve of `compute_curve.verifier`
   (K sampled chains per solution, K = 1..max) with its tokens; the verifier's own
   arithmetic slips (check lines whose value is wrong).
4. claims with paired 95% intervals (`rewardlab.eval.compare`), JSON + PNG.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time

import jax
import numpy as np

import rewardlab
from rewardlab.data.tokenizers import decode_sampled, load_tokenizer
from rewardlab.eval import compare
from rewardlab.eval.judge_files import judge_step_report
from rewardlab.judges import arithmetic as judge_task
from rewardlab.judges import training
from rewardlab.judges.model import JudgeModel
from rewardlab.judges.steps import verify_steps
from rewardlab.sampling import generate
from rewardlab.search import selection
from rewardlab.tasks import arithmetic

log = logging.getLogger(__name__)


def _json(path, obj=None):
  if obj is None:
    with open(path) as f:
      return json.load(f)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(tmp, path)
  return obj


# ----------------------------------------------------------------------------- data


def _policy(cfg):
  path = cfg.policy_dir
  config, params = rewardlab.load_pretrained(path)
  return config, params, load_tokenizer(path)


def _sample_solutions(cfg, problems, n, seed):
  config, params, tok = _policy(cfg)
  texts = []
  for start in range(0, len(problems), 64):
    chunk = problems[start:start + 64]
    out = generate(config, params, [tok.encode(p.prompt, add_bos=True) for p in chunk],
                   max_new_tokens=56, temperature=1.0, stop_tokens=(tok.eos_id,),
                   num_samples=n, rng=jax.random.key(seed + start), pad_id=tok.pad_id)
    texts += [decode_sampled(tok, ids) for ids in out.completions()]
  return texts


def labelled_solution(problem, text) -> dict:
  """A solution text as the experiment's item: its lines, the checker's first wrong line,
  whether it is complete (ends with its answer line) and right."""
  steps = judge_task.solution_steps(text)
  label = judge_task.first_wrong_line(problem, steps)
  complete = bool(steps) and steps[-1].startswith("A:")
  return {"problem": problem.key, "prompt": problem.prompt, "steps": steps, "label": label,
          "complete": complete, "correct": arithmetic.is_correct(text, problem),
          "answer": arithmetic.extract_answer(text)}


def _balance(problems, items, wrong_share, kinds, rng) -> list[dict]:
  """Checker-corrupted solutions (`arithmetic.corrupt_solution`, kind drawn from `kinds`)
  of `problems` in turn, as many as make `wrong_share` of items + them wrong."""
  wrong = sum(i["label"] >= 0 for i in items)
  need = int(np.ceil((wrong_share * len(items) - wrong) / (1.0 - wrong_share))) if wrong_share < 1 \
      else 0
  out = []
  for n in range(max(0, need)):
    p = problems[n % len(problems)]
    kind = kinds[int(rng.integers(len(kinds)))]
    out.append(labelled_solution(p, arithmetic.corrupt_solution(p, rng, kind=kind)[0]))
  return out


def make_data(cfg, workdir):
  path = os.path.join(workdir, "data.json")
  if os.path.exists(path):
    return _json(path)
  ops = tuple(cfg.num_ops)
  train = arithmetic.generate_problems(cfg.data.train_problems, seed=cfg.seed, num_ops=ops,
                                       split="train")
  test = arithmetic.generate_problems(cfg.data.eval_problems, seed=cfg.seed + 1, num_ops=ops,
                                      split="test")
  train_texts = _sample_solutions(cfg, train, cfg.data.train_samples, cfg.seed)
  items = [labelled_solution(p, t)
           for p, t in zip(np.repeat(train, cfg.data.train_samples), train_texts)]
  items = [i for i in items if i["complete"] and i["steps"]]
  sampled = len(items)
  rng = np.random.default_rng(cfg.seed)
  items += _balance(train, items, cfg.data.wrong_share, tuple(cfg.data.corrupt_kinds), rng)
  order = rng.permutation(len(items))
  eval_texts = _sample_solutions(cfg, test, cfg.eval.n_max, cfg.seed + 7)
  evals = [labelled_solution(p, t) for p, t in zip(np.repeat(test, cfg.eval.n_max), eval_texts)]
  train_items = [items[i] for i in order]
  stats = {"sampled": sampled, "corrupted": len(items) - sampled,
           "wrong_solutions": sum(i["label"] >= 0 for i in train_items),
           "judged_lines": sum(len(i["steps"]) if i["label"] < 0 else i["label"] + 1
                               for i in train_items)}
  stats["wrong_line_share"] = stats["wrong_solutions"] / max(1, stats["judged_lines"])
  return _json(path, {"train": train_items, "eval": evals, "train_stats": stats})


# ----------------------------------------------------------------------------- verifiers


def initial_judge(policy_dir: str, *, seed: int = 0, max_positions: int = 192) -> JudgeModel:
  """The policy as an (untrained) judge: its vocabulary grown by the verifier's characters
  (`judge_task.VERIFIER_ALPHABET`) and its context to `max_positions`."""
  config, params = rewardlab.load_pretrained(policy_dir)
  tok = judge_task.tokenizer()
  vocab = -(-tok.vocab_size // 8) * 8
  config, params = judge_task.extend_vocabulary(config, params, vocab, jax.random.key(seed),
                                                max_positions=max_positions)
  return JudgeModel(config, params, tok)


def _problem(key):
  return arithmetic.parse_prompt(key)


def template_of(style: str):
  """The judge template of a chain style (`judge_task.STYLES`)."""
  return judge_task.TEMPLATE if style == "reveal" else judge_task.COPY_TEMPLATE


def chain_examples(judge, items, max_length, *, tool=False, chains=None, style="reveal",
                   verdict_weights=(1.0, 1.0)) -> list[dict]:
  """SFT examples of items (`labelled_solution`) with the checker's chains (or `chains`)."""
  out = []
  for n, it in enumerate(items):
    chain = chains[n] if chains is not None else judge_task.chain_for(
        _problem(it["problem"]), it["steps"], tool=tool, style=style)
    ex = training.chain_example(judge, it["prompt"], it["steps"], chain, max_length,
                                template=template_of(style),
                                verdict_weights=tuple(verdict_weights))
    if ex is not None:
      out.append(ex)
  if len(out) < len(items):
    log.warning("chain examples: %d of %d do not fit in %d positions and are left out",
                len(items) - len(out), len(items), max_length)
  return out


def _save(judge, path):
  rewardlab.save_pretrained(path, judge.config, judge.params)
  judge.tokenizer.save(path)


def _load(path) -> JudgeModel:
  return JudgeModel.load(path)


def _sft(cfg, workdir, name, judge, examples, steps):
  out = os.path.join(workdir, name, "verifier")
  if os.path.exists(os.path.join(out, "config.json")):
    return _load(out)
  t0 = time.time()
  s = cfg.sft
  trained = training.sft(judge, examples, workdir=os.path.join(workdir, name), steps=steps,
                         batch_size=s.batch_size, learning_rate=s.learning_rate,
                         warmup_steps=max(1, steps // 10), seed=cfg.seed, progress=cfg.progress)
  _save(trained, out)
  _json(os.path.join(workdir, name, "train.json"),
        {"examples": len(examples), "steps": steps, "seconds": time.time() - t0})
  return trained


def train_verifiers(cfg, workdir, data) -> dict[str, JudgeModel]:
  init = initial_judge(cfg.policy_dir, seed=cfg.seed, max_positions=cfg.verifier.max_positions)
  train = data["train"]
  few = train[:cfg.few.labels]
  more = train[cfg.few.labels:cfg.few.labels + cfg.few.filter_labels]
  out = {"untrained": init}
  length = cfg.verifier.max_positions
  style, weight = cfg.verifier.style, tuple(cfg.sft.verdict_weights)
  template = template_of(style)
  examples = lambda items, **kw: chain_examples(init, items, length, style=style,
                                                verdict_weights=weight, **kw)
  out["sft"] = _sft(cfg, workdir, "sft", init, examples(train), cfg.sft.steps)
  out["sft_few"] = _sft(cfg, workdir, "sft_few", init, examples(few), cfg.few.steps)
  # ThinkPRM: self-generated chains on labelled solutions, kept when their verdicts agree
  filtered_path = os.path.join(workdir, "filtered_chains.json")
  if not os.path.exists(filtered_path):
    res = verify_steps(out["sft_few"], [i["prompt"] for i in more], [i["steps"] for i in more],
                       template, num_samples=cfg.few.filter_samples,
                       max_new_tokens=cfg.eval.max_new_tokens, temperature=1.0,
                       rng=jax.random.key(cfg.seed + 3), batch_size=64)
    kept = []
    for it, chains in zip(more, res.chains):
      for chain in chains:
        if training.chain_reward(chain, len(it["steps"]), it["label"]):
          kept.append({"item": it, "chain": chain})
          break
    _json(filtered_path, {"kept": kept, "labelled": len(more), "samples": cfg.few.filter_samples})
  kept = _json(filtered_path)["kept"]
  items = few + [k["item"] for k in kept]
  chains = [judge_task.chain_for(_problem(i["problem"]), i["steps"], style=style) for i in few] + \
      [k["chain"] for k in kept]
  out["filtered"] = _sft(cfg, workdir, "filtered", init, examples(items, chains=chains),
                         cfg.few.filter_steps)
  grpo_dir = os.path.join(workdir, "grpo", "verifier")
  if os.path.exists(os.path.join(grpo_dir, "config.json")):
    out["grpo"] = _load(grpo_dir)
  else:
    g = cfg.grpo
    t0 = time.time()
    out["grpo"], history = training.grpo(
        out["sft_few"], [(i["prompt"], i["steps"], i["label"]) for i in few + more],
        workdir=os.path.join(workdir, "grpo"), steps=g.steps, batch_size=g.batch_size,
        group_size=g.group_size, learning_rate=g.learning_rate,
        max_new_tokens=cfg.eval.max_new_tokens, max_length=cfg.verifier.max_positions,
        seed=cfg.seed, template=template, reward=g.reward)
    _save(out["grpo"], grpo_dir)
    _json(os.path.join(workdir, "grpo", "train.json"),
          {"steps": g.steps, "seconds": time.time() - t0,
           "reward_first": history[0]["reward"], "reward_last": history[-1]["reward"]})
  if cfg.tool.enabled:
    out["tool"] = _sft(cfg, workdir, "tool", init, examples(train, tool=True), cfg.sft.steps)
  return out


# ----------------------------------------------------------------------------- evaluation

def _bon_curve(scores, data, n_max):
  """acc[n-1] over problems of best-of-n (first n samples), and per-problem outcomes."""
  evals = data["eval"]
  num = len(evals) // n_max
  outcomes = np.zeros((n_max, num))
  for p in range(num):
    rows = evals[p * n_max:(p + 1) * n_max]
    for n in range(1, n_max + 1):
      pick = selection.best_of_n(np.asarray(scores[p * n_max:p * n_max + n]))
      outcomes[n - 1, p] = float(rows[pick.index]["correct"])
  return outcomes


def _step_metrics(probs, data, cfg):
  evals = data["eval"]
  keep = [i for i, e in enumerate(evals) if e["complete"] and e["steps"]]
  report = judge_step_report([probs[i] for i in keep], [evals[i]["label"] for i in keep],
                             threshold=0.5, n_bins=cfg.eval.n_bins)
  preds = [int(np.flatnonzero(np.asarray(probs[i]) < 0.5)[0]) if np.any(np.asarray(probs[i]) < 0.5)
           else -1 for i in keep]
  right = np.array([p == evals[i]["label"] for p, i in zip(preds, keep)], np.float64)
  return report, right


def _scores(probs, how):
  return [selection.aggregate_step_scores(np.nan_to_num(np.asarray(p), nan=0.0), how)
          if len(p) else 0.0 for p in probs]


def evaluate_verifier(cfg, workdir, name, judge, data, *, num_samples=1, temperature=0.0,
                      tool=False):
  path = os.path.join(workdir, "eval", f"{name}.json")
  if os.path.exists(path):
    return _json(path)
  evals = data["eval"]
  t0 = time.time()
  res = verify_steps(judge, [e["prompt"] for e in evals], [e["steps"] or ["A:"] for e in evals],
                     template_of(cfg.verifier.style), num_samples=num_samples,
                     max_new_tokens=cfg.eval.max_new_tokens + (64 if tool else 0),
                     temperature=temperature, rng=jax.random.key(cfg.seed + 11), tool=tool,
                     batch_size=64)
  samples = [s.tolist() for s in res.samples]
  out = {"name": name, "num_samples": num_samples, "seconds": time.time() - t0,
         "tokens_read": res.usage.tokens_read, "tokens_generated": res.usage.tokens_generated,
         "unparsed_chains": res.unparsed,
         "arithmetic_slips": [sum(judge_task.value_errors(_problem(e["problem"]), c,
                                                          cfg.verifier.style) for c in chains)
                              for e, chains in zip(evals, res.chains)],
         "samples": samples, "example_chains": [c[0] for c in res.chains[:8]]}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return _json(path, out)


def evaluate_prm(cfg, workdir, name, model, data):
  """Step probabilities of a PRM (`(config, params, tokenizer)` of `rewardlab.models.reward`)
  on the held-out solutions, in the verifiers' raw format."""
  from rewardlab.models import reward

  path = os.path.join(workdir, "eval", f"{name}.json")
  if os.path.exists(path):
    return _json(path)
  t0 = time.time()
  scorer = reward.ProcessScorer(*model, batch_size=64)
  evals = data["eval"]
  probs = scorer.score_steps([e["prompt"] for e in evals], [e["steps"] or ["A:"] for e in evals])
  out = {"name": name, "num_samples": 1, "seconds": time.time() - t0,
         "tokens_read": scorer.tokens_scored, "tokens_generated": 0, "unparsed_chains": 0,
         "samples": [[p.tolist()] for p in probs]}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return _json(path, out)


def policy_likelihood_prm(policy_dir: str, *, beta: float = 1.0, bias: float = 2.0):
  """The GenARM-form PRM at its start, before any training: step k's logit is `beta` x the
  policy's log-likelihood of the solution up to step k plus `bias` (no labels used)."""
  from rewardlab.models import reward

  config, params = rewardlab.load_pretrained(policy_dir)
  rm = reward.RewardModelConfig(backbone=config, head="process", process_form="genarm",
                                beta=beta, step_bias=bias)
  head = {"bias": np.array([bias], np.float32)}
  return rm, {"backbone": params, "head": head}, load_tokenizer(policy_dir)


def _eval_problems(data, n_max):
  keys = [e["problem"] for e in data["eval"][::n_max]]
  return [arithmetic.parse_prompt(k) for k in keys]


def beam_search_rows(cfg, workdir, scorers: dict, data) -> dict:
  """Beam search (`search.methods` "beam_search", n beams of width `beam.width`) on the
  first `beam.problems` held-out problems with each process scorer in `scorers` (name ->
  a `StepJudgeScorer` or a PRM's `ProcessScorer`); per scorer: accuracy, the verifier's
  tokens (read + generated, the search budget's `tokens_scored`) and the policy's
  generated tokens per problem, and the per-problem outcomes. One file per scorer in
  `workdir/eval/beam_<name>.json` (reused on a rerun)."""
  from rewardlab.search import methods
  from rewardlab.search.policy import LMPolicy
  from rewardlab.tasks import ArithmeticTask

  b = cfg.beam
  problems = _eval_problems(data, cfg.eval.n_max)[:b.problems]
  policy, task, out = None, ArithmeticTask(), {}
  for name, scorer in scorers.items():
    path = os.path.join(workdir, "eval", f"beam_{name}.json")
    if os.path.exists(path):
      out[name] = _json(path)
      continue
    if policy is None:
      policy = LMPolicy(*_policy(cfg), step_separator=arithmetic.STEP_SEPARATOR)
    t0 = time.time()
    correct, scored, generated = [], [], []
    for i, problem in enumerate(problems):
      res = methods.run_method("beam_search", task.prompt(problem), policy=policy,
                               scorers=methods.Scorers(process=scorer), task=task, n=b.n,
                               rng=np.random.default_rng(cfg.seed + 100 + i), width=b.width,
                               temperature=1.0, max_new_tokens=56)
      correct.append(float(task.is_correct(res.text, problem)))
      scored.append(res.budget.tokens_scored)
      generated.append(res.budget.tokens_generated)
    out[name] = _json(path, {
        "name": name, "n": b.n, "width": b.width, "problems": len(problems),
        "accuracy": float(np.mean(correct)), "correct": correct,
        "verifier_tokens_per_problem": float(np.mean(scored)),
        "policy_tokens_per_problem": float(np.mean(generated)), "seconds": time.time() - t0})
  return out


def _summarize(raw, data, cfg, k=None):
  rows = [np.asarray(s, np.float64) for s in raw["samples"]]
  if k is not None:
    rows = [r[:k] for r in rows]
  with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
    __import__("warnings").simplefilter("ignore", RuntimeWarning)
    probs = [np.nanmean(r, axis=0) if r.size else np.zeros(0) for r in rows]
  report, right = _step_metrics(probs, data, cfg)
  bon = _bon_curve(_scores(probs, cfg.eval.aggregation), data, cfg.eval.n_max)
  n_sol = len(rows)
  k_used = k or raw["num_samples"]
  frac = k_used / raw["num_samples"]
  return {"processbench_f1": report["processbench_f1"], "splits": report["splits"],
          "calibration": {x: report.get("calibration", {}).get(x) for x in ("ece", "brier", "auroc")},
          "unjudged_steps": report["unjudged_steps"], "bon_accuracy": bon.mean(axis=1).tolist(),
          "tokens_per_solution": (raw["tokens_read"] + raw["tokens_generated"]) * frac / n_sol,
          "generated_tokens_per_solution": raw["tokens_generated"] * frac / n_sol,
          "unparsed_chains": raw["unparsed_chains"]}, right, bon


def claims(per_problem, per_solution, slips, names, cfg, beam=None) -> list[dict]:
  n = cfg.eval.n_max - 1
  out = []
  beam = beam or {}

  def claim(text, a, b, metric, xa, xb, why):
    if xa is None or xb is None:
      out.append({"claim": text, "verdict": "not run", "why": why})
      return
    c = compare.paired_difference(xa, xb)
    out.append({"claim": text, "a": a, "b": b, "metric": metric, **c,
                "verdict": compare.verdict(c)})

  prm = next((p for p in names if p.startswith("prm") and p != "prm_likelihood_untrained"), None)
  claim("a generative verifier trained on far fewer labels matches or beats a discriminative "
        "PRM (ThinkPRM)", "filtered", prm, f"best-of-{n + 1} accuracy per problem",
        per_problem["filtered"][n], per_problem[prm][n] if prm else None,
        "no PRM directory given (prm_dirs)")
  claim("the same (ThinkPRM), on finding the first wrong step", "filtered", prm,
        "first wrong step found per solution", per_solution["filtered"],
        per_solution[prm] if prm else None, "no PRM directory given (prm_dirs)")
  claim("the few-label verifier beats the untrained GenARM-form PRM (the policy's likelihood)",
        "filtered", "prm_likelihood_untrained", f"best-of-{n + 1} accuracy per problem",
        per_problem["filtered"][n], per_problem.get("prm_likelihood_untrained", [None] * (n + 1))[n],
        "policy_likelihood_prm is off")
  claim("the few-label verifier against the verifier trained on every label", "filtered", "sft",
        f"best-of-{n + 1} accuracy per problem", per_problem["filtered"][n], per_problem["sft"][n], "")
  kname = f"{cfg.compute_curve.verifier}@K{cfg.compute_curve.max_k}"
  claim("more judge samples improve selection (DeepSeek-GRM, J1)", kname,
        f"{cfg.compute_curve.verifier}@K1", f"best-of-{n + 1} accuracy per problem",
        per_problem.get(kname, [None] * (n + 1))[n],
        per_problem.get(f"{cfg.compute_curve.verifier}@K1", [None] * (n + 1))[n], "curve not run")
  claim("RL-trained judges beat SFT-only judges (J1, RM-R1)", "grpo", "sft_few",
        "first wrong step found per solution", per_solution["grpo"], per_solution["sft_few"], "")
  if "tool" in names:
    claim("a calculator tool removes the verifier's arithmetic errors (Themis): slips of sft "
          "minus slips of tool per solution", "sft", "tool", "arithmetic slips per solution",
          np.asarray(slips["sft"], np.float64), np.asarray(slips["tool"], np.float64), "")
    claim("the tool verifier finds first wrong steps better", "tool", "sft",
          "first wrong step found per solution", per_solution["tool"], per_solution["sft"], "")
  prm_beam = next((p for p in beam if p.startswith("prm") and p != "prm_likelihood_untrained"),
                  next((p for p in beam if p.startswith("prm")), None))
  for name in [b for b in beam if not b.startswith("prm")]:
    if prm_beam is None:
      break
    ta, tb = beam[name]["verifier_tokens_per_problem"], beam[prm_beam]["verifier_tokens_per_problem"]
    claim(f"beam search with the {name} verifier matches or beats beam search with {prm_beam} "
          f"(verifier tokens per problem {ta:.0f} vs {tb:.0f})", name, prm_beam,
          "beam-search accuracy per problem", np.asarray(beam[name]["correct"]),
          np.asarray(beam[prm_beam]["correct"]), "")
  for name in ("untrained", "sft_few"):
    claim(f"best-of-N with a noisy judge ({name}) still improves from N={(n + 1) // 2} to N={n + 1} "
          "(Demystifying LLM-as-a-Judge: it may stop)", f"{name}@N{n + 1}",
          f"{name}@N{(n + 1) // 2}", "accuracy per problem", per_problem[name][n],
          per_problem[name][(n + 1) // 2 - 1], "")
  return out


def run(cfg, workdir: str) -> dict:
  """The whole experiment; returns the results (also `workdir/verifiers.json`)."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  data = make_data(cfg, workdir)
  log.info("data: %d training solutions, %d held-out", len(data["train"]), len(data["eval"]))
  verifiers = train_verifiers(cfg, workdir, data)
  raws = {}
  for name, judge in verifiers.items():
    raws[name] = evaluate_verifier(cfg, workdir, name, judge, data, tool=name == "tool")
  from rewardlab.judges.scorers import StepJudgeScorer
  from rewardlab.models import reward

  prms = {f"prm_{name}": reward.load_reward_model(path) for name, path in dict(cfg.prm_dirs).items()}
  if cfg.policy_likelihood_prm:
    prms["prm_likelihood_untrained"] = policy_likelihood_prm(cfg.policy_dir)
  for name, model in prms.items():
    raws[name] = evaluate_prm(cfg, workdir, name, model, data)
  beam_scorers = {}
  for name in cfg.beam.scorers:
    if name in verifiers:
      tool = name == "tool"
      beam_scorers[name] = StepJudgeScorer(
          verifiers[name], template_of(cfg.verifier.style), tool=tool, seed=cfg.seed,
          max_new_tokens=cfg.eval.max_new_tokens + (64 if tool else 0), batch_size=64)
    elif name in prms:
      beam_scorers[name] = reward.ProcessScorer(*prms[name], batch_size=64)
  beam = beam_search_rows(cfg, workdir, beam_scorers, data) if cfg.beam.problems > 0 else {}
  results, per_problem, per_solution, slips = {}, {}, {}, {}
  for name, raw in raws.items():
    results[name], per_solution[name], bon = _summarize(raw, data, cfg)
    per_problem[name] = bon
    slips[name] = raw.get("arithmetic_slips")
  cc = cfg.compute_curve
  curve = {}
  if cc.max_k > 0:
    raw = evaluate_verifier(cfg, workdir, f"{cc.verifier}_k{cc.max_k}", verifiers[cc.verifier],
                            data, num_samples=cc.max_k, temperature=1.0)
    k = 1
    while k <= cc.max_k:
      curve[k], _, bon = _summarize(raw, data, cfg, k=k)
      per_problem[f"{cc.verifier}@K{k}"] = bon
      k *= 2
  out = {"verifiers": results, "compute_curve": {str(k): v for k, v in curve.items()},
         "beam_search": {n: {k: v for k, v in r.items() if k != "correct"} for n, r in beam.items()},
         "train_data": data.get("train_stats", {}),
         "compute_curve_verifier": cc.verifier,
         "train": {n: _json(os.path.join(workdir, n, "train.json"))
                   for n in verifiers if os.path.exists(os.path.join(workdir, n, "train.json"))},
         "filtered_kept": len(_json(os.path.join(workdir, "filtered_chains.json"))["kept"]),
         "labels_used": {"sft": len(data["train"]), "tool": len(data["train"]),
                         "sft_few": cfg.few.labels,
                         "filtered": cfg.few.labels + cfg.few.filter_labels,
                         "grpo": cfg.few.labels + cfg.few.filter_labels, "untrained": 0},
         "num_eval_problems": len(data["eval"]) // cfg.eval.n_max,
         "policy_pass_at_1": float(np.mean([e["correct"] for e in data["eval"]])),
         "claims": claims(per_problem, per_solution, slips, list(raws), cfg, beam),
         "example_chains": {n: r.get("example_chains", [])[:3] for n, r in raws.items()},
         "seconds_this_invocation": time.time() - t0}
  _json(os.path.join(workdir, "verifiers.json"), out)
  plot(out, os.path.join(workdir, "verifiers.png"))
  return out


def plot(out: dict, path: str) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
  for name, r in out["verifiers"].items():
    acc = r["bon_accuracy"]
    a.plot(range(1, len(acc) + 1), acc, marker="o", label=f"{name} (F1 {r['processbench_f1']:.2f})")
  a.set_xlabel("N (solutions per problem)")
  a.set_ylabel("best-of-N accuracy")
  a.set_title("Best-of-N with each verifier")
  a.legend(fontsize=7)
  curve = out["compute_curve"]
  if curve:
    ks = sorted(int(k) for k in curve)
    n = len(next(iter(curve.values()))["bon_accuracy"])
    b.plot(ks, [curve[str(k)]["bon_accuracy"][-1] for k in ks], marker="o",
           label=f"best-of-{n} accuracy")
    b.plot(ks, [curve[str(k)]["processbench_f1"] for k in ks], marker="s", label="step-error F1")
    b.set_xscale("log", base=2)
    b.set_xlabel(f"K sampled verifications per solution ({out['compute_curve_verifier']})")
    b.set_title("Judge compute")
    b.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
