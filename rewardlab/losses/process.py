"""Process reward model (PRM) loss (SPECS §1).

Each valid step k of a solution has one logit z_k read at the last token of
`step_k + separator`, and `p_k = σ(z_k)`. Two parametrizations give that logit:
1. a classifier head (one logit per step), used as is;
2. the LM-token head of Math-Shepherd / RLHFlow, `p_k = softmax([z_+, z_-])_0`,
   which equals `σ(z_+ - z_-)`: `lm_token_step_logits` turns it into case 1.

The loss is the binary cross-entropy with hard (0/1) or soft (Monte-Carlo success
fraction) labels, averaged over the valid steps of the batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rewardlab.losses.advantages import last_valid_one_hot, masked_mean

Array = jax.Array


def lm_token_step_logits(logits_plus: Array, logits_minus: Array) -> Array:
  """Step logit `z_+ - z_-`, so `σ(z_+ - z_-) = softmax([z_+, z_-])_0`. [...] -> [...]."""
  return logits_plus - logits_minus


def binary_cross_entropy_with_logits(logits: Array, labels: Array) -> Array:
  """Elementwise `-(y log σ(z) + (1 - y) log σ(-z))`, stable for any finite z, y in [0, 1]."""
  labels = labels.astype(jnp.float32)
  return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def prm_loss(step_logits: Array, labels: Array, step_mask: Array, *,
             last_step_only: bool = False) -> tuple[Array, dict]:
  """Masked mean binary cross-entropy over step logits.

  `L = Σ_bk m_bk BCE(z_bk, y_bk) / Σ_bk m_bk`.

  Args:
    step_logits: [B, S] one logit per step.
    labels: [B, S] hard (0/1) or soft ([0, 1]) step labels.
    step_mask: [B, S] 1 for real steps, 0 for padding.
    last_step_only: train on the last valid step of each row only.
  Returns:
    loss, metrics {step_accuracy (σ(z) > 0.5 vs y > 0.5), mean_prob, mean_label}.
  """
  if not (step_logits.shape == labels.shape == step_mask.shape):
    raise ValueError(
        f"step_logits, labels, step_mask must share a shape, got "
        f"{step_logits.shape}, {labels.shape}, {step_mask.shape}")
  mask = step_mask.astype(bool)
  if last_step_only:
    mask = last_valid_one_hot(mask).astype(bool)
  step_logits = jnp.where(mask, step_logits, 0.0)  # padding never reaches a gradient
  loss = masked_mean(binary_cross_entropy_with_logits(step_logits, labels), mask)
  correct = (step_logits > 0.0) == (labels > 0.5)  # σ(z) > 0.5 iff z > 0
  metrics = {
      "step_accuracy": masked_mean(correct.astype(jnp.float32), mask),
      "mean_prob": masked_mean(jax.nn.sigmoid(step_logits), mask),
      "mean_label": masked_mean(labels.astype(jnp.float32), mask),
  }
  return loss, metrics
