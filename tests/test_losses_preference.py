"""Reward-model losses against hand-computed values (SPECS §1)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rewardlab.losses import preference, process


def softplus(x):
  """-log σ(-x) = log(1 + e^x), the numpy reference."""
  return np.log1p(np.exp(x))


def check_rev(f, *args):
  """First-order reverse-mode gradient check in float64 (finite differences need it)."""
  with jax.enable_x64(True):
    check_grads(f, tuple(jnp.asarray(a, jnp.float64) for a in args), order=1, modes=("rev",))


def all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------- Bradley-Terry

RC = jnp.array([1.0, 0.0, 2.0])
RR = jnp.array([0.0, 0.0, 3.0])


def test_bt_loss_and_metrics_hand_values():
  loss, m = preference.bradley_terry_loss(RC, RR)
  # -log σ(d) = log(1 + e^-d) for d = 1, 0, -1.
  expected = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.e)) / 3
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 1 / 3)  # the tie counts as wrong
  np.testing.assert_allclose(m["margin"], 0.0, atol=1e-7)
  np.testing.assert_allclose(m["reward_chosen"], 1.0)
  np.testing.assert_allclose(m["reward_rejected"], 1.0)


def test_bt_margin_and_centering():
  margin = jnp.array([0.5, 0.0, 0.0])
  loss, m = preference.bradley_terry_loss(RC, RR, margin=margin, center_coef=0.01)
  nll = (math.log1p(math.exp(-0.5)) + math.log(2) + math.log1p(math.e)) / 3
  center = (1.0 + 0.0 + 25.0) / 3
  np.testing.assert_allclose(loss, nll + 0.01 * center, rtol=1e-6)
  np.testing.assert_allclose(m["center"], center, rtol=1e-6)


def test_bt_weights_equal_slicing():
  w = jnp.array([1.0, 1.0, 0.0])
  lw, mw = preference.bradley_terry_loss(RC, RR, weights=w, center_coef=0.01)
  ls, ms = preference.bradley_terry_loss(RC[:2], RR[:2], center_coef=0.01)
  np.testing.assert_allclose(lw, ls, rtol=1e-6)
  for k in ms:
    np.testing.assert_allclose(mw[k], ms[k], rtol=1e-6, atol=1e-7)


def test_bt_extreme_rewards_finite():
  big = jnp.array([1e4, -1e4])
  f = lambda a, b: preference.bradley_terry_loss(a, b, center_coef=0.01)[0]
  loss = f(big, -big)
  # Gaps +2e4 and -2e4: losses 0 and 2e4; r_c + r_r = 0 for both pairs.
  np.testing.assert_allclose(loss, 1e4, rtol=1e-6)
  assert all_finite((loss, jax.grad(f, argnums=(0, 1))(big, -big)))


def test_scaled_bt():
  s = jnp.array([1.0, 2.0, 3.0])
  loss, m = preference.scaled_bt_loss(RC, RR, s)
  expected = (softplus(-1.0) + 2 * softplus(0.0) + 3 * softplus(1.0)) / 3
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 1 / 3)
  # Strength 1 everywhere is plain Bradley-Terry.
  np.testing.assert_allclose(preference.scaled_bt_loss(RC, RR, jnp.ones(3))[0],
                             preference.bradley_terry_loss(RC, RR)[0], rtol=1e-6)


def test_bt_scaled_bt_gradients():
  check_rev(lambda a, b: preference.bradley_terry_loss(
      a, b, margin=jnp.array([0.3, 0.0, -0.2]), center_coef=0.01)[0], RC, RR)
  check_rev(lambda a, b: preference.scaled_bt_loss(a, b, jnp.array([1.0, 2.0, 3.0]))[0],
            RC, RR)


# --------------------------------------------------------------------------- regression


def test_regression_loss_per_attribute():
  pred = jnp.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
  target = jnp.array([[0.0, 2.0, 9.0], [1.0, 4.0, 9.0]])
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  loss, m = preference.regression_loss(pred, target, mask, names=("a", "b", "c"))
  # a: (1 + 4)/2 = 2.5; b: 0/1 = 0; c has no labels and is left out.
  np.testing.assert_allclose(m["mse/a"], 2.5)
  np.testing.assert_allclose(m["mse/b"], 0.0)
  np.testing.assert_allclose(m["mse/c"], 0.0)
  np.testing.assert_allclose(loss, 1.25)
  full, _ = preference.regression_loss(pred, target)
  np.testing.assert_allclose(full, (2.5 + 8.0 + 81.0) / 3, rtol=1e-6)


def test_regression_loss_bad_shapes():
  with pytest.raises(ValueError, match="pred and target"):
    preference.regression_loss(jnp.zeros((2, 3)), jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="names"):
    preference.regression_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), names=("a",))


# --------------------------------------------------------------------------- GenARM / DPO

TOKEN_LOGPS = jnp.array([[-1.0, -2.0, -0.5], [-0.1, -0.2, -7.0]])
TOKEN_MASK = jnp.array([[1, 1, 1], [1, 1, 0]])


def test_genarm_reward_and_loss():
  r = preference.genarm_reward(TOKEN_LOGPS, TOKEN_MASK, beta=0.1)
  np.testing.assert_allclose(r, [-0.35, -0.03], rtol=1e-6)
  lc, lr = jnp.array([-3.5, -10.0]), jnp.array([-0.3, -2.0])
  loss, m = preference.genarm_loss(lc, lr)  # β = 0.05, γ = 0 by default
  d = 0.05 * np.array([-3.2, -8.0])
  np.testing.assert_allclose(loss, np.mean(softplus(-d)), rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 0.0)
  loss_g, _ = preference.genarm_loss(lc, lr, beta=0.5, gamma=1.0)
  np.testing.assert_allclose(loss_g, np.mean(softplus(-(0.5 * np.array([-3.2, -8.0]) - 1.0))),
                             rtol=1e-6)
  check_rev(lambda a, b: preference.genarm_loss(a, b, beta=0.5, gamma=0.3)[0], lc, lr)
  check_rev(lambda x: preference.genarm_reward(x, TOKEN_MASK, 0.05), TOKEN_LOGPS)
  big = jnp.array([1e4, -1e4])
  f = lambda a: preference.genarm_loss(a, -a, beta=1.0, gamma=1.0)[0]
  np.testing.assert_allclose(f(big), (2e4 + 1.0) / 2, rtol=1e-6)
  assert all_finite(jax.grad(f)(big))


def test_dpo_loss_and_implicit_reward():
  pc, pr = jnp.array([-5.0, -3.0]), jnp.array([-6.0, -2.0])
  rc, rr = jnp.array([-5.5, -3.0]), jnp.array([-5.0, -4.0])
  loss, m = preference.dpo_loss(pc, pr, rc, rr, beta=0.1)
  r_w = 0.1 * np.array([0.5, 0.0])
  r_l = 0.1 * np.array([-1.0, 2.0])
  np.testing.assert_allclose(loss, np.mean(softplus(-(r_w - r_l))), rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 0.5)
  np.testing.assert_allclose(preference.dpo_implicit_reward(pc, rc, 0.1), r_w, atol=1e-7)
  # DPO is Bradley-Terry on the implicit rewards.
  np.testing.assert_allclose(loss, preference.bradley_terry_loss(jnp.asarray(r_w),
                                                                jnp.asarray(r_l))[0], rtol=1e-6)
  check_rev(lambda a, b: preference.dpo_loss(a, b, rc, rr, beta=0.1)[0], pc, pr)
  big = jnp.array([1e4, -1e4])
  f = lambda a: preference.dpo_loss(a, -a, jnp.zeros(2), jnp.zeros(2), beta=1.0)[0]
  assert all_finite((f(big), jax.grad(f)(big)))


def test_sequence_logp_score_masked_equals_sliced():
  s = preference.sequence_logp_score(TOKEN_LOGPS, TOKEN_MASK, "sum")
  np.testing.assert_allclose(s, [-3.5, -0.3], rtol=1e-6)
  mean = preference.sequence_logp_score(TOKEN_LOGPS, TOKEN_MASK, "mean")
  np.testing.assert_allclose(mean, [-3.5 / 3, -0.15], rtol=1e-6)
  padded = jnp.concatenate([TOKEN_LOGPS, jnp.full((2, 2), jnp.nan)], axis=1)
  pmask = jnp.concatenate([TOKEN_MASK, jnp.zeros((2, 2), int)], axis=1)
  np.testing.assert_allclose(preference.sequence_logp_score(padded, pmask, "mean"), mean)
  with pytest.raises(ValueError, match="kind"):
    preference.sequence_logp_score(TOKEN_LOGPS, TOKEN_MASK, "max")


# --------------------------------------------------------------------------- PRM

LOGITS = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, 0.0]])
LABELS = jnp.array([[1.0, 0.0, 0.25], [1.0, 1.0, 0.0]])
STEP_MASK = jnp.array([[1, 1, 1], [1, 1, 0]])


def np_bce(z, y):
  return y * softplus(-z) + (1 - y) * softplus(z)


def test_prm_loss_hand_values():
  loss, m = process.prm_loss(LOGITS, LABELS, STEP_MASK)
  z, y = np.array([2.0, -1.0, 0.5, 0.0, 3.0]), np.array([1.0, 0.0, 0.25, 1.0, 1.0])
  np.testing.assert_allclose(loss, np.mean(np_bce(z, y)), rtol=1e-6)
  # Predictions z > 0: [T, F, T, F, T]; labels > 0.5: [T, F, F, T, T] -> 3/5.
  np.testing.assert_allclose(m["step_accuracy"], 0.6)
  np.testing.assert_allclose(m["mean_prob"], np.mean(1 / (1 + np.exp(-z))), rtol=1e-6)


def test_prm_last_step_only():
  loss, m = process.prm_loss(LOGITS, LABELS, STEP_MASK, last_step_only=True)
  expected = (np_bce(0.5, 0.25) + np_bce(3.0, 1.0)) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["step_accuracy"], 0.5)


def test_prm_masked_equals_sliced_and_finite():
  ref, _ = process.prm_loss(LOGITS[:1], LABELS[:1], STEP_MASK[:1])
  padded_logits = jnp.concatenate([LOGITS[:1], jnp.array([[1e4, -1e4]])], axis=1)
  padded_labels = jnp.concatenate([LABELS[:1], jnp.array([[jnp.nan, 0.3]])], axis=1)
  padded_mask = jnp.array([[1, 1, 1, 0, 0]])
  f = lambda z: process.prm_loss(z, padded_labels, padded_mask)[0]
  np.testing.assert_allclose(f(padded_logits), ref, rtol=1e-6)
  g = jax.grad(f)(padded_logits)
  assert all_finite(g)
  np.testing.assert_array_equal(g[0, 3:], 0.0)
  # Extreme logits on valid steps: finite value and gradient.
  z = jnp.array([[1e4, -1e4, 1e4]])
  y = jnp.array([[0.0, 1.0, 1.0]])
  h = lambda z: process.prm_loss(z, y, jnp.ones((1, 3)))[0]
  np.testing.assert_allclose(h(z), 2e4 / 3, rtol=1e-6)
  assert all_finite(jax.grad(h)(z))


def test_prm_gradient():
  check_rev(lambda z: process.prm_loss(z, LABELS, STEP_MASK)[0], LOGITS)


def test_lm_token_head_equals_two_way_softmax():
  z_plus = jnp.array([1.5, -2.0, 30.0, 0.0])
  z_minus = jnp.array([0.5, 1.0, -30.0, 0.0])
  p = jax.nn.sigmoid(process.lm_token_step_logits(z_plus, z_minus))
  p_ref = jax.nn.softmax(jnp.stack([z_plus, z_minus], axis=-1), axis=-1)[:, 0]
  np.testing.assert_allclose(p, p_ref, rtol=1e-6)


def test_prm_bad_shapes():
  with pytest.raises(ValueError, match="share a shape"):
    process.prm_loss(LOGITS, LABELS[:, :2], STEP_MASK)
