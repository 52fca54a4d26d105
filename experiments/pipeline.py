"""The end-to-end experiment: SFT policy -> rollouts -> step labels -> reward models ->
test-time scaling -> GRPO -> report. The `task` section (`rewardlab.tasks.source`) sets the
problems of every stage: the synthetic arithmetic task by default (`task.num_ops`,
`task.operand_max`), or math problem files (`task.name=math`, `task.format`,
`task.train_files` / `task.eval_files`) with a given Hugging Face policy (`policy_dir`, its
own tokenizer and chat template), which replaces the SFT stage.

Every stage writes into `<workdir>/<stage>/` and is skipped when done; an interrupted
stage resumes (see `rewardlab.stages`). The report is `<workdir>/report/report.md`
(with report.json and the PNG plots beside it).

  python experiments/pipeline.py --workdir runs/demo
  python experiments/pipeline.py --workdir runs/scratch --from_scratch  # also train the SFT policy
  python experiments/pipeline.py --workdir runs/demo --only rollouts   # run only these (others done)
  python experiments/pipeline.py --workdir runs/gsm8k --config.policy_dir=DIR \
      --config.task.name=math --config.task.format=gsm8k \
      --config.task.train_files=train.jsonl --config.task.eval_files=test.jsonl
  rm -r runs/demo/tts && python experiments/pipeline.py --workdir runs/demo  # redo one stage
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import shutil
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import pipeline_report  # noqa: E402
from experiments.configs import label_steps as label_steps_config  # noqa: E402
from experiments.configs import rl_grpo  # noqa: E402
from experiments.configs import rm_bt  # noqa: E402
from experiments.configs import sft as sft_config  # noqa: E402
from experiments.configs import tts as tts_config  # noqa: E402
from rewardlab import assets  # noqa: E402
from rewardlab import stages as stages_lib  # noqa: E402
from rewardlab.data import tokenizers  # noqa: E402
from rewardlab.models import hf as hf_lib  # noqa: E402
from rewardlab.sampling import score  # noqa: E402
from rewardlab.search import completer as completer_lib  # noqa: E402
from rewardlab.rl import run as rl_run  # noqa: E402
from rewardlab.tasks import arithmetic, problem_sets, rm_data, source  # noqa: E402
from rewardlab.train import config_checks, console, label_steps, reward, sft, tts  # noqa: E402,E501
from rewardlab.train import metrics as metrics_lib  # noqa: E402

log = std_logging.getLogger(__name__)

STAGES = ("sft", "rollouts", "labels", "rm_orm", "rm_prm", "rm_genarm", "tts", "rl", "report")


# ----------------------------------------------------------------------------- helpers


def _repo_path(path: str) -> str:
  return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(REPO, path)


def _set(c, **fields):
  """Set dotted fields of an (unlocked) ConfigDict; returns it locked."""
  for key, value in fields.items():
    node, *path = key.split("__")
    target = c[node] if path else c
    for part in path[:-1]:
      target = target[part]
    target[path[-1] if path else node] = value
  return c.lock()


def _problems(num: int, seed: int, cfg, split: str) -> list[arithmetic.Problem]:
  return source.build(cfg.task).problems(split, num, seed)


def _task_fields(cfg) -> dict:
  """The pipeline's task section as `_set` fields of a stage's config (`task__name=...`)."""
  return {f"task__{k}": v for k, v in cfg.task.items()}


def _is_arithmetic(cfg) -> bool:
  return cfg.task.name == "arithmetic"


def _source_config(cfg) -> dict:
  """What every stage records of its problems and policy besides its own section: the task
  fields that differ from the default section, and the given policy directory. Empty for the
  synthetic task with the SFT stage's policy, so those runs record what they always did."""
  default, plain = source.config(), lambda v: list(v) if isinstance(v, tuple) else v
  task = {k: v for k, v in cfg.task.items() if plain(v) != plain(default[k])}
  return ({"task": task} if task else {}) | (
      {"policy_dir": os.path.abspath(cfg.policy_dir)} if cfg.policy_dir else {})


def _stage_config(cfg, section: dict) -> dict:
  return {**section, **_source_config(cfg)}


def _policy_source(cfg, policy_dir: str):
  """The policy's tokenizer and the task source with it (chat-wrapped prompts when the
  tokenizer has a template and `task.chat_template` is on)."""
  tokenizer = tokenizers.load_tokenizer(policy_dir)
  return tokenizer, source.build(cfg.task, tokenizer)


def _prompt_limit(config, tokenizer, src, problems, new_tokens: int) -> int:
  """Tokens of the longest prompt of `problems`; an error when a prompt and `new_tokens`
  do not fit the policy's positions."""
  longest = max(len(tokenizer.encode(src.prompt(p), add_bos=True)) for p in problems)
  if longest + new_tokens > config.max_position_embeddings:
    raise ValueError(f"a prompt of {longest} tokens + {new_tokens} new tokens exceeds the "
                     f"policy's {config.max_position_embeddings} positions; lower "
                     "rollouts.max_new_tokens or use shorter prompts (task.template, "
                     "task.chat_template)")
  return longest


def _true_step_labels(problem: arithmetic.Problem, text: str) -> dict | None:
  """A stepwise record of one sampled solution with exact labels (1 before the first wrong
  step, 0 from it on), in the step convention of the label generators."""
  steps = completer_lib.solution_steps(problem.prompt + text)
  if not steps:
    return None
  wrong = arithmetic.first_wrong_step(steps, problem)
  k = len(steps) if wrong < 0 else min(wrong, len(steps))
  return {"prompt": problem.prompt, "completions": steps,
          "labels": [1] * k + [0] * (len(steps) - k), "problem": problem.key,
          "first_wrong_step": wrong, "error_kind": arithmetic.error_kind(steps, problem),
          "correct": arithmetic.is_correct(problem.prompt + text, problem)}


def _likelihood_accuracy(config, params, tokenizer, pairs: list[dict]) -> float | None:
  """Pairwise accuracy of the policy's own log-likelihood `log π(y | x)` as a verifier: the
  untrained baseline every reward model of the pipeline should beat."""
  if not pairs:
    return None
  prompts = [tokenizer.encode(p["prompt"], add_bos=True) for p in pairs]
  encode = lambda key: [tokenizer.encode(p[key]) for p in pairs]
  chosen = score.sequence_logprob(config, params, prompts, encode("chosen"))
  rejected = score.sequence_logprob(config, params, prompts, encode("rejected"))
  return float(np.mean(chosen > rejected))


# ----------------------------------------------------------------------------- stages


def _given_policy(cfg):
  """The `sft` stage of a run on a given policy (`policy_dir`): no training, no copy; the
  summary points at the directory and records the digests of its weights."""
  path = os.path.abspath(cfg.policy_dir)

  def fn(stage_dir, inputs):
    del stage_dir, inputs
    weights = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    return {"policy_dir": path, "source": cfg.policy_dir, "given": True,
            "sha256": {f: assets.sha256(os.path.join(path, f)) for f in weights}}
  return stages_lib.Stage("sft", fn, {"policy_dir": path})


def stage_sft(cfg):
  if cfg.policy_dir:
    return _given_policy(cfg)

  def fn(stage_dir, inputs):
    del inputs
    policy_dir = os.path.join(stage_dir, "policy")
    if cfg.sft.from_scratch:
      c = _set(sft_config.get_config().unlock(), seed=cfg.seed, progress=cfg.progress,
               train__steps=cfg.sft.steps)
      results = sft.run(c, stage_dir)
      return {"policy_dir": policy_dir, "source": "trained here (experiments/configs/sft.py)",
              **{k: v for k, v in results.items() if k != "policy_dir"}}
    src = _repo_path(cfg.sft.shipped_dir)
    if not os.path.isdir(src):
      raise FileNotFoundError(f"sft.shipped_dir {src} is missing; run with --from_scratch")
    shutil.copytree(src, policy_dir, dirs_exist_ok=True)
    shipped = {}
    if os.path.exists(os.path.join(src, "sft_results.json")):  # written by experiments/sft.py
      with open(os.path.join(src, "sft_results.json")) as f:
        shipped = json.load(f)
    return {"policy_dir": policy_dir, "source": cfg.sft.shipped_dir,
            "sha256": assets.sha256(os.path.join(policy_dir, "model.safetensors")),
            **{k: v for k, v in shipped.items() if k != "policy_dir"}}
  return stages_lib.Stage("sft", fn, {
      "from_scratch": cfg.sft.from_scratch,
      "steps": cfg.sft.steps if cfg.sft.from_scratch else None,
      "shipped_dir": None if cfg.sft.from_scratch else cfg.sft.shipped_dir})


def _math_step_labels(view, text: str) -> dict | None:
  """A stepwise record of one sampled solution of a file problem with exact labels, when the
  problem carries its per-step results (`intermediates`); None otherwise or without steps."""
  steps = view.steps(text)
  wrong = label_steps.true_first_wrong_step(view, steps) if steps else None
  if wrong is None:
    return None
  k = len(steps) if wrong < 0 else min(wrong, len(steps))
  return {"prompt": view.prompt, "completions": steps, "labels": [1] * k + [0] * (len(steps) - k),
          "problem": view.key, "first_wrong_step": wrong, "correct": view.is_correct(text)}


def stage_rollouts(cfg):
  """Samples of the policy on train and held-out problems; (right, wrong) pairs from them,
  and the held-out samples with their exact step labels (the PRM's test set) where the task
  gives them (arithmetic; math files with `intermediates`)."""
  r = cfg.rollouts

  def fn(stage_dir, inputs):
    config, params, tokenizer = sft.load_policy(inputs["sft"]["policy_dir"])
    src = None if _is_arithmetic(cfg) else source.build(cfg.task, tokenizer)
    summary = {}
    for split, num, seed in (("train", r.num_train_problems, cfg.seed + 11),
                             ("eval", r.num_eval_problems, cfg.seed + 12)):
      if src is None:
        problems, views = _problems(num, seed, cfg, "train" if split == "train" else "test"), None
        prompts = [p.prompt for p in problems]
      else:
        problems = src.problems("train" if split == "train" else "test", num, seed)
        views = completer_lib.step_views(problems, src.step_separator, task=src.task,
                                         prompts=[src.prompt(p) for p in problems])
        prompts = [v.prompt for v in views]
        _prompt_limit(config, tokenizer, src, problems, r.max_new_tokens)
      start = time.perf_counter()
      samples = rm_data.sample_completions(config, params, tokenizer, problems,
                                           num_samples=r.samples, temperature=r.temperature,
                                           max_new_tokens=r.max_new_tokens, seed=seed,
                                           batch_size=r.batch_size,
                                           prompts=None if src is None else prompts)
      seconds = time.perf_counter() - start
      rows, pairs, steps = [], [], []
      for i, (p, texts) in enumerate(zip(problems, samples)):
        if src is None:
          key, correct = p.key, [arithmetic.is_correct(p.prompt + t, p) for t in texts]
        else:
          key, correct = views[i].key, [views[i].is_correct(t) for t in texts]
        rows.append({"problem": key, "prompt": prompts[i], "completions": texts,
                     "correct": correct})
        right = [t for t, c in zip(texts, correct) if c]
        wrong = [t for t, c in zip(texts, correct) if not c]
        pairs += [{"prompt": prompts[i], "chosen": a, "rejected": b, "problem": key}
                  for a, b in list(zip(right, wrong))[:r.pairs_per_problem]]
        if split == "eval":
          label = ((lambda t: _true_step_labels(p, t)) if src is None else
                   (lambda t: _math_step_labels(views[i], t)))
          steps += [rec for t in texts if (rec := label(t)) is not None]
      metrics_lib.write_jsonl(os.path.join(stage_dir, f"rollouts_{split}.jsonl"), rows)
      metrics_lib.write_jsonl(os.path.join(stage_dir, f"preference_{split}.jsonl"), pairs)
      acc = [c for row in rows for c in row["correct"]]
      summary[split] = {
          "problems": len(problems), "samples": len(acc), "seconds": seconds,
          "samples_per_s": len(acc) / seconds, "sample_accuracy": sum(acc) / len(acc),
          f"pass@{r.samples}": sum(any(row["correct"]) for row in rows) / len(rows),
          "pairs": len(pairs)}
      if split == "eval":
        summary["policy_likelihood_pairwise_accuracy"] = _likelihood_accuracy(
            config, params, tokenizer, pairs)
        metrics_lib.write_jsonl(os.path.join(stage_dir, "steps_eval.jsonl"), steps)
        summary[split]["step_records"] = len(steps)
        summary[split]["solutions_with_wrong_step"] = sum(s["first_wrong_step"] >= 0
                                                          for s in steps)
        if src is None:
          summary[split]["error_kinds"] = {
              kind: sum(s["error_kind"] == kind for s in steps) for kind in arithmetic.ERROR_KINDS}
    summary["files"] = {k: os.path.join(stage_dir, f) for k, f in (
        ("preference_train", "preference_train.jsonl"), ("preference_eval", "preference_eval.jsonl"),
        ("steps_eval", "steps_eval.jsonl"))}
    log.info("rollouts: %s", json.dumps(summary))
    return summary
  return stages_lib.Stage("rollouts", fn, _stage_config(cfg, dict(r)))


def stage_labels(cfg):
  lab = cfg.labels
  if lab.target not in ("hard", "soft"):
    raise ValueError(f"labels.target must be 'hard' or 'soft', got {lab.target!r}")
  unknown = sorted(set(lab.train_on) - {"mc", "omegaprm"})
  if unknown or not lab.train_on:
    raise ValueError(f"labels.train_on: unknown {unknown}; choose from ('mc', 'omegaprm')")

  def fn(stage_dir, inputs):
    c = label_steps_config.get_config().unlock()
    levels = lambda top, base: tuple(sorted({v for v in base if v <= top} | {top}))
    c = _set(c, seed=cfg.seed, progress=cfg.progress, compilation_cache_dir="",
             completer="policy", policy_dir=inputs["sft"]["policy_dir"],
             mesh_shape=cfg.mesh_shape,
             methods=("mc", "omegaprm"), num_solutions=lab.num_solutions,
             data__num_problems=lab.num_problems, data__seed=cfg.seed + 13, **_task_fields(cfg),
             mc__num_completions=lab.mc_completions,
             mc__quality_levels=levels(lab.mc_completions, (1, 2, 4, 8, 16)),
             omegaprm__rollouts_per_state=lab.omegaprm_rollouts_per_state,
             omegaprm__rollout_budget=lab.omegaprm_budget,
             omegaprm__quality_levels=levels(lab.omegaprm_budget, (8, 16, 32, 48, 64, 96, 128)),
             **({} if _is_arithmetic(cfg) else
                {"sampling__max_new_tokens": cfg.rollouts.max_new_tokens}))
    summary = label_steps.run(c, stage_dir)
    files = {m: os.path.join(stage_dir, f"labels_{m}.jsonl") for m in ("mc", "omegaprm")}
    # The PRM's training file: the chosen label sets with Math-Shepherd's hard estimate
    # (a step is good iff some completion from it reached the answer) or the soft one.
    train_rows = []
    for method in lab.train_on:
      for row in metrics_lib.read_jsonl(files[method]):  # a bad line names file and line
        if lab.target == "hard":
          row["labels"] = [float(y > 0.0) for y in row["labels"]]
        train_rows.append(row)
    held_out = {}
    if not inputs["rollouts"]["eval"]["step_records"]:
      # No exact step labels of held-out samples (math files without per-step results): the
      # PRM is tested on the label records of the last quarter of the labelled problems,
      # which it does not train on.
      names = list(dict.fromkeys(row["problem"] for row in train_rows))
      test = set(names[len(names) - max(1, len(names) // 4):]) if len(names) > 1 else set()
      eval_rows = [row for row in train_rows if row["problem"] in test]
      train_rows = [row for row in train_rows if row["problem"] not in test]
      if not eval_rows:
        raise ValueError(f"labels: {len(names)} labelled problem(s) with steps; the PRM needs "
                         "two or more to hold some out (no exact held-out step labels for "
                         "these problems); raise labels.num_problems")
      files["prm_eval"] = os.path.join(stage_dir, "prm_eval.jsonl")
      metrics_lib.write_jsonl(files["prm_eval"], eval_rows)
      held_out = {"prm_eval_records": len(eval_rows), "prm_eval_problems": len(test)}
    files["prm_train"] = os.path.join(stage_dir, "prm_train.jsonl")
    metrics_lib.write_jsonl(files["prm_train"], train_rows)
    return {"files": files, "summary_file": os.path.join(stage_dir, "summary.json"),
            "prm_train_records": len(train_rows), **held_out,
            **{k: summary[k] for k in ("num_problems", "num_solutions", "solution_accuracy",
                                       "fraction_with_wrong_step", "omegaprm_vs_mc")},
            "methods": {m: {k: v for k, v in s.items() if k != "labels"}
                        for m, s in summary["methods"].items()},
            "throughput": summary["throughput"]}
  return stages_lib.Stage("labels", fn, _stage_config(cfg, dict(lab)))


def _rm_config(cfg, kind: str, policy_dir: str, fmt: str, train, evaluation,
               max_length: int | None = None):
  m = cfg.rm
  c = rm_bt.base_config()
  fields = dict(kind=kind, seed=cfg.seed, progress=cfg.progress, init_from=policy_dir,
                data__source="files", data__format=fmt, data__train_files=",".join(train),
                data__eval_files=",".join(evaluation), data__tokenizer=policy_dir,
                train__steps=m.steps, train__batch_size=m.batch_size,
                train__learning_rate=m.learning_rate, train__warmup_steps=m.warmup_steps,
                train__log_every=max(1, m.steps // 6), train__checkpoint_every=max(1, m.steps // 3),
                loss__lm_coef=m.lm_coef if kind in ("bt", "prm") else 0.0)
  if max_length is not None:
    fields.update(model__max_length=max_length, data__separator=cfg.task.step_separator)
  if kind == "genarm":
    fields.update(train__learning_rate=m.genarm_learning_rate, loss__beta=m.genarm_beta)
  if kind == "prm":
    fields.update(model__process_form=m.prm_form, model__step_beta=m.prm_beta,
                  model__step_bias=m.prm_bias, train__learning_rate=m.prm_learning_rate,
                  train__head_lr_multiplier=m.prm_head_lr_multiplier)
  return _set(c, **fields)


_RM_OWN_FIELDS = {"genarm": ("genarm_learning_rate", "genarm_beta"),
                  "prm": ("prm_form", "prm_beta", "prm_bias", "prm_learning_rate",
                          "prm_head_lr_multiplier")}


def _rm_stage_config(cfg, kind: str) -> dict:
  """The `cfg.rm` fields a reward-model stage uses: the shared ones and its own, so that
  changing one model's options leaves the other finished stages reusable."""
  others = {f for k, fields in _RM_OWN_FIELDS.items() if k != kind for f in fields}
  return {"kind": kind, **{k: v for k, v in dict(cfg.rm).items() if k not in others}}


def _rm_max_length(cfg, policy_dir: str) -> int | None:
  """Reward-model length for file problems: the longest prompt (of the rollouts' problems)
  plus twice `rollouts.max_new_tokens` (re-tokenized steps may take more tokens than
  sampled), within the policy's positions; None (the config's own 96) for arithmetic."""
  if _is_arithmetic(cfg):
    return None
  tokenizer, src = _policy_source(cfg, policy_dir)
  config = hf_lib.load_hf_config(policy_dir)
  r = cfg.rollouts
  problems = (src.problems("train", r.num_train_problems, 0)
              + src.problems("test", r.num_eval_problems, 0))
  longest = _prompt_limit(config, tokenizer, src, problems, r.max_new_tokens)
  return min(longest + 2 * r.max_new_tokens, config.max_position_embeddings)


def stage_rm(cfg, name: str, kind: str):
  def fn(stage_dir, inputs):
    policy_dir, files = inputs["sft"]["policy_dir"], inputs["rollouts"]["files"]
    if kind == "prm":
      fmt, train = "stepwise", [inputs["labels"]["files"]["prm_train"]]
      evaluation = [inputs["labels"]["files"].get("prm_eval", files["steps_eval"])]
    else:
      fmt, train, evaluation = "preference", [files["preference_train"]], [files["preference_eval"]]
    results = reward.run(_rm_config(cfg, kind, policy_dir, fmt, train, evaluation,
                                    _rm_max_length(cfg, policy_dir)), stage_dir)
    return {"reward_model_dir": results["reward_model_dir"], "kind": kind,
            "train_examples": results["train_examples"], "eval_examples": results["eval_examples"],
            "train_seconds": results["train_seconds_this_run"], "eval": results["eval"],
            "data": results["data"], "train_data": train}
  return stages_lib.Stage(name, fn, _stage_config(cfg, _rm_stage_config(cfg, kind)))


def stage_tts(cfg):
  t = cfg.tts

  def fn(stage_dir, inputs):
    c = _set(tts_config.get_config().unlock(), seed=cfg.seed, progress=cfg.progress,
             policy_dir=inputs["sft"]["policy_dir"], methods=tuple(t.methods), n_max=t.n_max,
             mesh_shape=cfg.mesh_shape,
             problems__num=t.num_problems, problems__seed=t.problem_seed, **_task_fields(cfg),
             reward__outcome_dir=inputs["rm_orm"]["reward_model_dir"],
             reward__process_dir=inputs["rm_prm"]["reward_model_dir"],
             reward__guide_dirs=(inputs["rm_genarm"]["reward_model_dir"],),
             beam__width=t.beam_width, dvts__width=t.beam_width, qalign__beta=t.qalign_beta,
             genarm__temperature=t.genarm_temperature,
             sampling__max_new_tokens=cfg.rollouts.max_new_tokens)
    out = tts.run(c, stage_dir)
    if out["skipped"]:
      raise RuntimeError(f"tts skipped methods: {out['skipped']}")
    return {"results_file": os.path.join(stage_dir, "tts_results.json"), "ns": out["ns"],
            "num_problems": out["num_problems"], "seconds": out["seconds"],
            "accuracy": {k: v["accuracy"] for k, v in out["methods"].items()}}
  return stages_lib.Stage("tts", fn, _stage_config(cfg, dict(t)))


def _rl_file_fields(cfg, policy_dir: str) -> dict:
  """rl config fields for file problems: `rl.eval_num_per_k` held-out problems of
  `task.eval_files`, the rollouts' new tokens, and a prompt width that fits the longest
  prompt of rl's problems. Empty for arithmetic (rl_grpo's own lengths)."""
  if _is_arithmetic(cfg):
    return {}
  r, new_tokens = cfg.rl, cfg.rollouts.max_new_tokens
  c = rl_grpo.get_config()
  tokenizer, src = _policy_source(cfg, policy_dir)
  problems = (problem_sets.rl_train(src, seed=cfg.seed, num=c.data.num_train)
              + problem_sets.held_out(src, seed=cfg.seed, num=r.eval_num_per_k))
  longest = _prompt_limit(hf_lib.load_hf_config(policy_dir), tokenizer, src, problems, new_tokens)
  return {"eval__num_problems": r.eval_num_per_k, "rollout__max_prompt_length": longest,
          "rollout__max_new_tokens": new_tokens, "eval__max_new_tokens": new_tokens}


def stage_rl(cfg):
  r = cfg.rl

  def fn(stage_dir, inputs):
    policy_dir = inputs["sft"]["policy_dir"]
    c = _set(rl_grpo.get_config().unlock(), seed=cfg.seed, progress=cfg.progress,
             policy_dir=policy_dir, **_task_fields(cfg), rollout__batch_size=r.rollout_batch,
             rollout__update_groups=r.update_groups, rollout__group_size=r.group_size,
             optim__learning_rate=r.learning_rate, train__steps=r.steps,
             train__eval_every=r.eval_every, train__checkpoint_every=r.eval_every,
             eval__num_per_k=r.eval_num_per_k, **_rl_file_fields(cfg, policy_dir))
    results = rl_run.run(c, stage_dir)
    problems = problem_sets.held_out(  # the held-out set of rl's own evaluation
        source.build(c.task), seed=c.seed, num_per_k=c.eval.num_per_k, num=c.eval.num_problems)
    names = [p.key if isinstance(p, arithmetic.Problem) else p.question for p in problems]
    start, final = (dict(results[k]) for k in ("start", "final"))
    with open(os.path.join(stage_dir, "pass1_per_problem.json"), "w") as f:
      json.dump({"problems": names, "before": start.pop("greedy_correct"),
                 "after": final.pop("greedy_correct")}, f)
    return {"steps": results["steps"], "seconds": results["rl_seconds_this_run"],
            "start": start, "final": final,
            "policy_dir": results["policy_dir"], "curves": results["curves"],
            "per_problem_file": os.path.join(stage_dir, "pass1_per_problem.json")}
  return stages_lib.Stage("rl", fn, _stage_config(cfg, dict(r)))


def stage_report(cfg, workdir: str):
  def fn(stage_dir, inputs):
    seconds = stages_lib.stage_seconds(workdir, STAGES[:-1])
    return pipeline_report.write(stage_dir, inputs, seconds, cfg.to_dict())
  return stages_lib.Stage("report", fn, {}, always=True)


def build_stages(cfg, workdir: str) -> list[stages_lib.Stage]:
  if cfg.policy_dir and cfg.sft.from_scratch:
    raise ValueError("policy_dir is the policy of every stage; sft.from_scratch (--from_scratch) "
                     "would train another: set one of them")
  if cfg.policy_dir and not os.path.isdir(cfg.policy_dir):
    raise ValueError(f"policy_dir {cfg.policy_dir!r} is not a directory (a local Hugging Face "
                     "directory with its tokenizer)")
  if not _is_arithmetic(cfg) and not cfg.policy_dir:
    raise ValueError(f"task.name={cfg.task.name!r} needs --config.policy_dir (a Hugging Face "
                     "directory with its own tokenizer): the SFT stage's policy reads only the "
                     "synthetic arithmetic task")
  source.build(cfg.task)  # a bad task section fails before any stage runs
  return [stage_sft(cfg), stage_rollouts(cfg), stage_labels(cfg), stage_rm(cfg, "rm_orm", "bt"),
          stage_rm(cfg, "rm_prm", "prm"), stage_rm(cfg, "rm_genarm", "genarm"), stage_tts(cfg),
          stage_rl(cfg), stage_report(cfg, workdir)]


def run(cfg, workdir: str, *, only=(), stop_after: str | None = None) -> dict:
  """Run (or resume) the pipeline; returns the summaries of the done stages.

  Stage summaries record absolute paths, so a run can be resumed from any directory
  (but not moved).
  """
  config_checks.check_values(cfg)  # before anything is written
  workdir = os.path.abspath(workdir)
  if cfg.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return stages_lib.run_stages(build_stages(cfg, workdir), workdir, only=only,
                               stop_after=stop_after)


# ----------------------------------------------------------------------------- command line

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(REPO, "experiments/configs/pipeline.py"), "Pipeline config file.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory (resumes if present).")
_FROM_SCRATCH = flags.DEFINE_bool("from_scratch", False,
                                  "Train the SFT policy here instead of copying the shipped one.")
_ONLY = flags.DEFINE_list("only", [], f"Run only these stages (others must be done): {STAGES}.")
_STOP_AFTER = flags.DEFINE_enum("stop_after", None, STAGES, "Stop after this stage.")


def main(argv):
  del argv
  # Stage progress and summaries at INFO; the libraries' own chatter (orbax) only with
  # --verbosity=0.
  console.setup_logging()
  cfg = _CONFIG.value
  if _FROM_SCRATCH.value:
    cfg = _set(cfg.unlock(), sft__from_scratch=True)
  start = time.perf_counter()
  done = run(cfg, _WORKDIR.value, only=tuple(_ONLY.value), stop_after=_STOP_AFTER.value)
  print(f"pipeline: {len(done)}/{len(STAGES)} stages done, {time.perf_counter() - start:.0f} s "
        "this run")
  if "report" in done:
    print(f"report: {os.path.relpath(done['report']['report_md'])}")


if __name__ == "__main__":
  app.run(main)
