"""Reward shaping for RL with verifiable or process rewards (SPECS §2, "Reward shaping").

- Clip (PRM as a dense reward): `r_k <- min(r_k - η, 0)`, so no step earns a positive
  reward and repeating correct-looking steps cannot farm reward.
- Delta: `r_k <- r_k - r_{k+1}` for k < K, `r_K <- 0`; the return from step k
  telescopes to `r_k - r_K` and is bounded. Clip-Delta = Clip then Delta.
- The success (outcome) reward is added at the last step (`dense_returns`).
- DLER truncation penalty: reward `1[correct and length <= L]`.
- TTRL majority reward: `r_i = 1[ans_i = majority answer of the group]`.

Step rewards are [B, K] with a step mask whose valid steps are a prefix of each row
(right padding); padded steps get reward 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rewardlab.losses.advantages import last_valid_one_hot

Array = jax.Array


def clip_reward(step_rewards: Array, mask: Array, eta: float) -> Array:
  """Clip mechanism `min(r_k - η, 0)` on valid steps: [B, K] -> [B, K]."""
  return jnp.where(mask.astype(bool), jnp.minimum(step_rewards - eta, 0.0), 0.0)


def delta_reward(step_rewards: Array, mask: Array) -> Array:
  """Delta mechanism `r_k - r_{k+1}` for k before the last valid step, 0 at the last.

  Shapes: [B, K] -> [B, K]. Σ_{j >= k} of the output equals `r_k - r_K`.
  """
  valid = mask.astype(bool)
  r = jnp.where(valid, step_rewards, 0.0)
  next_r = jnp.pad(r[:, 1:], ((0, 0), (0, 1)))
  next_valid = jnp.pad(valid[:, 1:], ((0, 0), (0, 1)))
  return jnp.where(valid & next_valid, r - next_r, 0.0)


def clip_delta(step_rewards: Array, mask: Array, eta: float) -> Array:
  """Clip-Delta: `delta_reward(clip_reward(r, η))`: [B, K] -> [B, K]."""
  return delta_reward(clip_reward(step_rewards, mask, eta), mask)



def add_success_reward(step_rewards: Array, mask: Array, success: Array) -> Array:
  """Dense step rewards with the outcome reward added at the last valid step.

  Shapes: step_rewards, mask [B, K]; success [B] -> [B, K].
  """
  valid = mask.astype(bool)
  dense = jnp.where(valid, step_rewards, 0.0)
  return dense + last_valid_one_hot(valid) * success.astype(jnp.float32)[:, None]


def dense_returns(step_rewards: Array, mask: Array, success: Array, *,
                  gamma: float = 1.0) -> Array:
  """Returns-to-go `G_k = Σ_{j >= k} γ^{j-k} r'_j` of the shaped rewards plus success.

  `r'` is `add_success_reward(step_rewards, mask, success)`; shapes [B, K], [B, K],
  [B] -> [B, K] (0 at padded steps). `G[:, 0]` is the episode return.
  """
  valid = mask.astype(bool)
  rewards = add_success_reward(step_rewards, valid, success)

  def step(next_return, xs):
    r_k, m_k = xs
    g = jnp.where(m_k, r_k + gamma * next_return, next_return)
    return g, jnp.where(m_k, g, 0.0)

  init = jnp.zeros(rewards.shape[:1], jnp.float32)
  _, g = jax.lax.scan(step, init, (rewards.T, valid.T), reverse=True)
  return g.T


def dler_reward(correct: Array, lengths: Array, max_len: int) -> Array:
  """DLER truncation penalty: `1[correct and length <= L]`: [B], [B] -> [B] float32."""
  return (correct.astype(bool) & (lengths <= max_len)).astype(jnp.float32)


def group_majority(answer_ids: Array, group_size: int,
                   valid: Array | None = None) -> tuple[Array, Array]:
  """Majority answer per group (ties -> the answer seen first; invalid answers never win).

  Args:
    answer_ids: [B] int canonical answer ids, groups of `group_size` adjacent rows.
    valid: [B] bool (unparsable answers are invalid).
  Returns:
    (majority [N] int, has_majority [N] bool); a group with no valid answer has
    has_majority False.
  """
  if answer_ids.ndim != 1 or group_size < 1 or answer_ids.shape[0] % group_size:
    raise ValueError(f"answer_ids must be [B] with B divisible by group_size="
                     f"{group_size}, got shape {answer_ids.shape}")
  if valid is None:
    valid = jnp.ones(answer_ids.shape, bool)
  a = answer_ids.reshape(-1, group_size)  # [N, G]
  ok = valid.astype(bool).reshape(-1, group_size)
  same = (a[:, :, None] == a[:, None, :]) & ok[:, None, :]  # [N, G, G]
  counts = jnp.where(ok, jnp.sum(same, axis=-1), -1)  # [N, G]
  first = jnp.argmax(counts, axis=-1)  # first index of the top count = first seen
  majority = jnp.take_along_axis(a, first[:, None], axis=-1)[:, 0]
  return majority, jnp.any(ok, axis=-1)


def ttrl_majority_reward(answer_ids: Array, group_size: int,
                         valid: Array | None = None) -> Array:
  """TTRL reward `r_i = 1[ans_i = majority of its group]`, 0 for invalid answers.

  Shapes: answer_ids [B] int, valid [B] bool -> [B] float32.
  """
  majority, has_majority = group_majority(answer_ids, group_size, valid)
  a = answer_ids.reshape(-1, group_size)
  ok = jnp.ones(a.shape, bool) if valid is None else valid.astype(bool).reshape(a.shape)
  hit = ok & has_majority[:, None] & (a == majority[:, None])
  return hit.astype(jnp.float32).reshape(-1)
