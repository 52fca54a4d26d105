"""Policy-gradient losses: the clipped surrogate of the GRPO family and PPO (SPECS §2).

Token-level importance ratio `ρ_t = exp(log π_t - log π_old,t)`; sequence level (GSPO)
`ρ = exp(masked_mean_t(log π - log π_old))`. Per-token loss

    ℓ_t = -min(ρ_t A, clip(ρ_t, 1 - ε, 1 + ε_high) A)  [+ β KL_t(π || π_ref)]

with the optional dual clip `ℓ_t = min(ℓ_t, -c A)` where A < 0. The normalization of
`Σ_t ℓ_t m_t` names the variant (`_NORMALIZERS`):
    grpo     mean over sequences of Σ_t ℓm / Σ_t m
    bnpo     Σ ℓm / Σ m over the local batch
    dr_grpo  Σ ℓm / (B · T_max)
    dapo     Σ ℓm / (active tokens in the global batch)

Log-ratios are clamped to ±20 before the exponential so that values and gradients
stay finite whatever the inputs; such tokens are clipped by the surrogate anyway
unless A < 0 without a dual clip.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from rewardlab.losses.advantages import last_valid_one_hot, masked_mean, masked_sum
from rewardlab.losses.registry import register_policy_loss

Array = jax.Array
_LOG_RATIO_CLAMP = 20.0


# --------------------------------------------------------------------------- KL

_KL_ESTIMATORS: dict[str, Callable[[Array], Array]] = {
    "k1": lambda d: -d,  # log π - log π_ref
    "k2": lambda d: 0.5 * d**2,
    "k3": lambda d: jnp.expm1(d) - d,  # e^Δ - Δ - 1
}


def kl_penalty(logp: Array, ref_logp: Array, kind: str = "k3") -> Array:
  """Per-token estimate of KL(π || π_ref) from samples of π.

  With Δ = log π_ref - log π: k1 = -Δ, k2 = Δ²/2, k3 = e^Δ - Δ - 1 (Δ clamped to
  ±20 for k3 so the exponential stays finite). Shapes: [...] -> [...].
  """
  try:
    estimator = _KL_ESTIMATORS[kind]
  except KeyError:
    raise ValueError(f"kind must be one of {sorted(_KL_ESTIMATORS)}, got {kind!r}") from None
  delta = ref_logp - logp
  if kind == "k3":
    delta = jnp.clip(delta, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
  return estimator(delta)


# --------------------------------------------------------------------------- normalization


def _psum(x: Array, axis_name: str | None) -> Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _norm_grpo(loss_sum_per_seq, mask, max_len, axis_name):
  per_seq = loss_sum_per_seq / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)  # [B]
  n_seq = jnp.asarray(mask.shape[0], jnp.float32)
  return _psum(jnp.sum(per_seq), axis_name) / _psum(n_seq, axis_name)


def _norm_bnpo(loss_sum_per_seq, mask, max_len, axis_name):
  del max_len, axis_name  # local batch by definition
  return jnp.sum(loss_sum_per_seq) / jnp.maximum(jnp.sum(mask), 1.0)


def _norm_dr_grpo(loss_sum_per_seq, mask, max_len, axis_name):
  t_max = mask.shape[-1] if max_len is None else max_len
  denom = jnp.asarray(mask.shape[0] * t_max, jnp.float32)
  return _psum(jnp.sum(loss_sum_per_seq), axis_name) / _psum(denom, axis_name)


def _norm_dapo(loss_sum_per_seq, mask, max_len, axis_name):
  del max_len
  tokens = _psum(jnp.sum(mask), axis_name)
  return _psum(jnp.sum(loss_sum_per_seq), axis_name) / jnp.maximum(tokens, 1.0)


_NORMALIZERS = {"grpo": _norm_grpo, "bnpo": _norm_bnpo, "dr_grpo": _norm_dr_grpo,
                "dapo": _norm_dapo}


# --------------------------------------------------------------------------- surrogate


def _log_ratio(logp: Array, old_logp: Array, mask: Array, importance: str) -> Array:
  """log ρ per token [B, T]: token level, or the sequence mean broadcast (GSPO)."""
  log_ratio = logp - old_logp
  if importance == "sequence":
    log_ratio = jnp.broadcast_to(masked_mean(log_ratio, mask, axis=-1)[:, None], mask.shape)
  elif importance != "token":
    raise ValueError(f"importance must be 'token' or 'sequence', got {importance!r}")
  return jnp.clip(log_ratio, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


def _global_mean(x: Array, mask: Array, axis_name: str | None) -> Array:
  num = _psum(masked_sum(x, mask), axis_name)
  return num / jnp.maximum(_psum(jnp.sum(mask), axis_name), 1.0)


def _check_surrogate_args(logp, old_logp, advantages, mask, dual_clip, ref_logp, kl_coef,
                          normalization):
  if normalization not in _NORMALIZERS:
    raise ValueError(f"normalization must be one of {sorted(_NORMALIZERS)}, "
                     f"got {normalization!r}")
  if logp.shape != old_logp.shape or logp.shape != mask.shape or logp.ndim != 2:
    raise ValueError(f"logp, old_logp, mask must be [B, T], got {logp.shape}, "
                     f"{old_logp.shape}, {mask.shape}")
  if advantages.shape not in (mask.shape[:1], mask.shape):
    raise ValueError(f"advantages must be [B] or [B, T], got {advantages.shape}")
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
  if ref_logp is None and isinstance(kl_coef, (int, float)) and kl_coef != 0.0:
    raise ValueError("kl_coef is non-zero but ref_logp was not given")


def _surrogate_metrics(ratio, clipped, adv, logp, old_logp, valid, epsilon, epsilon_high,
                       dual_clip, axis_name) -> dict:
  """Clip fractions, ratio statistics and KL to π_old; logged, never differentiated."""
  ratio, clipped, logp = jax.lax.stop_gradient((ratio, clipped, logp))
  low = (adv < 0) & (ratio < 1.0 - epsilon)
  high = (adv > 0) & (ratio > 1.0 + epsilon_high)
  frac = lambda b: _global_mean(b.astype(jnp.float32), valid, axis_name)
  ratio_max = jnp.max(jnp.where(valid, ratio, 0.0))
  metrics = dict(
      clip_fraction=frac(low | high),
      clip_fraction_low=frac(low),
      clip_fraction_high=frac(high),
      approx_kl=_global_mean(kl_penalty(logp, old_logp, "k3"), valid, axis_name),
      ratio_mean=_global_mean(ratio, valid, axis_name),
      ratio_max=ratio_max if axis_name is None else jax.lax.pmax(ratio_max, axis_name),
  )
  if dual_clip is not None:
    metrics["dual_clip_fraction"] = frac((adv < 0) & (jnp.maximum(ratio, clipped) > dual_clip))
  return metrics


def clipped_surrogate_loss(
    logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
    epsilon: float = 0.2, epsilon_high: float | None = None,
    dual_clip: float | None = None, importance: str = "token",
    ref_logp: Array | None = None, kl_coef: float = 0.0, kl_estimator: str = "k3",
    normalization: str = "grpo", max_len: int | None = None,
    axis_name: str | None = None) -> tuple[Array, dict]:
  """PPO-style clipped surrogate loss of the GRPO family (see the module docstring).

  Args:
    logp, old_logp: [B, T] log-probs of the sampled tokens under π and π_old.
    advantages: [B] (one per sequence) or [B, T].
    mask: [B, T] 1 for completion tokens.
    epsilon, epsilon_high: clip range [1 - ε, 1 + ε_high]; ε_high defaults to ε.
    dual_clip: c > 1 of the dual clip (None: off).
    importance: `token` or `sequence` (GSPO).
    ref_logp: [B, T] reference log-probs; adds `kl_coef · KL_t` per token.
    kl_estimator: k1, k2 or k3 (see `kl_penalty`).
    normalization: grpo, bnpo, dr_grpo or dapo.
    max_len: T_max of dr_grpo (default T).
    axis_name: inside `shard_map`, the data axis; the sums that define the grpo,
      dr_grpo and dapo normalizers and the metrics are taken across it, so the loss
      equals the single-device loss on the global batch (bnpo stays local).
  Returns:
    loss, metrics {clip_fraction, clip_fraction_low, clip_fraction_high,
    dual_clip_fraction (with dual_clip), approx_kl (to π_old, k3), ratio_mean,
    ratio_max, kl (to π_ref, with ref_logp)}.
  """
  _check_surrogate_args(logp, old_logp, advantages, mask, dual_clip, ref_logp, kl_coef,
                        normalization)
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  valid = mask.astype(bool)
  # Padding never reaches an exp or a gradient, whatever it holds.
  logp = jnp.where(valid, logp, 0.0)
  old_logp = jnp.where(valid, old_logp, 0.0)
  adv = advantages[:, None] if advantages.ndim == 1 else advantages
  adv = jnp.where(valid, adv, 0.0)  # [B, T]

  ratio = jnp.exp(_log_ratio(logp, old_logp, valid, importance))
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
  per_token = jnp.maximum(-adv * ratio, -adv * clipped)
  if dual_clip is not None:
    per_token = jnp.where(adv < 0, jnp.minimum(per_token, -dual_clip * adv), per_token)

  metrics = _surrogate_metrics(ratio, clipped, adv, logp, old_logp, valid, epsilon,
                               epsilon_high, dual_clip, axis_name)
  if ref_logp is not None:
    kl = kl_penalty(logp, jnp.where(valid, ref_logp, 0.0), kl_estimator)
    per_token = per_token + kl_coef * kl
    metrics["kl"] = _global_mean(jax.lax.stop_gradient(kl), valid, axis_name)

  maskf = valid.astype(jnp.float32)
  loss_sum_per_seq = jnp.sum(per_token * maskf, axis=-1)  # [B]
  loss = _NORMALIZERS[normalization](loss_sum_per_seq, maskf, max_len, axis_name)
  return loss, metrics


# --------------------------------------------------------------------------- PPO pieces


def ppo_token_rewards(scores: Array, kl: Array, mask: Array, *, kl_coef: float = 0.05,
                      has_eos: Array | None = None,
                      missing_eos_penalty: float | None = None) -> Array:
  """Per-token PPO rewards `r_t = -kl_coef · KL_t`, plus the score at the last valid token.

  Args:
    scores: [B] sequence scores from the reward model.
    kl: [B, T] per-token KL estimates to the reference.
    mask: [B, T] completion tokens (the score goes to the LAST valid one: the EOS or
      the last generated token, never the first pad).
    has_eos: [B] bool, whether the completion ended with EOS.
    missing_eos_penalty: subtracted from the score of rows without EOS.
  Returns:
    [B, T] rewards, 0 at padding.
  """
  score = scores.astype(jnp.float32)
  if missing_eos_penalty is not None:
    if has_eos is None:
      raise ValueError("missing_eos_penalty needs has_eos")
    score = score - missing_eos_penalty * (1.0 - has_eos.astype(jnp.float32))
  valid = mask.astype(bool)
  rewards = jnp.where(valid, -kl_coef * kl, 0.0)
  return rewards + last_valid_one_hot(valid) * score[:, None]


def value_loss(values: Array, old_values: Array, returns: Array, mask: Array,
               clip: float | None = 0.2) -> tuple[Array, dict]:
  """Clipped value loss `½ masked_mean(max((V - R)², (clip(V, V_old ± c) - R)²))`.

  Shapes: values, old_values, returns, mask [B, T]. `clip=None` drops the clipped term.
  """
  valid = mask.astype(bool)
  unclipped = (values - returns) ** 2
  if clip is None:
    per_token, clipped_on = unclipped, jnp.zeros_like(valid)
  else:
    v_clipped = old_values + jnp.clip(values - old_values, -clip, clip)
    clipped_sq = (v_clipped - returns) ** 2
    per_token = jnp.maximum(unclipped, clipped_sq)
    clipped_on = clipped_sq > unclipped
  loss = 0.5 * masked_mean(per_token, valid)
  metrics = {"value_clip_fraction": masked_mean(clipped_on.astype(jnp.float32), valid),
             "value_mean": masked_mean(values, valid)}
  return loss, metrics


def entropy_from_logits(logits: Array, mask: Array) -> Array:
  """Masked mean of the per-token entropy `-Σ_v p_v log p_v`: [B, T, V], [B, T] -> []."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  p = jnp.exp(logp)
  plogp = jnp.where(p > 0, p * jnp.where(p > 0, logp, 0.0), 0.0)  # 0 log 0 = 0
  return masked_mean(-jnp.sum(plogp, axis=-1), mask)


def ppo_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
             values: Array, old_values: Array, returns: Array, vf_coef: float = 0.1,
             value_clip: float | None = 0.2, normalization: str = "bnpo",
             **surrogate_kwargs) -> tuple[Array, dict]:
  """PPO loss = clipped surrogate (token advantages, bnpo) + vf_coef · value loss.

  Shapes: logp, old_logp, advantages, mask, values, old_values, returns [B, T].
  Other keyword arguments go to `clipped_surrogate_loss`.
  """
  pg, metrics = clipped_surrogate_loss(logp, old_logp, advantages, mask,
                                       normalization=normalization, **surrogate_kwargs)
  vl, v_metrics = value_loss(values, old_values, returns, mask, clip=value_clip)
  metrics = {**metrics, **v_metrics, "policy_loss": pg, "value_loss": vl}
  return pg + vf_coef * vl, metrics


# --------------------------------------------------------------------------- registry

_surrogate = clipped_surrogate_loss
register_policy_loss("grpo")(functools.partial(_surrogate, normalization="grpo"))
register_policy_loss("bnpo")(functools.partial(_surrogate, normalization="bnpo"))
register_policy_loss("dr_grpo")(functools.partial(_surrogate, normalization="dr_grpo"))
register_policy_loss("dapo")(
    functools.partial(_surrogate, normalization="dapo", epsilon_high=0.28))
# GSPO paper: sequence-level ratio, clip range [1 - 3e-4, 1 + 4e-4], mean over sequences.
register_policy_loss("gspo")(functools.partial(
    _surrogate, importance="sequence", epsilon=3e-4, epsilon_high=4e-4,
    normalization="grpo"))
register_policy_loss("ppo")(ppo_loss)
