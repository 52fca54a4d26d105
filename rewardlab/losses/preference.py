"""Reward-model losses on preference pairs and ratings (SPECS §1).

- Bradley-Terry: `L = -mean log σ(r_c - r_r - margin) + λ mean((r_c + r_r)²)`.
- Scaled BT (HelpSteer2-Preference): `L = -mean s · log σ(r_c - r_r)`, s in {1, 2, 3}.
- Regression (HelpSteer2 attributes): MSE per attribute, averaged over attributes.
- GenARM: `L = -mean log σ(β (log π_r(y_w) - log π_r(y_l)) - γ)`, reward
  `r = β Σ_t log π_r(y_t | x, y_<t)`.
- DPO: `r = β (log π(y) - log π_ref(y))`, `L = -mean log σ(r_w - r_l)`.

Training losses return `(loss, metrics)` with scalar metrics. Accuracy is strict
(`r_c > r_r`; ties count as wrong). All log-sigmoids use `jax.nn.log_sigmoid`, which is
finite with finite gradients for any finite input.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rewardlab.losses.advantages import masked_mean, masked_sum

Array = jax.Array


def _weighted_mean(x: Array, weights: Array | None) -> Array:
  """Σ w x / Σ w (plain mean when `weights` is None)."""
  if weights is None:
    return jnp.mean(x)
  weights = weights.astype(jnp.float32)
  return jnp.sum(weights * x) / jnp.maximum(jnp.sum(weights), 1e-12)


def _pair_metrics(r_chosen: Array, r_rejected: Array, weights: Array | None) -> dict:
  return {
      "accuracy": _weighted_mean((r_chosen > r_rejected).astype(jnp.float32), weights),
      "margin": _weighted_mean(r_chosen - r_rejected, weights),
      "reward_chosen": _weighted_mean(r_chosen, weights),
      "reward_rejected": _weighted_mean(r_rejected, weights),
  }


def bradley_terry_loss(r_chosen: Array, r_rejected: Array, *, margin: Array | None = None,
                       center_coef: float = 0.0,
                       weights: Array | None = None) -> tuple[Array, dict]:
  """Bradley-Terry pairwise loss for an outcome reward model.

  `L = Σ_b w_b [-log σ(r_c - r_r - margin) + λ (r_c + r_r)²] / Σ_b w_b`.

  Args:
    r_chosen, r_rejected: [B] scalar rewards.
    margin: optional [B] required reward gap (only when the data has one).
    center_coef: λ of the centering term (0.01 is the usual value when used).
    weights: optional [B] non-negative pair weights (0 drops a padded pair); the
      loss and the metrics are weighted means.
  Returns:
    loss, metrics {accuracy, margin, reward_chosen, reward_rejected, center}.
  """
  diff = r_chosen - r_rejected
  if margin is not None:
    diff = diff - margin
  nll = -jax.nn.log_sigmoid(diff)
  center = (r_chosen + r_rejected) ** 2
  loss = _weighted_mean(nll + center_coef * center, weights)
  metrics = _pair_metrics(r_chosen, r_rejected, weights)
  metrics["center"] = _weighted_mean(center, weights)
  return loss, metrics


def scaled_bt_loss(r_chosen: Array, r_rejected: Array, strength: Array, *,
                   weights: Array | None = None) -> tuple[Array, dict]:
  """Scaled Bradley-Terry: `L = mean_b -s_b log σ(r_c - r_r)`.

  Shapes: r_chosen, r_rejected, strength [B] (strength in {1, 2, 3}).
  """
  nll = -strength.astype(jnp.float32) * jax.nn.log_sigmoid(r_chosen - r_rejected)
  return _weighted_mean(nll, weights), _pair_metrics(r_chosen, r_rejected, weights)


def regression_loss(pred: Array, target: Array, mask: Array | None = None, *,
                    names: tuple[str, ...] | None = None) -> tuple[Array, dict]:
  """Multi-attribute regression: MSE of each attribute over its valid rows, averaged.

  `L = mean_k [Σ_b m_bk (p_bk - y_bk)² / Σ_b m_bk]` over attributes k with at least
  one valid row (an attribute with no labels in the batch is left out of the mean).

  Args:
    pred, target: [B, K] attribute scores.
    mask: optional [B, K] (missing ratings are 0).
    names: optional K attribute names for the metric keys (default `mse/<k>`).
  Returns:
    loss, metrics {mse/<name> per attribute}.
  """
  if pred.shape != target.shape or pred.ndim != 2:
    raise ValueError(f"pred and target must both be [B, K], got {pred.shape}, {target.shape}")
  if mask is None:
    mask = jnp.ones(pred.shape, bool)
  k = pred.shape[1]
  names = tuple(str(i) for i in range(k)) if names is None else tuple(names)
  if len(names) != k:
    raise ValueError(f"names has {len(names)} entries for K={k} attributes")
  per_attr = masked_mean((pred - target) ** 2, mask, axis=0)  # [K]
  present = jnp.any(mask.astype(bool), axis=0)  # [K]
  loss = masked_mean(per_attr, present)
  metrics = {f"mse/{n}": per_attr[i] for i, n in enumerate(names)}
  return loss, metrics


def genarm_reward(token_logps: Array, mask: Array, beta: float = 0.05) -> Array:
  """GenARM sequence reward `β Σ_t m_t log π_r(y_t | x, y_<t)`: [B, T] -> [B]."""
  return beta * masked_sum(token_logps, mask, axis=-1)


def genarm_loss(logp_chosen_sum: Array, logp_rejected_sum: Array, *, beta: float = 0.05,
                gamma: float = 0.0) -> tuple[Array, dict]:
  """GenARM pair loss `-mean log σ(β (log π_r(y_w) - log π_r(y_l)) - γ)`.

  Shapes: logp_chosen_sum, logp_rejected_sum [B] (sums of token log-probs of the
  reward LM, no length normalization). Metrics are on the rewards β·log π_r.
  """
  r_c, r_r = beta * logp_chosen_sum, beta * logp_rejected_sum
  loss = -jnp.mean(jax.nn.log_sigmoid(r_c - r_r - gamma))
  return loss, _pair_metrics(r_c, r_r, None)


def dpo_implicit_reward(policy_logps: Array, ref_logps: Array, beta: float) -> Array:
  """DPO implicit reward `β (log π(y|x) - log π_ref(y|x))`: [B] -> [B]."""
  return beta * (policy_logps - ref_logps)


def dpo_loss(policy_chosen_logps: Array, policy_rejected_logps: Array,
             ref_chosen_logps: Array, ref_rejected_logps: Array, *,
             beta: float) -> tuple[Array, dict]:
  """DPO loss `-mean log σ(r_w - r_l)` with implicit rewards (all inputs [B] sums)."""
  r_w = dpo_implicit_reward(policy_chosen_logps, ref_chosen_logps, beta)
  r_l = dpo_implicit_reward(policy_rejected_logps, ref_rejected_logps, beta)
  loss = -jnp.mean(jax.nn.log_sigmoid(r_w - r_l))
  return loss, _pair_metrics(r_w, r_l, None)


def sequence_logp_score(token_logps: Array, mask: Array, kind: str = "sum") -> Array:
  """Reference-free score of a sequence from its token log-probs: [B, T] -> [B].

  `sum`: Σ_t m_t log π(y_t); `mean`: the same divided by Σ_t m_t (length-normalized).
  """
  total = masked_sum(token_logps, mask, axis=-1)
  if kind == "sum":
    return total
  if kind == "mean":
    return total / jnp.maximum(jnp.sum(mask.astype(jnp.float32), axis=-1), 1.0)
  raise ValueError(f"kind must be 'sum' or 'mean', got {kind!r}")
