"""Advantage estimators and masked statistics (SPECS §2).

- Group advantages (GRPO family): `A_i = (r_i - mean_group r) / scale`, scale one of
  `group` (Bessel std of the group + eps), `batch` (Bessel std of the batch + eps),
  `none` (Dr. GRPO).
- RLOO: `A_i = r_i - mean_{j != i} r_j`.
- GAE: `δ_t = r_t + γ V_{t+1} - V_t`, `A_t = δ_t + γ λ A_{t+1}` by a reverse scan,
  returns `R = A + V`.
- `whiten`: masked standardization.

Rewards of a group are adjacent: row `i` belongs to group `i // group_size`.
Missing rewards are given as NaN or by `valid=False`; they never enter a mean or std
and get A = 0, so a group whose rewards are all missing gives A = 0.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rewardlab.losses.registry import register_advantage_estimator

Array = jax.Array

# --------------------------------------------------------------------------- masks


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
  """Σ x·m over `axis`; positions with m = 0 never contribute, even if x is NaN/inf."""
  mask = mask.astype(bool)
  return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """Σ x·m / max(Σ m, 1) over `axis` (0 where nothing is valid)."""
  count = jnp.sum(mask.astype(jnp.float32), axis=axis)
  return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_var(x: Array, mask: Array, *, unbiased: bool = True) -> Array:
  """Variance of the valid entries of `x` (Bessel-corrected when `unbiased`)."""
  count = jnp.sum(mask.astype(jnp.float32))
  centered = jnp.where(mask.astype(bool), x - masked_mean(x, mask), 0.0)
  denom = count - 1.0 if unbiased else count
  return jnp.sum(centered**2) / jnp.maximum(denom, 1.0)


def last_valid_index(mask: Array) -> Array:
  """Index of the last valid position of each row: [B, T] -> [B] int32 (-1 if none)."""
  t = mask.shape[-1]
  positions = jnp.arange(t, dtype=jnp.int32)
  return jnp.max(jnp.where(mask.astype(bool), positions, -1), axis=-1)


def last_valid_one_hot(mask: Array) -> Array:
  """[B, T] float, 1 at the last valid position of each row (all 0 for empty rows)."""
  idx = last_valid_index(mask)
  return jax.nn.one_hot(idx, mask.shape[-1], dtype=jnp.float32)  # idx = -1 -> zeros


def whiten(x: Array, mask: Array, shift_mean: bool = True, eps: float = 1e-8) -> Array:
  """Masked whitening `(x - μ) / sqrt(σ² + eps)` with Bessel σ² over valid entries.

  With `shift_mean=False` the mean is added back (only the scale changes).
  Shapes: x, mask [...] -> [...]; invalid positions are 0 in the output.
  """
  mean = masked_mean(x, mask)
  var = masked_var(x, mask)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(mask.astype(bool), out, 0.0)


# --------------------------------------------------------------------------- groups


def _grouped(rewards: Array, group_size: int, valid: Array | None):
  """Rewards and validity reshaped to [N, G]; NaN rewards count as invalid."""
  if rewards.ndim != 1:
    raise ValueError(f"rewards must be [B], got shape {rewards.shape}")
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(
        f"group_size={group_size} must divide the batch size {rewards.shape[0]}")
  ok = ~jnp.isnan(rewards)
  if valid is not None:
    ok = ok & valid.astype(bool)
  r = jnp.where(ok, rewards, 0.0).astype(jnp.float32)
  return r.reshape(-1, group_size), ok.reshape(-1, group_size)


def group_advantages(rewards: Array, group_size: int, *, scale: str = "group",
                     eps: float = 1e-4, valid: Array | None = None) -> Array:
  """GRPO-family advantages `(r_i - mean_group r) / s`.

  Args:
    rewards: [B] scalar rewards, groups of `group_size` adjacent rows; NaN = missing.
    group_size: G, samples per prompt.
    scale: `group` -> s = std_group + eps; `batch` -> s = std_batch + eps;
      `none` -> s = 1 (Dr. GRPO). Standard deviations use Bessel's correction
      over valid rewards (a group with fewer than 2 valid rewards has std 0).
    eps: added to the std.
    valid: optional [B] bool; invalid rows are ignored and get A = 0.
  Returns:
    [B] float32 advantages.
  """
  r, ok = _grouped(rewards, group_size, valid)  # [N, G]
  count = jnp.sum(ok, axis=1, keepdims=True).astype(jnp.float32)  # [N, 1]
  mean = jnp.sum(r, axis=1, keepdims=True) / jnp.maximum(count, 1.0)
  centered = jnp.where(ok, r - mean, 0.0)
  if scale == "group":
    var = jnp.sum(centered**2, axis=1, keepdims=True) / jnp.maximum(count - 1.0, 1.0)
    adv = centered / (jnp.sqrt(var) + eps)
  elif scale == "batch":
    adv = centered / (jnp.sqrt(masked_var(r, ok)) + eps)
  elif scale == "none":
    adv = centered
  else:
    raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
  return adv.reshape(-1)


def rloo_advantages(rewards: Array, group_size: int, *,
                    valid: Array | None = None) -> Array:
  """REINFORCE leave-one-out: `A_i = r_i - mean_{j != i, j valid} r_j`.

  Shapes: rewards [B] -> [B]. Rows that are invalid, or alone in their group, get 0.
  """
  r, ok = _grouped(rewards, group_size, valid)  # [N, G]
  count = jnp.sum(ok, axis=1, keepdims=True).astype(jnp.float32)
  total = jnp.sum(r, axis=1, keepdims=True)
  others = (total - r) / jnp.maximum(count - 1.0, 1.0)
  adv = jnp.where(ok & (count > 1.0), r - others, 0.0)
  return adv.reshape(-1)


register_advantage_estimator("grpo")(functools.partial(group_advantages, scale="group"))
register_advantage_estimator("grpo_batch")(
    functools.partial(group_advantages, scale="batch"))
register_advantage_estimator("dr_grpo")(functools.partial(group_advantages, scale="none"))
register_advantage_estimator("rloo")(rloo_advantages)


# --------------------------------------------------------------------------- GAE


def gae(rewards: Array, values: Array, mask: Array, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Array, Array]:
  """Generalized advantage estimation over the valid tokens of each row.

  `δ_t = r_t + γ V_{t'} - V_t` and `A_t = δ_t + γ λ A_{t'}`, where t' is the next
  valid position after t; after the last valid token V = A = 0. Computed with a
  reverse `lax.scan` over T; invalid positions are skipped (their rewards and values
  are ignored) and get A = R = 0.

  Args:
    rewards, values, mask: [B, T].
  Returns:
    (advantages [B, T], returns [B, T]) with returns = A + V at valid positions.
  """
  valid = mask.astype(bool)
  rewards = rewards.astype(jnp.float32)
  values = values.astype(jnp.float32)

  def step(carry, xs):
    next_value, next_adv = carry  # [B], [B]
    r_t, v_t, m_t = xs
    delta = r_t + gamma * next_value - v_t
    adv = delta + gamma * lam * next_adv
    carry = (jnp.where(m_t, v_t, next_value), jnp.where(m_t, adv, next_adv))
    return carry, jnp.where(m_t, adv, 0.0)

  b = rewards.shape[0]
  init = (jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.float32))
  xs = (rewards.T, values.T, valid.T)  # scan over T
  _, adv_t = jax.lax.scan(step, init, xs, reverse=True)
  advantages = adv_t.T
  returns = jnp.where(valid, advantages + values, 0.0)
  return advantages, returns
