"""Chunked token log-probs / entropy / KL against the full-logits computation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewardlab import models, sharding
from rewardlab.losses import policy as policy_lib
from rewardlab.models import heads
from rewardlab.models import logprobs as lp_lib


def _reference(config, params, hidden, targets, temperature):
  """Full [B, T, V] logits, the unchunked formulas (heads / losses)."""
  z = models.unembed(config, params, hidden) / temperature
  logp = jnp.take_along_axis(jax.nn.log_softmax(z, -1), targets[..., None], -1)[..., 0]
  p = jax.nn.softmax(z, -1)
  entropy = -jnp.sum(p * jax.nn.log_softmax(z, -1), -1)
  return logp, entropy


def _setup(tie, vocab=37, batch=3, length=11, dtype=jnp.float32):
  config = models.tiny_config(vocab_size=vocab, tie_embeddings=tie)
  params = models.init_params(config, jax.random.key(0))
  params = jax.tree.map(lambda x: (x * 8.0).astype(dtype), params)  # peaked distributions
  k1, k2 = jax.random.split(jax.random.key(1))
  hidden = jax.random.normal(k1, (batch, length, config.hidden_size), dtype)
  targets = jax.random.randint(k2, (batch, length), 0, vocab)
  return config, params, hidden, targets


# Sequence chunks that divide T or not, one piece; vocabulary slices that divide V or
# not (the last slice overlaps the one before), and one slice of the whole vocabulary.
@pytest.mark.parametrize("tie,chunk,vocab_chunk", [
    (False, 4, 0), (True, 11, 0), (True, 3, 8), (False, 2, 36), (False, 5, 37)])
def test_values_and_gradients_equal_unchunked(tie, chunk, vocab_chunk):
  config, params, hidden, targets = _setup(tie)
  temperature = 0.7
  w = jax.random.normal(jax.random.key(2), targets.shape)

  def objective(fn, params, hidden):
    logp, entropy = fn(params, hidden)
    return jnp.sum(w * logp) + 0.3 * jnp.sum(w[::-1] * entropy), (logp, entropy)

  chunked = lambda p, h: tuple(lp_lib.token_stats_from_hidden(
      config, p, h, targets, temperature=temperature, chunk=chunk, vocab_chunk=vocab_chunk))
  full = lambda p, h: _reference(config, p, h, targets, temperature)
  run = lambda fn: jax.jit(jax.grad(functools.partial(objective, fn), argnums=(0, 1),
                                    has_aux=True))(params, hidden)
  g_chunked, (lp, h) = run(chunked)
  g_full, (ref_lp, ref_h) = run(full)
  np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(h, ref_h, atol=1e-5, rtol=1e-5)
  assert float(jnp.std(ref_h)) > 0.1  # the distributions differ between tokens
  for a, b in zip(jax.tree.leaves(g_chunked), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  table = "embed_tokens" if tie else "lm_head"
  assert float(jnp.abs(g_full[0][table]).max()) > 1e-3


def test_next_token_logprobs_equals_heads_version():
  config, params, _, _ = _setup(False)
  tokens = jax.random.randint(jax.random.key(3), (2, 9), 0, config.vocab_size)
  hidden = models.hidden_states(config, params, tokens)
  expected = heads.token_logprobs(models.unembed(config, params, hidden), tokens)
  got = lp_lib.next_token_logprobs(config, params, hidden, tokens, chunk=3)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
  assert float(got[0, 0]) == 0.0


def test_policy_token_stats_kl_and_layout():
  config, params, _, _ = _setup(True)
  tokens = jax.random.randint(jax.random.key(4), (2, 10), 0, config.vocab_size)
  mask = jnp.ones_like(tokens)
  index = jnp.broadcast_to(jnp.arange(3, 9), (2, 6))
  targets = tokens[:, 4:10]
  ref = jnp.full(targets.shape, -3.0)
  out = lp_lib.policy_token_stats(config, params, tokens, mask, index, targets, temperature=0.5,
                                  chunk=4, ref_logprobs=ref, kl_estimator="k3")
  hidden = models.hidden_states(config, params, tokens)
  logp, entropy = _reference(config, params, hidden[:, 3:9], targets, 0.5)
  np.testing.assert_allclose(out["logp"], logp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out["entropy"], entropy, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out["kl"], policy_lib.kl_penalty(logp, ref, "k3"), atol=1e-5)


def test_automatic_chunk_keeps_small_vocabularies_whole():
  small = models.tiny_config(vocab_size=64)
  assert lp_lib.sequence_chunk(small, 32, 512) == 512
  big = models.tiny_config(vocab_size=49_152)
  c = lp_lib.sequence_chunk(big, 32, 512)
  assert 32 * c * 49_152 <= lp_lib.AUTO_CHUNK_ELEMENTS and c >= 1
  assert lp_lib.sequence_chunk(big, 32, 512, chunk=64) == 64
  with pytest.raises(ValueError, match="logprob_chunk"):
    models.tiny_config(logprob_chunk=-1)


def _compiled_temp_bytes(fn, *args) -> int:
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  if stats is None:
    pytest.skip("this backend gives no memory_analysis (lifted where it does: CPU, GPU, TPU)")
  return int(stats.temp_size_in_bytes)


def test_memory_of_token_logprob_objective_at_real_vocab():
  """Loss + grad of a token-logprob objective at V = 49,152 and B x T = 32 x 512: the
  chunked version's temporaries stay under a quarter of one float32 [B, T, V] tensor;
  the full-logits version's do not."""
  batch, length, vocab = 32, 512, 49_152
  config = models.tiny_config(vocab_size=vocab, hidden_size=32, num_layers=1, num_heads=2,
                              num_kv_heads=1, intermediate_size=64, max_position_embeddings=512)
  params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  full_logits_bytes = batch * length * vocab * 4  # 3.2 GB

  def chunked(params, tokens):
    hidden = models.hidden_states(config, params, tokens)
    return jnp.mean(lp_lib.next_token_logprobs(config, params, hidden, tokens))

  def unchunked(params, tokens):
    logits = models.logits(config, params, tokens)
    return jnp.mean(heads.token_logprobs(logits, tokens))

  chunked_bytes = _compiled_temp_bytes(jax.value_and_grad(chunked), params, tokens)
  unchunked_bytes = _compiled_temp_bytes(jax.value_and_grad(unchunked), params, tokens)
  print(f"temp bytes: chunked {chunked_bytes / 1e6:.0f} MB, unchunked "
        f"{unchunked_bytes / 1e6:.0f} MB, one [B,T,V] f32 {full_logits_bytes / 1e6:.0f} MB")
  assert unchunked_bytes > full_logits_bytes  # the measure sees the full logits
  assert chunked_bytes < full_logits_bytes / 4


def test_chunked_stats_on_an_8_device_mesh_equal_one_device():
  """Batch over (data, fsdp), vocabulary over tensor: the chunk loops run sharded."""
  assert jax.device_count() >= 8, "tests/conftest.py should give 8 CPU devices"
  mesh = sharding.make_mesh((2, 2, 2), devices=jax.devices()[:8])
  config = models.tiny_config(vocab_size=48)
  tokens = jax.random.randint(jax.random.key(6), (8, 12), 0, 48)
  mask = jnp.ones_like(tokens)
  index = jnp.broadcast_to(jnp.arange(2, 11), (8, 9))
  targets = tokens[:, 3:12]

  def stats(params, tokens, mask):
    out = lp_lib.policy_token_stats(config, params, tokens, mask, index, targets, chunk=4)
    return out["logp"], out["entropy"]

  single = jax.jit(stats)(models.init_params(config, jax.random.key(0)), tokens, mask)
  params = models.init_params(config, jax.random.key(0), mesh=mesh)
  batch = sharding.shard_batch({"tokens": np.asarray(tokens), "mask": np.asarray(mask)}, mesh)
  with sharding.use_mesh(mesh):
    sharded = jax.jit(stats)(params, batch["tokens"], batch["mask"])
  for a, b in zip(sharded, single):
    np.testing.assert_allclose(jax.device_get(a), b, atol=1e-5, rtol=1e-5)
