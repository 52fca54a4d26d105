"""The RL update at scale: memory at a real vocabulary, LoRA, the device mesh."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewardlab import models
from rewardlab.rl import update
from rewardlab.train.state import TrainState


def _abstract_update_temp_bytes(config, n: int, prompt: int, length: int) -> int:
  """Temporary bytes of the compiled RL update (GRPO, old log-probs recomputed, the
  reference's KL logged on every row) at these shapes, compiled from abstract values."""
  algo = update.Algorithm(group_size=8)
  tx = update.make_optimizer(1e-5, 1, 0.0, 1.0)
  params = jax.eval_shape(lambda: {"policy": models.init_params(config, jax.random.key(0))})
  state = jax.eval_shape(lambda p: TrainState.create(p, tx), params)
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch = {"tokens": i32(n, prompt + length), "attention_mask": i32(n, prompt + length),
           "completion_index": i32(n, length), "completion_tokens": i32(n, length),
           "completion_mask": i32(n, length), "sampler_logprobs": f32(n, length),
           "scores": f32(n), "token_rewards": f32(n, length),
           "has_eos": jax.ShapeDtypeStruct((n,), jnp.bool_)}
  step = functools.partial(update.update_step, config=config, algo=algo, tx=tx)
  rng = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  stats = jax.jit(step).lower(state, batch, params["policy"], rng).compile().memory_analysis()
  if stats is None:
    pytest.skip("this backend gives no memory_analysis")
  return int(stats.temp_size_in_bytes)


def test_rl_update_memory_at_a_real_vocabulary():
  """V = 49,152, B x T = 32 x 512: the chunked update's temporaries stay under a quarter
  of one float32 [B, T, V] logits tensor; one chunk over all positions (the full logits)
  does not."""
  n, length, vocab = 32, 512, 49_152
  config = models.tiny_config(vocab_size=vocab, hidden_size=32, num_layers=1, num_heads=2,
                              num_kv_heads=1, intermediate_size=64, max_position_embeddings=528)
  full_logits_bytes = n * length * vocab * 4  # 3.2 GB
  chunked = _abstract_update_temp_bytes(config, n, 16, length)
  unchunked = _abstract_update_temp_bytes(dataclasses.replace(config, logprob_chunk=length),
                                          n, 16, length)
  print(f"RL update temp bytes: chunked {chunked / 1e6:.0f} MB, unchunked "
        f"{unchunked / 1e6:.0f} MB, one [B, T, V] float32 {full_logits_bytes / 1e6:.0f} MB")
  assert chunked < full_logits_bytes / 4
  assert unchunked > full_logits_bytes / 4  # the check can fail
