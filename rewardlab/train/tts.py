"""Test-time scaling experiment: accuracy against N and against tokens, per method.

`run(cfg, workdir)` loads a policy (`sft.load_policy`: an SFT policy directory or any
local Hugging Face model directory with its tokenizer), the reward models that are
configured (or exact oracle verifiers of the task), and runs every method of
`rewardlab.search.methods` for N = 1, 2, 4, ..., N_max over the held-out problems of
the `task` section (`rewardlab.tasks.source`: split "test", `problems.num` of them;
prompts wrapped by the tokenizer's chat template when it has one). Samples are
reused across N where the method allows it:

* majority, best-of-N and weighted best-of-N share one draw of N_max samples per
  problem and are evaluated on its first n samples (`search.curves.accuracy_vs_n`);
  the samples are scored in chunks that end at each n, so the reward tokens spent
  up to n are exact; GenARM draws its own N_max guided samples the same way;
* QAlign runs one chain of N_max states; its first n states are a chain of n;
* beam search and DVTS are run once per n.

It writes `tts_results.json` (per method: n, mean accuracy with 95% CI, generated
and scored tokens per problem, per-problem correctness; plus the pass@n ceiling)
and the plots `accuracy_vs_n.png` and `accuracy_vs_tokens.png`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zlib
from typing import Callable

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from rewardlab import sharding
from rewardlab.eval.plots import plot_curves
from rewardlab.search import budget as budget_lib
from rewardlab.search import curves, methods
from rewardlab.search.policy import LMPolicy
from rewardlab.search.qalign import chain_vote
from rewardlab.tasks import ArithmeticTask, arithmetic, source
from rewardlab.train import config_checks, interrupt, sft
from rewardlab.train import metrics as metrics_lib

log = logging.getLogger(__name__)

PREFIX_METHODS = ("majority", "best_of_n", "weighted_best_of_n")
REWARD_SUFFIXES = ("orm", "prm")


class ArithmeticOracle:
  """Exact verifiers for the arithmetic task, with both scorer interfaces.

  `score`: 1.0 if the completion's final answer is right, else 0.0. `score_steps`:
  step k scores 1.0 iff no step up to k is wrong (`arithmetic.first_wrong_step`; a
  missing later step is not held against a partial solution), else 0.0. The problem
  is read back from the prompt. `tokens_scored` counts the characters of prompt
  and text, as a character-level reward model would.
  """

  def __init__(self):
    self.tokens_scored = 0

  def score(self, prompts, completions) -> np.ndarray:
    out = []
    for prompt, text in zip(prompts, completions):
      self.tokens_scored += len(prompt) + len(text)
      out.append(float(arithmetic.is_correct(text, arithmetic.parse_prompt(prompt))))
    return np.asarray(out)

  def score_steps(self, prompts, steps_lists) -> list[np.ndarray]:
    out = []
    for prompt, steps in zip(prompts, steps_lists):
      self.tokens_scored += len(prompt) + sum(len(s) + 1 for s in steps)
      wrong = arithmetic.first_wrong_step(list(steps), arithmetic.parse_prompt(prompt))
      if wrong == -1 or wrong >= len(steps):
        wrong = len(steps)
      out.append((np.arange(len(steps)) < wrong).astype(np.float64))
    return out


class TaskOracle:
  """Exact verifiers of any task for known problems, with both scorer interfaces.

  The problem of a prompt is looked up in `problems` (prompt -> problem). `score`: 1.0
  iff `task.is_correct`. `score_steps`: step k scores 1.0 iff no step up to k is wrong
  by `task.first_wrong_step` on the steps joined by `separator`, read as a partial
  solution (`finished=False`: a missing answer is not held against it); for the math
  task this needs the problems' per-step intermediates. `tokens_scored` counts
  characters, as `ArithmeticOracle` does.
  """

  def __init__(self, task, problems: dict, separator: str = "\n"):
    self.task, self.problems, self.separator = task, dict(problems), separator
    self.tokens_scored = 0

  def _problem(self, prompt: str):
    if prompt not in self.problems:
      raise KeyError(f"the oracle knows no problem for the prompt {prompt[:80]!r}")
    return self.problems[prompt]

  def score(self, prompts, completions) -> np.ndarray:
    out = []
    for prompt, text in zip(prompts, completions):
      self.tokens_scored += len(prompt) + len(text)
      out.append(float(self.task.is_correct(text, self._problem(prompt))))
    return np.asarray(out)

  def score_steps(self, prompts, steps_lists) -> list[np.ndarray]:
    out = []
    for prompt, steps in zip(prompts, steps_lists):
      self.tokens_scored += len(prompt) + sum(len(s) + len(self.separator) for s in steps)
      text = "".join(s + self.separator for s in steps)
      wrong = self.task.first_wrong_step(text, self._problem(prompt), finished=False)
      wrong = len(steps) if wrong == -1 else wrong
      out.append((np.arange(len(steps)) < wrong).astype(np.float64))
    return out


def task_source(cfg: ml_collections.ConfigDict, tokenizer=None) -> source.TaskSource:
  return source.build(cfg.task, tokenizer)


def held_out_problems(cfg: ml_collections.ConfigDict, src: source.TaskSource | None = None
                      ) -> list:
  """`problems.num` problems of the task's test split (files: 0 = all)."""
  src = task_source(cfg) if src is None else src
  return src.problems("test", cfg.problems.num, cfg.problems.seed)


def load_scorers(cfg: ml_collections.ConfigDict, oracle=None, mesh=None) -> methods.Scorers:
  """Scorers from `cfg.reward`: saved reward-model dirs and/or the task's oracle
  (`oracle`; by default the arithmetic one, which reads the problem from the prompt).
  With a `mesh` the reward models are placed on it and score with their rows sharded
  over its data axes (GenARM guides are placed on it too)."""
  r = cfg.reward
  if r.oracle and (r.outcome_dir or r.process_dir):
    raise ValueError("reward.oracle replaces reward.outcome_dir / process_dir; set only one")
  outcome = process = None
  if r.oracle:
    outcome = process = ArithmeticOracle() if oracle is None else oracle
  guides = []
  if r.outcome_dir or r.process_dir or r.guide_dirs:
    from rewardlab.models import reward as reward_lib

    def load(path, head):
      config, params, tokenizer = reward_lib.load_reward_model(path, mesh=mesh)
      if config.head not in head:
        raise ValueError(f"{path}: a {config.head!r} reward model, expected one of {head}")
      if tokenizer is None:
        raise ValueError(f"{path}: no tokenizer saved beside the reward model")
      return config, params, tokenizer

    if r.outcome_dir:
      outcome = reward_lib.sequence_scorer(*load(r.outcome_dir, ("outcome", "attributes")),
                                           mesh=mesh)
    if r.process_dir:
      process = reward_lib.ProcessScorer(*load(r.process_dir, ("process",)), mesh=mesh)
    for path in r.guide_dirs:
      config, params, _ = load(path, ("genarm",))
      guides.append((config.backbone, params["backbone"]))
  alphas = tuple(r.alphas) if r.alphas else (1.0,) * len(guides)
  if len(alphas) != len(guides):
    raise ValueError(f"reward.alphas has {len(alphas)} entries for {len(guides)} guide_dirs")
  return methods.Scorers(outcome=outcome, process=process, guides=tuple(guides), alphas=alphas)


@dataclasses.dataclass
class _Context:
  cfg: ml_collections.ConfigDict
  task: object
  problems: list
  prompts: list[str]
  policy: object
  scorers: methods.Scorers
  ns: tuple[int, ...]
  bar: object
  separator: str = "\n"   # the task's step separator: PRM steps are split on it
  cache: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MethodCurve:
  """A method's `curve` (x = n; `curve.tokens` = generated tokens per problem) and the
  reward-model tokens per problem `tokens_scored` `[len(ns)]`."""

  curve: curves.Curve
  tokens_scored: np.ndarray

  def to_dict(self) -> dict:
    c = self.curve
    return {"n": c.x.astype(int).tolist(), "accuracy": c.mean.tolist(),
            "ci_low": c.ci_low.tolist(), "ci_high": c.ci_high.tolist(),
            "stderr": c.stderr.tolist(),
            "tokens_generated": None if c.tokens is None else c.tokens.tolist(),
            "tokens_scored": self.tokens_scored.tolist(),
            "per_problem_correct": c.per_problem.astype(int).tolist()}


def _rng(seed: int, *keys) -> np.random.Generator:
  return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def _draw(ctx: _Context, name: str, policy, temperature: float) -> dict:
  """N_max full samples per problem (cached per name), batched over problems."""
  if name in ctx.cache:
    return ctx.cache[name]
  cfg, n_max = ctx.cfg, ctx.ns[-1]
  texts, tokens = [], []
  for start in range(0, len(ctx.prompts), cfg.batch_size):
    chunk = ctx.prompts[start:start + cfg.batch_size]
    out = budget_lib.sample(policy, budget_lib.Budget(), chunk, n_max,
                            max_new_tokens=cfg.sampling.max_new_tokens, temperature=temperature,
                            stop_at_step=False, rng=_rng(cfg.seed, name, start))
    texts += [[c.text for c in row] for row in out]
    tokens += [[c.num_tokens for c in row] for row in out]
  draw = {"texts": texts, "tokens": np.asarray(tokens, np.float64),
          "answers": [[ctx.task.extract_answer(t) for t in row] for row in texts],
          "correct": np.asarray([[ctx.task.is_correct(t, p) for t in row]
                                 for row, p in zip(texts, ctx.problems)])}
  ctx.cache[name] = draw
  return draw


def _scores(ctx: _Context, draw: dict, reward: str) -> tuple[np.ndarray, np.ndarray, str]:
  """Rewards `[P, N_max]` of the plain draw, cumulative scored tokens per problem at each
  n `[len(ns)]`, and the reward kind. Scored in chunks [n_{j-1}, n_j) over all problems."""
  scorer, kind = methods.reward_scorer(ctx.scorers, reward)
  if ("scores", kind) in ctx.cache:
    return ctx.cache[("scores", kind)]
  num = len(ctx.problems)
  scores = np.zeros((num, ctx.ns[-1]))
  scored, budget = [], budget_lib.Budget()
  for a, b in zip((0,) + ctx.ns[:-1], ctx.ns):
    prompts = [ctx.prompts[i] for i in range(num) for _ in range(a, b)]
    texts = [draw["texts"][i][j] for i in range(num) for j in range(a, b)]
    chunk = budget_lib.solution_scores(scorer, budget, prompts, texts, kind=kind,
                                       aggregation=ctx.cfg.bon.aggregation,
                                       separator=ctx.separator)
    scores[:, a:b] = chunk.reshape(num, b - a)
    scored.append(budget.tokens_scored / num)
  ctx.cache[("scores", kind)] = (scores, np.asarray(scored), kind)
  return ctx.cache[("scores", kind)]


def split_reward(name: str) -> tuple[str, str | None]:
  """`("best_of_n", "prm")` for "best_of_n_prm": a selection method with its reward pinned
  (`bon.reward` applies to the bare name)."""
  for kind in REWARD_SUFFIXES:
    if name.endswith("_" + kind):
      return name[:-len(kind) - 1], kind
  return name, None


def _prefix_curve(ctx: _Context, name: str) -> MethodCurve:
  draw = _draw(ctx, "samples", ctx.policy, ctx.cfg.sampling.temperature)
  scores, scored = None, np.zeros(len(ctx.ns))
  method, reward = split_reward(name)
  if method != "majority":
    scores, scored, kind = _scores(ctx, draw, reward or ctx.cfg.bon.reward)
    if method == "weighted_best_of_n" and kind == "orm":
      scores = 1.0 / (1.0 + np.exp(-scores))  # weights must be non-negative
  curve = curves.accuracy_vs_n(draw["answers"], draw["correct"], scores, method=method,
                               ns=ctx.ns, tokens=draw["tokens"])
  ctx.bar.update(len(ctx.problems))
  return MethodCurve(dataclasses.replace(curve, label=name), scored)


def _genarm_curve(ctx: _Context, name: str) -> MethodCurve:
  g = ctx.cfg.genarm
  alphas = tuple(g.alphas) if g.alphas else ctx.scorers.alphas
  guided = ctx.policy.with_guides(ctx.scorers.guides, alphas)
  draw = _draw(ctx, "genarm", guided, g.temperature)
  curve = curves.accuracy_vs_n(draw["answers"], draw["correct"], method="majority", ns=ctx.ns,
                               tokens=draw["tokens"])
  ctx.bar.update(len(ctx.problems))
  return MethodCurve(dataclasses.replace(curve, label=name), np.zeros(len(ctx.ns)))


def _curve(name: str, ns, correct: np.ndarray, generated: np.ndarray, scored: np.ndarray
           ) -> MethodCurve:
  """Curve from per-problem arrays `[len(ns), P]`."""
  stats = np.array([curves.mean_confidence_interval(row) for row in correct])
  curve = curves.Curve(x=np.asarray(ns, np.float64), mean=stats[:, 0], ci_low=stats[:, 1],
                       ci_high=stats[:, 2], stderr=stats[:, 3], per_problem=correct, label=name,
                       tokens=generated.mean(axis=1))
  return MethodCurve(curve, scored.mean(axis=1))


def _opts(ctx: _Context, name: str) -> dict:
  s = ctx.cfg.sampling
  return {"temperature": s.temperature, "max_new_tokens": s.max_new_tokens,
          "separator": ctx.separator, **ctx.cfg[{"beam_search": "beam"}.get(name, name)].to_dict()}


def _per_n_curve(ctx: _Context, name: str) -> MethodCurve:
  shape = (len(ctx.ns), len(ctx.problems))
  correct, generated, scored = np.zeros(shape), np.zeros(shape), np.zeros(shape)
  for i, (problem, prompt) in enumerate(zip(ctx.problems, ctx.prompts)):
    for j, n in enumerate(ctx.ns):
      result = methods.run_method(name, prompt, policy=ctx.policy, scorers=ctx.scorers,
                                  task=ctx.task, n=n, rng=_rng(ctx.cfg.seed, name, i, n),
                                  **_opts(ctx, name))
      correct[j, i] = ctx.task.is_correct(result.text, problem)
      generated[j, i] = result.budget.tokens_generated
      scored[j, i] = result.budget.tokens_scored
    ctx.bar.update(1)
  return _curve(name, ctx.ns, correct, generated, scored)


def _qalign_curve(ctx: _Context, name: str) -> MethodCurve:
  shape = (len(ctx.ns), len(ctx.problems))
  correct, generated, scored = np.zeros(shape), np.zeros(shape), np.zeros(shape)
  burn_in = ctx.cfg.qalign.burn_in
  for i, (problem, prompt) in enumerate(zip(ctx.problems, ctx.prompts)):
    result = methods.run_method(name, prompt, policy=ctx.policy, scorers=ctx.scorers,
                                task=ctx.task, n=ctx.ns[-1], rng=_rng(ctx.cfg.seed, name, i),
                                **_opts(ctx, name))
    chain, answers = result.extra["chain"], result.extra["answers"]
    for j, n in enumerate(ctx.ns):  # the first n states are a chain of n states
      k = chain_vote(answers, n, burn_in)
      correct[j, i] = ctx.task.is_correct(chain.states[k].text, problem)
      generated[j, i] = chain.budgets[n - 1].tokens_generated
      scored[j, i] = chain.budgets[n - 1].tokens_scored
    ctx.bar.update(1)
  return _curve(name, ctx.ns, correct, generated, scored)


# name -> (runner, what it needs: a predicate on the context and the reason when missing)
RUNNERS: dict[str, Callable[[_Context, str], MethodCurve]] = {
    "majority": _prefix_curve, "best_of_n": _prefix_curve, "weighted_best_of_n": _prefix_curve,
    "beam_search": _per_n_curve, "dvts": _per_n_curve, "qalign": _qalign_curve,
    "genarm": _genarm_curve,
    **{f"{m}_{kind}": _prefix_curve for m in ("best_of_n", "weighted_best_of_n")
       for kind in REWARD_SUFFIXES},
}


def _missing(ctx: _Context, name: str) -> str | None:
  """Why `name` cannot run with these scorers (None when it can)."""
  s = ctx.scorers
  method, pinned = split_reward(name)
  if method in ("best_of_n", "weighted_best_of_n", "qalign"):
    reward = pinned or (ctx.cfg.bon.reward if method != "qalign" else ctx.cfg.qalign.reward)
    try:
      methods.reward_scorer(s, reward)
    except ValueError as e:
      return str(e)
  if name in ("beam_search", "dvts") and s.process is None:
    return "needs a process reward model (reward.process_dir or reward.oracle)"
  if name == "genarm" and (not s.guides or not hasattr(ctx.policy, "with_guides")):
    return "needs GenARM guide models (reward.guide_dirs) and an LM policy"
  return None


def _check(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  unknown = sorted(set(cfg.methods) - set(RUNNERS))
  if unknown:
    raise ValueError(f"methods {unknown} are unknown; known: {sorted(RUNNERS)}")
  ns = curves.default_ns(cfg.n_max)
  for key in ("beam", "dvts"):
    width = cfg[key].width
    bad = [n for n in ns if n % min(width, n)]
    if bad:
      raise ValueError(f"{key}.width={width} does not divide n in {bad}; use powers of two")
  return ns


def run(cfg: ml_collections.ConfigDict, workdir: str, *, policy=None,
        scorers: methods.Scorers | None = None) -> dict:
  """Run every configured method; write the JSON results and the plots into `workdir`.

  `policy` / `scorers` replace the ones `cfg` would load (tests pass scripted ones).
  `cfg.mesh_shape` samples and scores on a device mesh (the policy's and reward models'
  params placed by the logical rules, the rows sharded over the data axes); the results
  equal the single-device ones.
  Returns the results dict that is also written to `tts_results.json`.
  """
  ns = _check(cfg)
  config_checks.check_values(cfg)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(tuple(cfg.mesh_shape)) if cfg.get("mesh_shape") else None
  if policy is None:
    if not cfg.policy_dir:
      raise ValueError("policy_dir is empty: pass --config.policy_dir=<sft workdir>/policy "
                       "or a local Hugging Face model directory")
    policy = LMPolicy(*sft.load_policy(cfg.policy_dir, mesh=mesh),
                      step_separator=cfg.task.step_separator, mesh=mesh)
  src = task_source(cfg, getattr(policy, "tokenizer", None))
  task = src.task
  problems = held_out_problems(cfg, src)
  prompts = [src.prompt(p) for p in problems]
  oracle = None
  if cfg.reward.oracle and not isinstance(task, ArithmeticTask):
    oracle = TaskOracle(task, dict(zip(prompts, problems)), src.step_separator)
  scorers = load_scorers(cfg, oracle, mesh) if scorers is None else scorers
  with interrupt.watch(), tqdm(total=len(cfg.methods) * len(problems), desc="tts",
                               disable=not cfg.progress, dynamic_ncols=True,
                               mininterval=1.0) as bar:
    ctx = _Context(cfg, task, problems, prompts, policy, scorers, ns, bar, src.step_separator)
    results, skipped, seconds = {}, {}, {}
    for name in cfg.methods:
      if interrupt.requested() is not None:  # SIGTERM / SIGINT: keep the methods done so far
        _write(workdir, _results(cfg, ns, problems, results, skipped, seconds, ctx, src,
                                 stopped_before=name), results, ns)
        raise interrupt.stop(f"tts: stopped before method {name!r}; the {len(results)} done "
                             f"are in {workdir}/tts_results.json; rerun to compute all")
      reason = _missing(ctx, name)
      if reason is not None:
        skipped[name] = reason
        bar.update(len(problems))
        log.info("skipping %s: %s", name, reason)
        continue
      bar.set_postfix_str(name)
      start = time.perf_counter()
      results[name] = RUNNERS[name](ctx, name)
      seconds[name] = time.perf_counter() - start
  out = _results(cfg, ns, problems, results, skipped, seconds, ctx, src)
  _write(workdir, out, results, ns)
  return out


def _results(cfg, ns, problems, results, skipped, seconds, ctx, src, stopped_before=None) -> dict:
  out = {"ns": list(ns), "num_problems": len(problems), "policy_dir": cfg.policy_dir,
         "task": {"name": cfg.task.name, "eval_files": cfg.task.eval_files,
                  "chat_template": src.uses_chat_template, "skipped_rows": src.skipped},
         "methods": {k: v.to_dict() for k, v in results.items()}, "skipped": skipped,
         "seconds": seconds}
  if stopped_before is not None:
    out["stopped_before"] = stopped_before
  if "samples" in ctx.cache:  # the oracle ceiling of the plain draw
    out["pass@n"] = MethodCurve(curves.pass_at_k_curve(ctx.cache["samples"]["correct"], ns),
                                np.zeros(len(ns))).to_dict()
  return out


def _write(workdir: str, out: dict, results: dict[str, MethodCurve], ns) -> None:
  metrics_lib.write_json(os.path.join(workdir, "tts_results.json"), out)
  if not results:
    return
  by_n = {k: v.curve for k, v in results.items()}
  if "pass@n" in out:
    p = out["pass@n"]
    by_n["pass@n (oracle)"] = {"x": ns, "mean": p["accuracy"], "ci_low": p["ci_low"],
                               "ci_high": p["ci_high"]}
  plot_curves(by_n, os.path.join(workdir, "accuracy_vs_n.png"), title="accuracy vs N")
  plot_curves({k: v.curve.against_tokens() for k, v in results.items()},
              os.path.join(workdir, "accuracy_vs_tokens.png"),
              xlabel="generated tokens per problem", title="accuracy vs generated tokens")
