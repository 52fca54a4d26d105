"""Rewards by name for any task (SPECS §2): `rollout -> Rewards`.

A reward function maps a `Rollout` (the sampled completions of one step, groups of
`group_size` adjacent rows) to `Rewards`: a sequence score `scores` [N] and dense
`token_rewards` [N, T]. The return of row i is `scores[i] + Σ_t token_rewards[i, t]`;
group advantage estimators use that return, PPO places `scores` at the last completion
token and adds `token_rewards` where they stand.

Registered rewards (`get_reward(name)`):
    verifier     r = 1[task.is_correct(completion)] (math-verify for `math`)  (scores)
    outcome_rm   r = scorer.score(prompts, completions)                      (scores)
    prm_dense    Clip-Delta shaped PRM step probabilities at the last token of each
                 step, plus `success_weight · 1[correct]` at the last token    (tokens)
    ttrl         r = 1[answer = majority answer of the group]; no labels used  (scores)

Every reward also reports `correct` [N] (the task's checker, for logging only) and
metrics. Steps are the separator-terminated pieces of the decoded completion, split on
the task's step separator string (which may span several tokens); text after the last
separator is not a step. Scorers are duck-typed: an outcome scorer has
`.score(prompts, completions) -> [N]`, a process scorer `.score_steps(prompts, steps) ->
list of [K_i]` step probabilities; `rewardlab.models.reward.OutcomeScorer` and
`ProcessScorer` are such scorers. `load_scorer` reads one from a reward-model directory
and refuses a reward model whose tokenizer is not the policy's.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence

import numpy as np

from rewardlab.losses import shaping
from rewardlab.losses.registry import Registry
from rewardlab.rl.rollout import Rollout


class OutcomeScorerLike(Protocol):
  def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


class ProcessScorerLike(Protocol):
  def score_steps(self, prompts: Sequence[str],
                  steps: Sequence[Sequence[str]]) -> Sequence[np.ndarray]: ...


@dataclasses.dataclass
class Rewards:
  scores: np.ndarray          # [N] float32 sequence rewards
  token_rewards: np.ndarray   # [N, T] float32 dense rewards (0 where none)
  correct: np.ndarray         # [N] bool, the task's checker
  metrics: dict

  @property
  def returns(self) -> np.ndarray:
    return self.scores + self.token_rewards.sum(axis=-1)


REWARDS = Registry("reward")


def register_reward(name: str, *, overwrite: bool = False):
  """Decorator: `fn(rollout, **options) -> Rewards` registered as `name`."""
  return REWARDS.register(name, overwrite=overwrite)


def get_reward(name: str) -> Callable[..., Rewards]:
  """The reward function registered as `name` (verifier, outcome_rm, prm_dense, ttrl)."""
  return REWARDS.get(name)


def make_reward_fn(name: str, **options) -> Callable[[Rollout], Rewards]:
  """`rollout -> Rewards` for the registered reward `name` with its options bound."""
  fn = get_reward(name)
  return lambda rollout: fn(rollout, **options)


def _sequence_rewards(rollout: Rollout, scores, correct, **metrics) -> Rewards:
  scores = np.asarray(scores, np.float32).reshape(-1)
  if scores.shape != (len(rollout.texts),):
    raise ValueError(f"reward scores have shape {scores.shape}, expected ({len(rollout.texts)},)")
  return Rewards(scores=scores, token_rewards=np.zeros(rollout.tokens.shape, np.float32),
                 correct=correct, metrics=metrics)


@register_reward("verifier")
def verifier_reward(rollout: Rollout) -> Rewards:
  """`r = 1[task.is_correct(completion, problem)]`."""
  correct = rollout.correct
  return _sequence_rewards(rollout, correct, correct)


@register_reward("outcome_rm")
def outcome_rm_reward(rollout: Rollout, *, outcome_scorer: OutcomeScorerLike) -> Rewards:
  """`r = outcome_scorer.score(prompts, completions)` (a learned reward, no labels)."""
  correct = rollout.correct
  scores = np.asarray(outcome_scorer.score(rollout.prompts, rollout.texts), np.float32)
  corr = np.corrcoef(scores, correct)[0, 1] if scores.std() > 0 and correct.std() > 0 else 0.0
  return _sequence_rewards(rollout, scores, correct, rm_score_correct_corr=float(corr))


def _answer_ids(answers: Sequence) -> np.ndarray:
  """Dense int ids of hashable answers in order of first appearance (None -> -1)."""
  index: dict = {}
  return np.array([-1 if a is None else index.setdefault(a, len(index)) for a in answers],
                  np.int64)


@register_reward("ttrl")
def ttrl_reward(rollout: Rollout) -> Rewards:
  """Test-time RL: `r_i = 1[ans_i = majority answer of its group]` (unparsable -> 0).
  Answers are the task's canonical ones (`task.extract_answer`)."""
  task, g = rollout.task, rollout.group_size
  answers = [task.extract_answer(t) for t in rollout.texts]
  truth = [task.reference_answer(p) for p in rollout.problems[::g]]
  ids = _answer_ids(answers + truth)
  ids, truth_ids = ids[:len(answers)], ids[len(answers):]
  valid = ids >= 0
  scores = np.asarray(shaping.ttrl_majority_reward(ids, g, valid))
  majority, has = (np.asarray(x) for x in shaping.group_majority(ids, g, valid))
  label_acc = float(np.mean(has & (majority == truth_ids) & (truth_ids >= 0)))
  return _sequence_rewards(rollout, scores, rollout.correct, ttrl_label_accuracy=label_acc)


def completion_steps(text: str, num_steps: int, separator: str) -> list[str]:
  """The first `num_steps` separator-terminated pieces of `text` (separator removed)."""
  pieces = text.split(separator)
  if len(pieces) - 1 < num_steps:
    raise ValueError(f"completion {text!r} has {len(pieces) - 1} separators "
                     f"{separator!r}, expected {num_steps}")
  return pieces[:num_steps]


@register_reward("prm_dense")
def prm_dense_reward(rollout: Rollout, *, process_scorer: ProcessScorerLike, eta: float = 0.5,
                     success_weight: float = 1.0) -> Rewards:
  """PRM step probabilities p_k as dense rewards with Clip-Delta shaping.

  `r_k = clip_delta(p, η)_k` sits at the token that completes step k's separator; the
  success reward `success_weight · 1[correct]` is added at the last completion token.
  The return telescopes to `min(p_1 - η, 0) - min(p_K - η, 0) + success`, so repeating
  good-looking steps cannot raise it (Clip makes every step reward <= 0).
  """
  correct = rollout.correct
  bounds = rollout.step_ends()
  steps = [completion_steps(t, len(b), rollout.step_separator)
           for t, b in zip(rollout.texts, bounds)]
  probs = process_scorer.score_steps(rollout.prompts, steps)
  n, k_max = len(steps), max(1, max(len(s) for s in steps))
  p = np.zeros((n, k_max), np.float32)
  step_mask = np.zeros((n, k_max), bool)
  for i, (row, s) in enumerate(zip(probs, steps)):
    row = np.asarray(row, np.float32).reshape(-1)
    if row.shape[0] != len(s):
      raise ValueError(f"process scorer returned {row.shape[0]} step scores for completion "
                       f"{i}, which has {len(s)} steps")
    p[i, :len(s)], step_mask[i, :len(s)] = row, True
  shaped = np.asarray(shaping.clip_delta(p, step_mask, eta))  # [N, K]
  token_rewards = np.zeros(rollout.tokens.shape, np.float32)
  for i, b in enumerate(bounds):
    np.add.at(token_rewards[i], b, shaped[i, :len(b)])  # one token may end several steps
    if rollout.lengths[i] > 0:
      token_rewards[i, rollout.lengths[i] - 1] += success_weight * float(correct[i])
  mean_p = float(p[step_mask].mean()) if step_mask.any() else 0.0
  return Rewards(scores=np.zeros(n, np.float32), token_rewards=token_rewards, correct=correct,
                 metrics={"prm_step_prob": mean_p,
                          "prm_steps": float(step_mask.sum(1).mean())})


# --------------------------------------------------------------------------- reward models


def vocabulary(tokenizer) -> dict:
  """Token string -> id of a tokenizer (a Hugging Face one's `get_vocab()`, otherwise the
  decoded text of every id)."""
  inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers one
  if inner is not None and hasattr(inner, "get_vocab"):
    return dict(inner.get_vocab())
  return {tokenizer.decode([i], skip_special=False): i for i in range(tokenizer.vocab_size)}


def check_same_tokenizer(policy_tokenizer, rm_tokenizer, rm_dir: str) -> None:
  """ValueError unless the reward model's tokenizer is the policy's (same vocabulary and
  special ids): a reward model reads token ids the way it was trained, and text from
  another tokenizer's policy is out of its distribution or not encodable at all."""
  if policy_tokenizer is rm_tokenizer:
    return
  what = lambda t: (f"{t!r} (vocab_size {t.vocab_size}, bos/eos/pad "
                    f"{t.bos_id}/{t.eos_id}/{t.pad_id})")
  specials = lambda t: (t.vocab_size, t.bos_id, t.eos_id, t.pad_id)
  if specials(policy_tokenizer) == specials(rm_tokenizer):
    a, b = vocabulary(policy_tokenizer), vocabulary(rm_tokenizer)
    if a == b:
      return
    diff = sorted(set(a.items()) ^ set(b.items()))[:3]
    detail = f"; vocabularies differ, e.g. {diff}"
  else:
    detail = ""
  raise ValueError(f"reward model at {rm_dir} was trained with tokenizer "
                   f"{what(rm_tokenizer)}, the policy uses {what(policy_tokenizer)}{detail}: "
                   f"train the reward model from the policy's tokenizer")


def load_scorer(name: str, model_dir: str, policy_tokenizer, *, step_separator: str = "\n"):
  """The scorer of reward `name` from a reward-model directory (`rewardlab.models.reward`:
  an outcome / attributes / GenARM head gives `score`, a process head `score_steps`,
  splitting at `step_separator`). A directory without a tokenizer uses the policy's;
  one with another tokenizer is an error (`check_same_tokenizer`)."""
  from rewardlab.models import reward as rm  # only these two rewards need it

  rm_config, rm_params, rm_tokenizer = rm.load_reward_model(model_dir)
  if rm_tokenizer is None:
    rm_tokenizer = policy_tokenizer
  check_same_tokenizer(policy_tokenizer, rm_tokenizer, model_dir)
  if name == "outcome_rm":
    return rm.sequence_scorer(rm_config, rm_params, rm_tokenizer)
  return rm.ProcessScorer(rm_config, rm_params, rm_tokenizer, separator=step_separator)


def reward_options(reward_cfg, policy_tokenizer, *, step_separator: str, outcome_scorer=None,
                   process_scorer=None) -> dict:
  """Keyword options of the configured reward (`cfg.reward`). A scorer that is not given
  is loaded from `reward_cfg.model_dir` (`load_scorer`)."""
  name = reward_cfg.name
  get_reward(name)
  if name not in ("outcome_rm", "prm_dense"):
    return {}
  scorer = outcome_scorer if name == "outcome_rm" else process_scorer
  if scorer is None:
    if not reward_cfg.model_dir:
      raise ValueError(f"reward {name!r} needs a scorer or reward.model_dir")
    scorer = load_scorer(name, reward_cfg.model_dir, policy_tokenizer,
                         step_separator=step_separator)
  if name == "outcome_rm":
    return {"outcome_scorer": scorer}
  return {"process_scorer": scorer, "eta": reward_cfg.eta,
          "success_weight": reward_cfg.success_weight}
