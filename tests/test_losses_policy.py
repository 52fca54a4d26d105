"""Policy losses, advantages and PPO pieces against hand-computed values (SPECS §2)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from rewardlab.losses import advantages as adv_lib
from rewardlab.losses import policy
from rewardlab.losses.registry import (
    get_advantage_estimator, get_policy_loss, register_policy_loss)


def check_rev(f, *args):
  """First-order reverse-mode gradient check in float64 (finite differences need it)."""
  with jax.enable_x64(True):
    check_grads(f, tuple(jnp.asarray(a, jnp.float64) for a in args), order=1, modes=("rev",))


def all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------- hand case
# Two sequences; log-ratios give ρ = [[1.1, 1.5], [0.5, pad]] and A = [1, -1].
#   (0, 0): ρ = 1.1 inside the clip range      -> ℓ = -1.1
#   (0, 1): ρ = 1.5 > 1.2 with A > 0 (clipped)  -> ℓ = -1.2
#   (1, 0): ρ = 0.5 < 0.8 with A < 0 (clipped)  -> ℓ = +0.8
OLD = jnp.zeros((2, 2))
LOGP = jnp.log(jnp.array([[1.1, 1.5], [0.5, 1.0]]))
MASK = jnp.array([[1, 1], [1, 0]])
ADV = jnp.array([1.0, -1.0])


@pytest.mark.parametrize("normalization, expected", [
    ("grpo", (-2.3 / 2 + 0.8) / 2),
    ("bnpo", (-2.3 + 0.8) / 3),
    ("dapo", (-2.3 + 0.8) / 3),
    ("dr_grpo", (-2.3 + 0.8) / 4),
])
def test_surrogate_normalizations(normalization, expected):
  loss, m = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, normalization=normalization)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(m["clip_fraction"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["clip_fraction_low"], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["clip_fraction_high"], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_mean"], (1.1 + 1.5 + 0.5) / 3, rtol=1e-5)
  np.testing.assert_allclose(m["ratio_max"], 1.5, rtol=1e-5)
  # approx_kl is k3 with Δ = log π_old - log π = -log ρ: e^Δ - Δ - 1 = 1/ρ + log ρ - 1.
  k3 = [1 / r + math.log(r) - 1 for r in (1.1, 1.5, 0.5)]
  np.testing.assert_allclose(m["approx_kl"], np.mean(k3), rtol=1e-5)


def test_dr_grpo_max_len():
  loss, _ = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, normalization="dr_grpo",
                                          max_len=10)
  np.testing.assert_allclose(loss, -1.5 / 20, rtol=1e-5)


def test_epsilon_high_and_dual_clip():
  loss, _ = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, epsilon_high=0.28,
                                          normalization="bnpo")
  np.testing.assert_allclose(loss, (-1.1 - 1.28 + 0.8) / 3, rtol=1e-5)
  # A < 0 with ρ = 5: plain ℓ = 5|A|; the dual clip caps it at c|A| = 3|A| (zero grad).
  logp = jnp.log(jnp.array([[5.0, 0.9]]))
  adv = jnp.array([-2.0])
  f = lambda lp, dual: policy.clipped_surrogate_loss(lp, jnp.zeros((1, 2)), adv,
                                                     jnp.ones((1, 2)), dual_clip=dual)
  plain, _ = f(logp, None)
  np.testing.assert_allclose(plain, (5.0 * 2 + 0.9 * 2) / 2, rtol=1e-5)
  dual, m = f(logp, 3.0)
  np.testing.assert_allclose(dual, (3.0 * 2 + 0.9 * 2) / 2, rtol=1e-5)
  np.testing.assert_allclose(m["dual_clip_fraction"], 0.5)
  g = jax.grad(lambda lp: f(lp, 3.0)[0])(logp)
  np.testing.assert_allclose(g, [[0.0, 2.0 * 0.9 / 2]], rtol=1e-5)
  with pytest.raises(ValueError, match="dual_clip"):
    f(logp, 1.0)


def test_sequence_level_ratio_gspo():
  # Row 0: ρ = exp(mean(log 1.1, log 1.5)) = sqrt(1.65) ≈ 1.2845; row 1: ρ = 0.5.
  rho0 = math.sqrt(1.65)
  loss, _ = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, importance="sequence")
  np.testing.assert_allclose(loss, (-1.2 + 0.8) / 2, rtol=1e-5)  # both rows clipped
  loss, m = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, importance="sequence",
                                          epsilon=0.6)
  np.testing.assert_allclose(loss, (-rho0 + 0.5) / 2, rtol=1e-5)
  np.testing.assert_allclose(m["ratio_max"], rho0, rtol=1e-5)
  # The registered GSPO loss uses the paper's tight range [1 - 3e-4, 1 + 4e-4].
  gspo, _ = get_policy_loss("gspo")(LOGP, OLD, ADV, MASK)
  np.testing.assert_allclose(gspo, (-(1 + 4e-4) + (1 - 3e-4)) / 2, atol=1e-7)


def test_kl_penalty_estimators():
  logp, ref = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))
  ln2 = math.log(2)
  np.testing.assert_allclose(policy.kl_penalty(logp, ref, "k1"), [ln2], rtol=1e-6)
  np.testing.assert_allclose(policy.kl_penalty(logp, ref, "k2"), [0.5 * ln2**2], rtol=1e-6)
  np.testing.assert_allclose(policy.kl_penalty(logp, ref, "k3"), [0.5 + ln2 - 1], rtol=1e-5)
  with pytest.raises(ValueError, match="kind"):
    policy.kl_penalty(logp, ref, "k4")


def test_kl_term_added_per_token():
  ref = LOGP - 0.3  # Δ = -0.3 on every token
  base, _ = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK)
  loss, m = policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, ref_logp=ref, kl_coef=0.1,
                                          kl_estimator="k2")
  np.testing.assert_allclose(m["kl"], 0.045, rtol=1e-5)
  np.testing.assert_allclose(loss - base, 0.1 * 0.045, rtol=1e-4)
  with pytest.raises(ValueError, match="ref_logp"):
    policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, kl_coef=0.1)


# --------------------------------------------------------------------------- gradients

def _random_case(seed, b=4, t=6, spread=0.15):
  rng = np.random.default_rng(seed)
  old = jnp.asarray(-rng.uniform(0.5, 3.0, (b, t)), jnp.float32)
  logp = old + jnp.asarray(rng.uniform(-spread, spread, (b, t)), jnp.float32)
  lengths = rng.integers(1, t + 1, b)
  lengths[0] = t
  mask = jnp.asarray(np.arange(t)[None] < lengths[:, None], jnp.int32)
  adv = jnp.asarray(rng.normal(size=b), jnp.float32)
  return logp, old, adv, mask


def test_grpo_gradient_matches_analytic_formula():
  logp, old, adv, mask = _random_case(0)  # |log ρ| < 0.15: no clipping anywhere
  f = lambda lp: policy.clipped_surrogate_loss(lp, old, adv, mask)[0]
  g = jax.grad(f)(logp)
  rho = np.exp(np.asarray(logp - old))
  m = np.asarray(mask, np.float64)
  expected = -np.asarray(adv)[:, None] * rho * m / (m.sum(1, keepdims=True) * m.shape[0])
  np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)
  # Hand case: tokens where min picks the clipped branch get zero gradient.
  g = jax.grad(lambda lp: policy.clipped_surrogate_loss(lp, OLD, ADV, MASK)[0])(LOGP)
  np.testing.assert_allclose(g, [[-1.1 / (2 * 2), 0.0], [0.0, 0.0]], rtol=1e-5)


def test_surrogate_check_grads():
  logp, old, adv, mask = _random_case(1, b=3, t=4)
  ref = old - 0.2
  for normalization in ("grpo", "dapo", "dr_grpo"):
    check_rev(lambda lp: policy.clipped_surrogate_loss(
        lp, old, adv, mask, ref_logp=ref, kl_coef=0.1, normalization=normalization)[0], logp)
  check_rev(lambda lp: policy.clipped_surrogate_loss(lp, old, adv, mask,
                                                     importance="sequence")[0], logp)


@pytest.mark.parametrize("kwargs", [
    dict(normalization="grpo"), dict(normalization="bnpo"), dict(normalization="dapo"),
    dict(normalization="dr_grpo", max_len=8), dict(importance="sequence"),
])
def test_surrogate_masked_equals_sliced(kwargs):
  logp, old, adv, mask = _random_case(2, b=3, t=4, spread=0.5)
  pad = lambda x, v: jnp.concatenate([x, jnp.full((3, 3), v, x.dtype)], axis=1)
  ref = old - 0.1
  f = lambda lp, o, m, r: policy.clipped_surrogate_loss(
      lp, o, adv, m, ref_logp=r, kl_coef=0.05, **kwargs)
  loss, metrics = f(logp, old, mask, ref)
  loss_p, metrics_p = f(pad(logp, jnp.nan), pad(old, 1e4), pad(mask, 0), pad(ref, -jnp.inf))
  np.testing.assert_allclose(loss_p, loss, rtol=1e-6)
  for k in metrics:
    np.testing.assert_allclose(metrics_p[k], metrics[k], rtol=1e-6, atol=1e-8)
  g_p = jax.grad(lambda lp: f(lp, pad(old, 1e4), pad(mask, 0), pad(ref, -jnp.inf))[0])(
      pad(logp, jnp.nan))
  g = jax.grad(lambda lp: f(lp, old, mask, ref)[0])(logp)
  np.testing.assert_allclose(g_p[:, :4], g, rtol=1e-5, atol=1e-8)
  np.testing.assert_array_equal(g_p[:, 4:], 0.0)


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_surrogate_extreme_values_finite(kl_estimator):
  logp = jnp.array([[-1e4, 0.0, -1e4], [0.0, -1e4, -5.0]])
  old = jnp.array([[0.0, -1e4, -1e4], [-1e4, 0.0, -5.0]])
  ref = jnp.array([[0.0, -1e4, 0.0], [-1e4, 0.0, -1e4]])
  adv = jnp.array([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]])
  for dual in (None, 3.0):
    f = lambda lp: policy.clipped_surrogate_loss(
        lp, old, adv, jnp.ones((2, 3)), ref_logp=ref, kl_coef=0.1, dual_clip=dual,
        kl_estimator=kl_estimator)
    (loss, metrics), g = jax.value_and_grad(f, has_aux=True)(logp)
    assert all_finite((loss, metrics, g))


# --------------------------------------------------------------------------- dapo sharded

def test_sharded_normalizations_equal_global_batch():
  """On 8 devices with axis_name='data' the loss equals the single-device full-batch loss."""
  assert jax.device_count() >= 8, "tests/conftest.py sets 8 fake CPU devices"
  logp, old, adv, mask = _random_case(3, b=16, t=5, spread=0.4)
  ref = old - 0.1
  mesh = jax.make_mesh((8,), ("data",))
  for normalization in ("dapo", "grpo", "dr_grpo"):
    kw = dict(normalization=normalization, epsilon_high=0.28, kl_coef=0.02)

    def local(lp, o, a, m, r):
      return policy.clipped_surrogate_loss(lp, o, a, m, ref_logp=r, axis_name="data", **kw)

    full = lambda lp: policy.clipped_surrogate_loss(lp, old, adv, mask, ref_logp=ref, **kw)
    with jax.set_mesh(mesh):
      shard = lambda x: jax.device_put(x, P("data"))
      sharded = jax.jit(jax.shard_map(local, in_specs=(P("data"),) * 5,
                                      out_specs=(P(), P())))
      sharded_loss = lambda lp: sharded(lp, *map(shard, (old, adv, mask, ref)))
      (loss_s, metrics_s), g_s = jax.value_and_grad(sharded_loss, has_aux=True)(shard(logp))
    (loss_f, metrics_f), g_f = jax.value_and_grad(full, has_aux=True)(logp)
    np.testing.assert_allclose(loss_s, loss_f, rtol=1e-5, err_msg=normalization)
    for k in metrics_f:
      np.testing.assert_allclose(metrics_s[k], metrics_f[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(g_s, g_f, rtol=1e-5, atol=1e-8, err_msg=normalization)


# --------------------------------------------------------------------------- PPO pieces

def test_value_loss_clipping_cases():
  values = jnp.array([[1.0, 0.0, 2.0, 3.0, 7.0]])
  old = jnp.array([[0.5, 0.5, 2.0, 0.0, 0.0]])
  returns = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0]])
  mask = jnp.array([[1, 1, 1, 1, 0]])
  loss, m = policy.value_loss(values, old, returns, mask, clip=0.2)
  # Per token max(unclipped², clipped²):
  #   V=1,  V_old=0.5, R=2: max(1, (0.7 - 2)² = 1.69)  = 1.69 (clipped branch)
  #   V=0,  V_old=0.5, R=0: max(0, 0.3² = 0.09)        = 0.09 (clipped branch)
  #   V=2,  V_old=2,   R=0: max(4, 4)                  = 4
  #   V=3,  V_old=0,   R=0: max(9, 0.2² = 0.04)        = 9    (unclipped branch)
  np.testing.assert_allclose(loss, 0.5 * (1.69 + 0.09 + 4 + 9) / 4, rtol=1e-5)
  np.testing.assert_allclose(m["value_clip_fraction"], 0.5)
  loss_nc, _ = policy.value_loss(values, old, returns, mask, clip=None)
  np.testing.assert_allclose(loss_nc, 0.5 * (1 + 0 + 4 + 9) / 4, rtol=1e-6)


def test_ppo_token_rewards_score_at_last_valid_token():
  scores = jnp.array([1.0, 2.0, 3.0])
  kl = jnp.ones((3, 4))
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  r = policy.ppo_token_rewards(scores, kl, mask)
  np.testing.assert_allclose(r, [[-0.05, -0.05, 0.95, 0.0], [1.95, 0, 0, 0], [0, 0, 0, 0]],
                             rtol=1e-6)
  r = policy.ppo_token_rewards(scores, kl, mask, kl_coef=0.0,
                               has_eos=jnp.array([True, False, True]), missing_eos_penalty=1.5)
  np.testing.assert_allclose(r, [[0, 0, 1.0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]])
  with pytest.raises(ValueError, match="has_eos"):
    policy.ppo_token_rewards(scores, kl, mask, missing_eos_penalty=1.0)


def test_entropy_from_logits():
  logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [0.0, -jnp.inf, -jnp.inf, -jnp.inf],
                       [1e4, -1e4, 0.0, 5.0]]])
  mask = jnp.array([[1, 1, 0]])
  np.testing.assert_allclose(policy.entropy_from_logits(logits, mask), math.log(4) / 2,
                             rtol=1e-6)
  two = jnp.log(jnp.array([[[0.25, 0.75]]]))
  np.testing.assert_allclose(policy.entropy_from_logits(two, jnp.ones((1, 1))),
                             -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rtol=1e-6)
  g = jax.grad(policy.entropy_from_logits)(logits, jnp.ones((1, 3)))
  assert all_finite(g)


def test_ppo_loss_combines_policy_and_value():
  logp, old, _, mask = _random_case(4, b=2, t=3)
  adv = jnp.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
  values, old_v, returns = adv * 0.3, adv * 0.2, adv
  loss, m = get_policy_loss("ppo")(logp, old, adv, mask, values=values, old_values=old_v,
                                   returns=returns)
  pg, _ = policy.clipped_surrogate_loss(logp, old, adv, mask, normalization="bnpo")
  vl, _ = policy.value_loss(values, old_v, returns, mask)
  np.testing.assert_allclose(loss, pg + 0.1 * vl, rtol=1e-6)
  np.testing.assert_allclose(m["policy_loss"], pg, rtol=1e-6)
  np.testing.assert_allclose(m["value_loss"], vl, rtol=1e-6)


def test_policy_loss_registry():
  # dapo defaults to ε_high = 0.28: ρ = 1.25 with A > 0 is not clipped.
  logp = jnp.log(jnp.array([[1.25]]))
  loss, _ = get_policy_loss("dapo")(logp, jnp.zeros((1, 1)), jnp.array([1.0]), jnp.ones((1, 1)))
  np.testing.assert_allclose(loss, -1.25, rtol=1e-6)
  loss, _ = get_policy_loss("grpo")(logp, jnp.zeros((1, 1)), jnp.array([1.0]), jnp.ones((1, 1)))
  np.testing.assert_allclose(loss, -1.2, rtol=1e-6)
  for name, norm in [("bnpo", "bnpo"), ("dr_grpo", "dr_grpo")]:
    np.testing.assert_allclose(
        get_policy_loss(name)(LOGP, OLD, ADV, MASK)[0],
        policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, normalization=norm)[0])
  with pytest.raises(ValueError, match="unknown policy loss 'reinforce'"):
    get_policy_loss("reinforce")
  with pytest.raises(ValueError, match="already registered"):
    register_policy_loss("grpo")(lambda *a, **k: None)
  with pytest.raises(ValueError, match="normalization"):
    policy.clipped_surrogate_loss(LOGP, OLD, ADV, MASK, normalization="token_mean")


# --------------------------------------------------------------------------- advantages

def gae_loop(rewards, values, mask, gamma, lam):
  """Plain python reference: GAE over the valid positions of each row."""
  adv = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    next_v, next_a = 0.0, 0.0
    for t in reversed(range(rewards.shape[1])):
      if not mask[b, t]:
        continue
      delta = rewards[b, t] + gamma * next_v - values[b, t]
      next_a = delta + gamma * lam * next_a
      next_v = values[b, t]
      adv[b, t] = next_a
  return adv, np.where(mask, adv + values, 0.0)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_python_loop(gamma, lam):
  rng = np.random.default_rng(5)
  rewards = rng.normal(size=(3, 6)).astype(np.float32)
  values = rng.normal(size=(3, 6)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0]], bool)
  adv, ret = adv_lib.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                         gamma=gamma, lam=lam)
  ref_adv, ref_ret = gae_loop(rewards, values, mask, gamma, lam)
  np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-6)
  # Closed form at γ = λ = 1: A_t = Σ_{j >= t} r_j - V_t on a full row.
  adv1, _ = adv_lib.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                        gamma=1.0, lam=1.0)
  np.testing.assert_allclose(adv1[0], np.cumsum(rewards[0][::-1])[::-1] - values[0],
                             rtol=1e-5, atol=1e-5)


def test_whiten_masked():
  x = jnp.array([1.0, 2.0, 3.0, 100.0])
  mask = jnp.array([1, 1, 1, 0])
  np.testing.assert_allclose(adv_lib.whiten(x, mask), [-1, 0, 1, 0], atol=1e-6)
  np.testing.assert_allclose(adv_lib.whiten(x, mask, shift_mean=False), [1, 2, 3, 0],
                             atol=1e-6)


def test_group_advantages_scales():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  std_g = math.sqrt(1 / 3)  # Bessel std of [1, 0, 0, 1]
  a = adv_lib.group_advantages(r, 4)
  np.testing.assert_allclose(a[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (std_g + 1e-4),
                             rtol=1e-5)
  np.testing.assert_allclose(a[4:], 0.0)
  std_b = math.sqrt(1.5 / 7)  # Bessel std of the batch, mean 0.75
  np.testing.assert_allclose(adv_lib.group_advantages(r, 4, scale="batch")[:4],
                             np.array([0.5, -0.5, -0.5, 0.5]) / (std_b + 1e-4), rtol=1e-5)
  np.testing.assert_allclose(adv_lib.group_advantages(r, 4, scale="none"),
                             [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
  np.testing.assert_allclose(get_advantage_estimator("dr_grpo")(r, 4),
                             [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
  with pytest.raises(ValueError, match="scale"):
    adv_lib.group_advantages(r, 4, scale="global")
  with pytest.raises(ValueError, match="group_size"):
    adv_lib.group_advantages(r, 3)


def test_group_advantages_invalid_rewards():
  r = jnp.array([1.0, 0.0, 4.0, jnp.nan, jnp.nan, jnp.nan])
  valid = jnp.array([True, True, False, True, True, True])
  for scale in ("group", "batch", "none"):
    a = adv_lib.group_advantages(r, 3, scale=scale, valid=valid)
    assert all_finite(a)
    np.testing.assert_array_equal(a[2:], 0.0)  # invalid row and the all-NaN group
  a = adv_lib.group_advantages(r, 3, valid=valid)
  std = math.sqrt(0.5)  # Bessel std of [1, 0]
  np.testing.assert_allclose(a[:2], [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)], rtol=1e-5)
  np.testing.assert_allclose(adv_lib.rloo_advantages(r, 3, valid=valid), [1, -1, 0, 0, 0, 0])


def test_rloo_advantages():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 5.0])
  a = adv_lib.rloo_advantages(r, 4)
  np.testing.assert_allclose(a[:4], [2 / 3, -2 / 3, -2 / 3, 2 / 3], rtol=1e-6)
  # A_i = G/(G-1) (r_i - mean_group r).
  np.testing.assert_allclose(a[4:], 4 / 3 * (np.array([2, 2, 2, 5]) - 2.75), rtol=1e-6)
  np.testing.assert_allclose(get_advantage_estimator("rloo")(r, 4), a)
