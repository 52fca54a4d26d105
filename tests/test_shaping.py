"""Reward shaping (Clip / Delta, DLER, TTRL) against hand-computed values."""
import jax.numpy as jnp
import numpy as np
import pytest

from rewardlab.losses import shaping


def test_clip_reward():
  r = jnp.array([[0.9, 0.3, 0.6, 7.0]])
  mask = jnp.array([[1, 1, 1, 0]])
  np.testing.assert_allclose(shaping.clip_reward(r, mask, 0.5), [[0.0, -0.2, 0.0, 0.0]],
                             atol=1e-7)


def test_delta_reward():
  r = jnp.array([[1.0, 2.0, 4.0, 9.0], [5.0, 3.0, 1.0, 1.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(shaping.delta_reward(r, mask), [[-1, -2, 0, 0], [0, 0, 0, 0]])


def test_delta_telescopes():
  rng = np.random.default_rng(0)
  r = rng.uniform(size=(5, 7)).astype(np.float32)
  lengths = np.array([7, 1, 3, 5, 2])
  mask = np.arange(7)[None] < lengths[:, None]
  d = np.asarray(shaping.delta_reward(jnp.asarray(r), jnp.asarray(mask)))
  last = r[np.arange(5), lengths - 1]
  np.testing.assert_allclose(d.sum(1), r[:, 0] - last, rtol=1e-5, atol=1e-6)
  # Return-to-go from step k is r_k - r_K.
  g = np.asarray(shaping.dense_returns(jnp.asarray(d), jnp.asarray(mask), jnp.zeros(5)))
  np.testing.assert_allclose(g, np.where(mask, r - last[:, None], 0.0), atol=1e-5)


def test_clip_delta_and_dense_returns():
  r = jnp.array([[0.9, 0.3, 0.6, 0.0]])
  mask = jnp.array([[1, 1, 1, 0]])
  cd = shaping.clip_delta(r, mask, 0.5)  # clipped [0, -0.2, 0] -> delta [0.2, -0.2, 0]
  np.testing.assert_allclose(cd, [[0.2, -0.2, 0.0, 0.0]], atol=1e-6)
  success = jnp.array([1.0])
  np.testing.assert_allclose(shaping.add_success_reward(cd, mask, success),
                             [[0.2, -0.2, 1.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(shaping.dense_returns(cd, mask, success), [[1.0, 0.8, 1.0, 0.0]],
                             atol=1e-6)
  np.testing.assert_allclose(shaping.dense_returns(cd, mask, success, gamma=0.5),
                             [[0.35, 0.3, 1.0, 0.0]], atol=1e-6)


def _padded(rows):
  k = max(len(row) for row in rows)
  r = np.zeros((len(rows), k), np.float32)
  m = np.zeros((len(rows), k), bool)
  for i, row in enumerate(rows):
    r[i, :len(row)], m[i, :len(row)] = row, True
  return jnp.asarray(r), jnp.asarray(m)


def test_repeating_a_good_step_cannot_raise_the_clip_delta_return():
  """PRM scores: a weak first step, a correct-looking step (0.95), a weak final step."""
  eta, good = 0.5, 0.95
  base = [0.3, good, 0.4]
  rows = [base]
  for n in range(1, 6):
    rows.append([0.3] + [good] * (1 + n) + [0.4])  # repeats in the middle
    rows.append(base + [good] * n)  # repeats at the end
  r, m = _padded(rows)
  success = jnp.ones(len(rows))
  returns = shaping.dense_returns(shaping.clip_delta(r, m, eta), m, success)[:, 0]
  # Telescoping: return = c_1 - c_K + success with c = min(r - η, 0).
  c_first = min(0.3 - eta, 0.0)
  c_last = np.array([min(row[-1] - eta, 0.0) for row in rows])
  np.testing.assert_allclose(returns, c_first - c_last + 1.0, atol=1e-6)
  assert np.all(np.asarray(returns) <= float(returns[0]) + 1e-6)
  np.testing.assert_allclose(returns[1::2], returns[0], atol=1e-6)  # middle repeats: no change
  # The same repeats farm reward when raw PRM scores are summed as dense rewards.
  raw = shaping.dense_returns(r, m, success)[:, 0]
  assert np.all(np.asarray(raw[1:]) > float(raw[0]))


def test_dler_reward():
  correct = jnp.array([True, True, False, True])
  lengths = jnp.array([10, 20, 5, 15])
  np.testing.assert_array_equal(shaping.dler_reward(correct, lengths, 15), [1, 0, 0, 1])


def test_ttrl_majority_reward():
  answers = jnp.array([3, 5, 5, 3,  7, 7, 2, 9,  1, 1, 1, 1,  4, 8, 8, 4,  6, 6, 6, 2])
  valid = jnp.array([1, 1, 1, 1,  1, 1, 1, 1,  0, 0, 0, 0,  0, 1, 1, 1,  0, 0, 1, 1], bool)
  r = shaping.ttrl_majority_reward(answers, 4, valid)
  np.testing.assert_array_equal(r, [
      1, 0, 0, 1,  # tie 3 vs 5: the first seen (3) wins
      1, 1, 0, 0,
      0, 0, 0, 0,  # no valid answer
      0, 1, 1, 0,  # the invalid 4 does not count: 8 wins 2 to 1
      0, 0, 1, 0,  # invalid 6s neither vote nor score; tie 6 vs 2 -> 6 seen first
  ])
  majority, has = shaping.group_majority(answers, 4, valid)
  np.testing.assert_array_equal(has, [True, True, False, True, True])
  np.testing.assert_array_equal(np.asarray(majority)[[0, 1, 3, 4]], [3, 7, 8, 6])
  np.testing.assert_array_equal(shaping.ttrl_majority_reward(answers[:4], 4), [1, 0, 0, 1])
  with pytest.raises(ValueError, match="group_size"):
    shaping.ttrl_majority_reward(answers, 3, valid)
