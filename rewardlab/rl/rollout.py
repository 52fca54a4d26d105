"""The host side of an RL step: sample completions, build the fixed-shape update batch.

`sample_rollout` draws G completions per problem with the sampler and returns the host
`Rollout` (texts, tokens, the task that judges them) plus the numpy training batch
(`prompt ++ completion` rows); `with_rewards` adds the rewards to that batch;
`informative_groups` / `take_groups` keep the groups whose returns differ (DAPO dynamic
sampling); `RLStep` is one whole step for `loop.fit` (sample, reward, jitted update).
Prompts are token ids `tokenizer.encode(source.prompt(problem), add_bos=True)`: the
task's prompt text, wrapped in the tokenizer's chat template by the task source when
configured so.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rewardlab.data.tokenizers import decode_sampled
from rewardlab.sampling import generate
from rewardlab.sampling.generate import place_global_batch


@dataclasses.dataclass
class Rollout:
  """Completions of one RL step on the host; row i answers `problems[i]`.

  tokens [N, T] completion ids padded after `lengths` [N] (EOS included when produced);
  texts [N] decoded completions without specials; has_eos [N] bool. `task` judges the
  texts (`rewardlab.tasks.Task`); `tokenizer` decoded them; `step_separator` is the
  string that ends a reasoning step (it may span several tokens).
  """

  problems: list
  prompts: list[str]
  texts: list[str]
  tokens: np.ndarray
  lengths: np.ndarray
  has_eos: np.ndarray
  group_size: int
  task: Any
  tokenizer: Any
  step_separator: str = "\n"

  def __post_init__(self):
    n = len(self.problems)
    for name in ("prompts", "texts", "tokens", "lengths", "has_eos"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"Rollout.{name} has {len(getattr(self, name))} rows, expected {n}")
    if self.group_size < 1 or n % self.group_size:
      raise ValueError(f"Rollout.group_size={self.group_size} must divide {n} rows")
    if not self.step_separator:
      raise ValueError("Rollout.step_separator must be a non-empty string")

  def rows(self, start: int, stop: int) -> "Rollout":
    """The rollout of rows `start:stop` (whole groups)."""
    if start % self.group_size or stop % self.group_size:
      raise ValueError(f"Rollout.rows({start}, {stop}) splits a group of {self.group_size}")
    return dataclasses.replace(
        self, problems=self.problems[start:stop], prompts=self.prompts[start:stop],
        texts=self.texts[start:stop], tokens=self.tokens[start:stop],
        lengths=self.lengths[start:stop], has_eos=self.has_eos[start:stop])

  @property
  def correct(self) -> np.ndarray:
    return np.array([self.task.is_correct(t, p) for t, p in zip(self.texts, self.problems)],
                    dtype=bool)

  def step_ends(self) -> list[np.ndarray]:
    """Per completion, the token index that completes each step separator of its text
    (`step_ends` of its tokens)."""
    return [step_ends(self.tokenizer, row[:n], self.step_separator)
            for row, n in zip(self.tokens, self.lengths)]


def step_ends(tokenizer, ids: Sequence[int], separator: str) -> np.ndarray:
  """Index of the token that completes the k-th `separator` of the decoded text, for each
  separator the text holds: `[K]` int, ascending (equal entries when one token holds
  several separators). Found on decoded prefixes (binary search), so a separator of
  several tokens, or a token that holds a separator and more, works for any tokenizer."""
  ids = [int(i) for i in ids]
  count = lambda j: decode_sampled(tokenizer, ids[:j + 1]).count(separator)
  ends, lo = [], 0
  for k in range(1, decode_sampled(tokenizer, ids).count(separator) + 1):
    hi = len(ids) - 1
    while lo < hi:
      mid = (lo + hi) // 2
      if count(mid) >= k:
        hi = mid
      else:
        lo = mid + 1
    ends.append(lo)
  return np.array(ends, np.int64)


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


def prompt_ids(tokenizer, source, problems: Sequence) -> tuple[list[str], list[list[int]]]:
  """`(texts, ids)` of the prompts of `problems`: `source.prompt` encoded after BOS."""
  texts = [source.prompt(p) for p in problems]
  return texts, [tokenizer.encode(t, add_bos=True) for t in texts]


def sample_rollout(config, params, tokenizer, source, problems: Sequence, *,
                   group_size: int, max_new_tokens: int, rng,
                   max_prompt_length: int | None = None,
                   temperature: float = 1.0, mesh=None) -> tuple[Rollout, dict | None]:
  """G completions per problem at `temperature` (no top-k/top-p), stopping at EOS.

  `source` gives the prompt text (`source.prompt`), the task and the step separator
  (a `rewardlab.tasks.source.TaskSource`). Returns the host `Rollout` and, when
  `max_prompt_length` is given, the numpy training batch of `training_batch` (else None).
  With a `mesh` the prompts are sharded over its data axes (`generate(mesh=...)`).
  """
  texts, prompts = prompt_ids(tokenizer, source, problems)
  out = generate(config, params, prompts, max_new_tokens=max_new_tokens,
                 temperature=temperature, stop_tokens=(tokenizer.eos_id,),
                 num_samples=group_size, rng=rng, pad_id=tokenizer.pad_id, mesh=mesh)
  rows = [i for i in range(len(problems)) for _ in range(group_size)]
  has_eos = np.array([n > 0 and row[n - 1] == tokenizer.eos_id
                      for row, n in zip(out.tokens, out.lengths)], bool)
  rollout = Rollout(
      problems=[problems[i] for i in rows], prompts=[texts[i] for i in rows],
      texts=[decode_sampled(tokenizer, ids) for ids in out.completions()], tokens=out.tokens,
      lengths=out.lengths, has_eos=has_eos, group_size=group_size, task=source.task,
      tokenizer=tokenizer, step_separator=source.step_separator)
  if max_prompt_length is None:
    return rollout, None
  batch = training_batch([prompts[i] for i in rows], out.tokens, out.lengths, out.logprobs,
                         max_prompt_length=max_prompt_length, pad_id=tokenizer.pad_id)
  return rollout, batch


def with_rewards(batch: dict, rollout: Rollout, rewards) -> dict:
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


def rewards_by_process(reward_fn: Callable, rollout: Rollout, num_processes: int,
                       process_index: int):
  """`reward_fn(rollout)` with each of `num_processes` processes scoring its own share of
  whole groups (contiguous, in process order) and the shares gathered, so that every
  process holds the rewards of all rows (`process_allgather`; every process calls this).
  Group advantages never straddle processes. The reward metrics are the mean over the
  (equal) shares. One process: `reward_fn(rollout)`."""
  if num_processes == 1:
    return reward_fn(rollout)
  from jax.experimental import multihost_utils
  groups = len(rollout.problems) // rollout.group_size
  if groups % num_processes:
    raise ValueError(f"{groups} groups do not split over {num_processes} processes: make "
                     f"rollout.batch_size a multiple of the process count")
  share = groups // num_processes * rollout.group_size
  local = reward_fn(rollout.rows(process_index * share, (process_index + 1) * share))
  names = sorted(local.metrics)
  gathered = multihost_utils.process_allgather(
      {"scores": local.scores, "token_rewards": local.token_rewards,
       "correct": local.correct.astype(np.int32),
       "metrics": np.array([float(local.metrics[k]) for k in names], np.float64)[None]},
      tiled=True)
  return dataclasses.replace(
      local, scores=np.asarray(gathered["scores"]),
      token_rewards=np.asarray(gathered["token_rewards"]),
      correct=np.asarray(gathered["correct"]).astype(bool),
      metrics=dict(zip(names, np.asarray(gathered["metrics"]).mean(axis=0).tolist())))


def rollout_metrics(rollout: Rollout, rewards) -> dict:
  """Host metrics of one step: return mean/std, accuracy, length, solved/failed groups."""
  returns = rewards.returns
  solved = rewards.correct.reshape(-1, rollout.group_size).mean(axis=1)
  return {"reward_mean": float(returns.mean()), "reward_std": float(returns.std()),
          "accuracy": float(rewards.correct.mean()),
          "response_length": float(rollout.lengths.mean()),
          "eos_fraction": float(rollout.has_eos.mean()),
          "groups_all_correct": float((solved == 1).mean()),
          "groups_all_wrong": float((solved == 0).mean()), **rewards.metrics}


class RLStep:
  """The host side of one RL step, `(state, prompt batch) -> (state, metrics)` for `loop.fit`.

  Samples with the state's policy (`policy_params(state.params)`: the LoRA-merged
  one; default `params["policy"]`) and `fold_in(rng, state.step)`, scores the
  completions with `reward_fn`, and calls the jitted `update` (with a `mesh`, sampling
  and the update batch are sharded over its data axes).

  Under `jax.distributed` (a mesh over several processes) every process receives the
  same global prompt batch; each process's devices sample their rows of it (per-row
  randomness `fold_in(key, global row)`, as in one process), each process scores its
  own share of whole groups (`rewards_by_process`), and the update runs on the global
  batch: the step equals the single-process one.
  """

  def __init__(self, config, tokenizer, source, problems, reward_fn: Callable, update, *,
               rng, group_size: int, max_new_tokens: int, max_prompt_length: int,
               update_groups: int = 0, temperature: float = 1.0, mesh=None,
               policy_params: Callable | None = None):
    self.config, self.tokenizer, self.source, self.problems = config, tokenizer, source, problems
    self.reward_fn, self.update, self.rng = reward_fn, update, rng
    self.group_size, self.max_new_tokens = group_size, max_new_tokens
    self.max_prompt_length = max_prompt_length
    self.update_groups = update_groups  # 0: update on every sampled group
    self.temperature = temperature
    self.mesh = mesh
    self.policy_params = policy_params or (lambda params: params["policy"])

  def __call__(self, state, batch: dict):
    t0 = time.perf_counter()
    problems = [self.problems[int(i)] for i in np.asarray(batch["index"])]
    key = jax.random.fold_in(self.rng, state.step)
    rollout, train_batch = sample_rollout(
        self.config, self.policy_params(state.params), self.tokenizer, self.source, problems,
        group_size=self.group_size, max_new_tokens=self.max_new_tokens, rng=key,
        max_prompt_length=self.max_prompt_length, temperature=self.temperature, mesh=self.mesh)
    t_sample = time.perf_counter() - t0
    processes = 1 if self.mesh is None else jax.process_count()
    rewards = rewards_by_process(self.reward_fn, rollout, processes, jax.process_index())
    train_batch = with_rewards(train_batch, rollout, rewards)
    extra = {}
    if self.update_groups:
      groups = informative_groups(rewards.returns, self.group_size, self.update_groups)
      train_batch = take_groups(train_batch, groups, self.group_size)
      spread = np.ptp(rewards.returns.reshape(-1, self.group_size)[groups], axis=1)
      extra["update_informative_fraction"] = float(np.mean(spread > 0))
    state, metrics = self.update(state, place_global_batch(train_batch, self.mesh))
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - t0
    return state, {**metrics, **rollout_metrics(rollout, rewards), **extra,
                   "sample_seconds": t_sample, "step_seconds": seconds,
                   "tokens_per_s": float(rollout.lengths.sum()) / seconds}
