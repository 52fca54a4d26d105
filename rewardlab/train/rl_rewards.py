"""The host side of the RL loop: rollouts, rewards by name, evaluation (SPECS §2).

`sample_rollout` draws G completions per problem with the sampler and returns the host
`Rollout` plus the numpy training batch (`prompt ++ completion` rows); `with_rewards`
adds the rewards to that batch; `RLStep` is one whole step for `loop.fit` (sample,
reward, then the jitted update of `rl.py`); `evaluate` gives held-out pass@1 and maj@k.
A reward function maps a `Rollout` (the sampled completions of one step, groups of
`group_size` adjacent rows) to `Rewards`: a sequence score `scores` [N] and dense
`token_rewards` [N, T]. The return of row i is `scores[i] + Σ_t token_rewards[i, t]`;
group advantage estimators use that return, PPO places `scores` at the last completion
token and adds `token_rewards` where they stand.

Registered rewards (`get_reward(name)`):
    verifier     r = 1[answer correct]                                (scores)
    outcome_rm   r = scorer.score(prompts, completions)               (scores)
    prm_dense    Clip-Delta shaped PRM step probabilities at the last token of each
                 step, plus `success_weight · 1[correct]` at the last token (tokens)
    ttrl         r = 1[answer = majority answer of the group]; no labels used (scores)

Every reward also reports `correct` [N] (ground truth, for logging only) and metrics.
Scorers are duck-typed: an outcome scorer has `.score(prompts, completions) -> [N]`, a
process scorer `.score_steps(prompts, steps) -> list of [K_i]` step probabilities, where
`steps[i]` are the separator-terminated lines of completion i (separator removed);
`rewardlab.models.reward.OutcomeScorer` and `ProcessScorer` are such scorers.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.losses import shaping
from rewardlab.losses.registry import Registry
from rewardlab.sampling import generate
from rewardlab.search.selection import majority_vote
from rewardlab.tasks import arithmetic


class OutcomeScorerLike(Protocol):
  def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


class ProcessScorerLike(Protocol):
  def score_steps(self, prompts: Sequence[str],
                  steps: Sequence[Sequence[str]]) -> Sequence[np.ndarray]: ...


@dataclasses.dataclass
class Rollout:
  """Completions of one RL step on the host; row i answers `problems[i]`.

  tokens [N, T] completion ids padded after `lengths` [N] (EOS included when produced);
  texts [N] decoded completions without specials; has_eos [N] bool.
  """

  problems: list[arithmetic.Problem]
  prompts: list[str]
  texts: list[str]
  tokens: np.ndarray
  lengths: np.ndarray
  has_eos: np.ndarray
  group_size: int
  separator_id: int

  def __post_init__(self):
    n = len(self.problems)
    for name in ("prompts", "texts", "tokens", "lengths", "has_eos"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"Rollout.{name} has {len(getattr(self, name))} rows, expected {n}")
    if self.group_size < 1 or n % self.group_size:
      raise ValueError(f"Rollout.group_size={self.group_size} must divide {n} rows")

  @property
  def correct(self) -> np.ndarray:
    return np.array([arithmetic.is_correct(t, p) for t, p in zip(self.texts, self.problems)])


@dataclasses.dataclass
class Rewards:
  scores: np.ndarray          # [N] float32 sequence rewards
  token_rewards: np.ndarray   # [N, T] float32 dense rewards (0 where none)
  correct: np.ndarray         # [N] bool, verifier ground truth
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


def _sequence_rewards(rollout: Rollout, scores, correct, **metrics) -> Rewards:
  scores = np.asarray(scores, np.float32).reshape(-1)
  if scores.shape != (len(rollout.texts),):
    raise ValueError(f"reward scores have shape {scores.shape}, expected ({len(rollout.texts)},)")
  return Rewards(scores=scores, token_rewards=np.zeros(rollout.tokens.shape, np.float32),
                 correct=correct, metrics=metrics)


@register_reward("verifier")
def verifier_reward(rollout: Rollout) -> Rewards:
  """`r = 1[extracted answer == problem answer]`."""
  correct = rollout.correct
  return _sequence_rewards(rollout, correct, correct)


@register_reward("outcome_rm")
def outcome_rm_reward(rollout: Rollout, *, outcome_scorer: OutcomeScorerLike) -> Rewards:
  """`r = outcome_scorer.score(prompts, completions)` (a learned reward, no labels)."""
  correct = rollout.correct
  scores = np.asarray(outcome_scorer.score(rollout.prompts, rollout.texts), np.float32)
  corr = np.corrcoef(scores, correct)[0, 1] if scores.std() > 0 and correct.std() > 0 else 0.0
  return _sequence_rewards(rollout, scores, correct, rm_score_correct_corr=float(corr))


@register_reward("ttrl")
def ttrl_reward(rollout: Rollout) -> Rewards:
  """Test-time RL: `r_i = 1[ans_i = majority answer of its group]` (unparsable -> 0)."""
  answers = [arithmetic.extract_answer(t) for t in rollout.texts]
  valid = np.array([a is not None for a in answers])
  ids = np.array([a if a is not None else -1 for a in answers], np.int64)
  scores = np.asarray(shaping.ttrl_majority_reward(ids, rollout.group_size, valid))
  majority, has = (np.asarray(x) for x in shaping.group_majority(ids, rollout.group_size, valid))
  truth = np.array([p.answer for p in rollout.problems[::rollout.group_size]])
  label_acc = float(np.mean(has & (majority == truth)))
  return _sequence_rewards(rollout, scores, rollout.correct, ttrl_label_accuracy=label_acc)


def step_boundaries(tokens: np.ndarray, lengths: np.ndarray, separator_id: int) -> list[np.ndarray]:
  """Positions of the separator token in each completion: the last token of each step."""
  return [np.flatnonzero(row[:n] == separator_id) for row, n in zip(tokens, lengths)]


def completion_steps(text: str, num_steps: int, separator: str = arithmetic.STEP_SEPARATOR
                     ) -> list[str]:
  """The first `num_steps` separator-terminated lines of `text`."""
  lines = text.split(separator)
  if len(lines) - 1 < num_steps:
    raise ValueError(f"completion {text!r} has {len(lines) - 1} separators, expected "
                     f"{num_steps} (the tokenizer must map the separator to one token)")
  return lines[:num_steps]


@register_reward("prm_dense")
def prm_dense_reward(rollout: Rollout, *, process_scorer: ProcessScorerLike, eta: float = 0.5,
                     success_weight: float = 1.0) -> Rewards:
  """PRM step probabilities p_k as dense rewards with Clip-Delta shaping.

  `r_k = clip_delta(p, η)_k` sits at the separator token that ends step k; the success
  reward `success_weight · 1[correct]` is added at the last completion token. The
  return telescopes to `min(p_1 - η, 0) - min(p_K - η, 0) + success`, so repeating
  good-looking steps cannot raise it (Clip makes every step reward <= 0).
  """
  correct = rollout.correct
  bounds = step_boundaries(rollout.tokens, rollout.lengths, rollout.separator_id)
  steps = [completion_steps(t, len(b)) for t, b in zip(rollout.texts, bounds)]
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
    token_rewards[i, b] = shaped[i, :len(b)]
    if rollout.lengths[i] > 0:
      token_rewards[i, rollout.lengths[i] - 1] += success_weight * float(correct[i])
  mean_p = float(p[step_mask].mean()) if step_mask.any() else 0.0
  return Rewards(scores=np.zeros(n, np.float32), token_rewards=token_rewards, correct=correct,
                 metrics={"prm_step_prob": mean_p,
                          "prm_steps": float(step_mask.sum(1).mean())})


def make_reward_fn(name: str, **options) -> Callable[[Rollout], Rewards]:
  """`rollout -> Rewards` for the registered reward `name` with its options bound."""
  fn = get_reward(name)
  return lambda rollout: fn(rollout, **options)


# --------------------------------------------------------------------------- rollouts


def training_batch(prompts: Sequence[Sequence[int]], tokens: np.ndarray, lengths: np.ndarray,
                   logprobs: np.ndarray, *, max_prompt_length: int, pad_id: int) -> dict:
  """numpy batch of `prompt ++ completion` rows (row i: prompt `prompts[i]`).

  Args: completion `tokens`, `logprobs` [N, T] and `lengths` [N] from the sampler.
  Returns tokens, attention_mask [N, P + T] (P = max_prompt_length); completion_index
  (position whose logits predict completion token t: `len(prompt) - 1 + t`),
  completion_tokens, completion_mask, sampler_logprobs [N, T].
  """
  n, t = tokens.shape
  if len(prompts) != n:
    raise ValueError(f"{len(prompts)} prompts for {n} completions")
  prompt_len = np.array([len(p) for p in prompts], np.int32)
  if prompt_len.max() > max_prompt_length:
    raise ValueError(f"a prompt has {prompt_len.max()} tokens > max_prompt_length "
                     f"{max_prompt_length}")
  width = max_prompt_length + t
  rows = np.full((n, width), pad_id, np.int32)
  attention = np.zeros((n, width), np.int32)
  for i, (p, length) in enumerate(zip(prompts, lengths)):
    rows[i, :len(p)] = p
    rows[i, len(p):len(p) + length] = tokens[i, :length]
    attention[i, :len(p) + length] = 1
  steps = np.arange(t)
  return {"tokens": rows, "attention_mask": attention,
          "completion_index": (prompt_len[:, None] - 1 + steps[None]).astype(np.int32),
          "completion_tokens": tokens.astype(np.int32),
          "completion_mask": (steps[None] < lengths[:, None]).astype(np.int32),
          "sampler_logprobs": logprobs.astype(np.float32)}


def sample_rollout(config, params, tokenizer, problems: Sequence[arithmetic.Problem], *,
                   group_size: int, max_new_tokens: int, rng,
                   max_prompt_length: int | None = None,
                   temperature: float = 1.0) -> tuple[Rollout, dict | None]:
  """G completions per problem at `temperature` (no top-k/top-p), stopping at EOS.

  Returns the host `Rollout` and, when `max_prompt_length` is given, the numpy
  training batch of `training_batch` (else None).
  """
  prompts = [[tokenizer.bos_id] + tokenizer.encode(p.prompt) for p in problems]
  out = generate(config, params, prompts, max_new_tokens=max_new_tokens,
                 temperature=temperature, stop_tokens=(tokenizer.eos_id,), num_samples=group_size, rng=rng,
                 pad_id=tokenizer.pad_id)
  rows = [i for i in range(len(problems)) for _ in range(group_size)]
  has_eos = np.array([n > 0 and row[n - 1] == tokenizer.eos_id
                      for row, n in zip(out.tokens, out.lengths)], bool)
  rollout = Rollout(
      problems=[problems[i] for i in rows], prompts=[problems[i].prompt for i in rows],
      texts=[decode_sampled(tokenizer, ids) for ids in out.completions()], tokens=out.tokens,
      lengths=out.lengths, has_eos=has_eos, group_size=group_size,
      separator_id=tokenizer.token_to_id(arithmetic.STEP_SEPARATOR))
  if max_prompt_length is None:
    return rollout, None
  batch = training_batch([prompts[i] for i in rows], out.tokens, out.lengths, out.logprobs,
                         max_prompt_length=max_prompt_length, pad_id=tokenizer.pad_id)
  return rollout, batch


def with_rewards(batch: dict, rollout: Rollout, rewards: Rewards) -> dict:
  """The training batch plus `scores` [N] (NaN -> 0), `token_rewards` [N, T], `has_eos` [N]."""
  return {**batch, "scores": np.nan_to_num(rewards.scores).astype(np.float32),
          "token_rewards": rewards.token_rewards.astype(np.float32),
          "has_eos": rollout.has_eos.astype(bool)}


def informative_groups(returns: np.ndarray, group_size: int, keep: int) -> np.ndarray:
  """Indices of `keep` groups, those whose returns differ first (DAPO dynamic sampling).

  A group whose G returns are all equal has zero group advantage and teaches nothing;
  over-sampling prompts and updating on the informative groups spends the update on
  signal. Groups beyond the informative ones fill the remaining slots (fixed shapes).
  Shapes: returns [N] -> [keep] group indices, ascending within each class.
  """
  spread = np.ptp(returns.reshape(-1, group_size), axis=1)
  if not 0 < keep <= spread.shape[0]:
    raise ValueError(f"keep={keep} groups out of {spread.shape[0]}")
  order = np.concatenate([np.flatnonzero(spread > 0), np.flatnonzero(spread == 0)])
  return np.sort(order[:keep])


def take_groups(batch: dict, groups: np.ndarray, group_size: int) -> dict:
  """Rows of the training batch that belong to `groups` (groups stay adjacent)."""
  rows = (groups[:, None] * group_size + np.arange(group_size)[None]).reshape(-1)
  return {k: v[rows] for k, v in batch.items()}


def rollout_metrics(rollout: Rollout, rewards: Rewards) -> dict:
  """Host metrics of one step: return mean/std, accuracy, length, solved/failed groups."""
  returns = rewards.returns
  solved = rewards.correct.reshape(-1, rollout.group_size).mean(axis=1)
  return {"reward_mean": float(returns.mean()), "reward_std": float(returns.std()),
          "accuracy": float(rewards.correct.mean()),
          "response_length": float(rollout.lengths.mean()),
          "eos_fraction": float(rollout.has_eos.mean()),
          "groups_all_correct": float((solved == 1).mean()),
          "groups_all_wrong": float((solved == 0).mean()), **rewards.metrics}


# --------------------------------------------------------------------------- evaluation


def greedy_correct(config, params, tokenizer, problems, *, max_new_tokens: int,
                   batch_size: int = 100) -> np.ndarray:
  """Per-problem correctness `[P]` (bool) of greedy decoding."""
  correct = []
  for start in range(0, len(problems), batch_size):
    chunk = problems[start:start + batch_size]
    prompts = [[tokenizer.bos_id] + tokenizer.encode(p.prompt) for p in chunk]
    out = generate(config, params, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                   stop_tokens=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    correct += [arithmetic.is_correct(decode_sampled(tokenizer, ids), p)
                for p, ids in zip(chunk, out.completions())]
  return np.array(correct, dtype=bool)


def evaluate(config, params, tokenizer, problems, *, max_new_tokens: int,
             maj_k: int = 0, maj_problems: int = 0, rng=None, batch_size: int = 100) -> dict:
  """Held-out greedy pass@1 (overall and per K) and per-problem correctness
  (`greedy_correct`, for paired comparisons); with `maj_k`, also sampled pass@1 and maj@k
  (temperature 1) on `maj_problems` problems evenly spaced through `problems`."""
  correct = greedy_correct(config, params, tokenizer, problems, max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
  ops = np.array([p.num_ops for p in problems])
  result = {"pass1_greedy": float(correct.mean()), "greedy_correct": correct.astype(int).tolist()}
  result.update({f"pass1_greedy_k{k}": float(correct[ops == k].mean()) for k in sorted(set(ops))})
  if maj_k and maj_problems:
    picks = np.linspace(0, len(problems) - 1, min(maj_problems, len(problems))).astype(int)
    subset = [problems[i] for i in picks]
    rollout, _ = sample_rollout(config, params, tokenizer, subset, group_size=maj_k,
                                max_new_tokens=max_new_tokens, rng=rng)
    answers = [arithmetic.extract_answer(t) for t in rollout.texts]
    votes = [majority_vote(answers[i * maj_k:(i + 1) * maj_k]).answer for i in range(len(subset))]
    result["pass1_sampled"] = float(rollout.correct.mean())
    result[f"maj{maj_k}"] = float(np.mean([v == p.answer for v, p in zip(votes, subset)]))
  return result


class RLStep:
  """The host side of one RL step, `(state, prompt batch) -> (state, metrics)` for `loop.fit`.

  Samples with the state's params and `fold_in(state.rng, state.step)`, scores the
  completions with `reward_fn`, and calls the jitted `update`. `latest` holds the last
  state so that periodic evaluation can read its params.
  """

  def __init__(self, config, tokenizer, problems, reward_fn, update, *,
               group_size: int, max_new_tokens: int, max_prompt_length: int,
               update_groups: int = 0, temperature: float = 1.0):
    self.config, self.tokenizer, self.problems = config, tokenizer, problems
    self.reward_fn, self.update = reward_fn, update
    self.group_size, self.max_new_tokens = group_size, max_new_tokens
    self.max_prompt_length = max_prompt_length
    self.update_groups = update_groups  # 0: update on every sampled group
    self.temperature = temperature
    self.latest = None

  def __call__(self, state, batch: dict):
    t0 = time.perf_counter()
    problems = [self.problems[int(i)] for i in np.asarray(batch["index"])]
    key = jax.random.fold_in(state.rng, state.step)
    rollout, train_batch = sample_rollout(
        self.config, state.params["policy"], self.tokenizer, problems,
        group_size=self.group_size, max_new_tokens=self.max_new_tokens, rng=key,
        max_prompt_length=self.max_prompt_length, temperature=self.temperature)
    t_sample = time.perf_counter() - t0
    rewards = self.reward_fn(rollout)
    train_batch = with_rewards(train_batch, rollout, rewards)
    extra = {}
    if self.update_groups:
      groups = informative_groups(rewards.returns, self.group_size, self.update_groups)
      train_batch = take_groups(train_batch, groups, self.group_size)
      spread = np.ptp(rewards.returns.reshape(-1, self.group_size)[groups], axis=1)
      extra["update_informative_fraction"] = float(np.mean(spread > 0))
    state, metrics = self.update(state, jax.tree.map(jnp.asarray, train_batch))
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - t0
    self.latest = state
    return state, {**metrics, **rollout_metrics(rollout, rewards), **extra,
                   "sample_seconds": t_sample, "step_seconds": seconds,
                   "tokens_per_s": float(rollout.lengths.sum()) / seconds}
