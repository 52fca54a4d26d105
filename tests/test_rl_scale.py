"""The RL update at scale: memory at a real vocabulary, LoRA, the device mesh."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import rl_grpo
from rewardlab import models
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.models import lora
from rewardlab.rl import rollout, run, update
from rewardlab.tasks import arithmetic
from rewardlab.tasks import source as source_lib
from rewardlab.train import sft
from rewardlab.train.state import TrainState

SOURCE = source_lib.build(source_lib.config(), CharTokenizer.for_arithmetic())
PROBLEM = arithmetic.Problem(3, (("+", 4), ("*", 2)))


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


# --------------------------------------------------------------------------- LoRA


def _lora_cfg(cfg, rank: int = 2):
  cfg = cfg.unlock()
  cfg.lora.rank = rank
  cfg.optim.learning_rate = 1e-2  # adapters move visibly in two steps
  return cfg


def test_lora_update_changes_only_the_adapters():
  cfg = rl_grpo.tiny()
  config, params, tok = run.load_policy(cfg, 64)
  adapters = lora.LoraConfig(rank=2)
  algo = update.algorithm_from_config(cfg)
  tx = lora.freeze_base(update.optimizer_from_config(_lora_cfg(cfg), algo), base_key="policy")
  full = lora.attach(adapters, {"policy": params}, jax.random.key(1), model_config=config,
                     base_key="policy")
  state = TrainState.create(full, tx)
  before = jax.tree.map(np.asarray, state.params)
  _, batch = rollout.sample_rollout(
      config, params, tok, SOURCE, [PROBLEM, PROBLEM], group_size=4,
      max_new_tokens=cfg.rollout.max_new_tokens, rng=jax.random.PRNGKey(0),
      max_prompt_length=cfg.rollout.max_prompt_length)
  n, t = batch["completion_tokens"].shape
  batch = {**batch, "scores": np.array([1, 0, 0, 1, 0, 1, 1, 0], np.float32),
           "token_rewards": np.zeros((n, t), np.float32), "has_eos": np.ones(n, bool)}
  step = update.make_update(config, algo, tx, None, jax.random.PRNGKey(0), adapters=adapters)
  for _ in range(2):
    state, metrics = step(state, jax.tree.map(jnp.asarray, batch))
  # At the start the merged policy is the base: the sampler's log-probs, KL to π_ref 0.
  assert float(metrics["sampler_logprob_diff"]) < 1.0
  after = jax.tree.map(np.asarray, state.params)
  jax.tree.map(np.testing.assert_array_equal, before["policy"], after["policy"])
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before["lora"], after["lora"])
  assert all(m > 0 for m in jax.tree.leaves(moved))
  # Only the adapters hold optimizer state.
  assert lora.tree_bytes(state.opt_state) < lora.tree_bytes(state.params["policy"])


def test_lora_needs_adapters_without_a_reference():
  cfg = rl_grpo.tiny()
  config, params, _ = run.load_policy(cfg, 64)
  algo = update.algorithm_from_config(cfg)
  tx = update.optimizer_from_config(cfg, algo)
  state = TrainState.create({"policy": params}, tx)
  with pytest.raises(ValueError, match="ref_params is None"):
    update.update_step(state, {"completion_mask": jnp.ones((8, 4))}, None,
                       jax.random.PRNGKey(0), config=config, algo=algo, tx=tx)


# --------------------------------------------------------------------------- mesh


class LengthRM:
  """Outcome scorer that prefers short completions (the random tiny policy earns no
  verifier reward, so GRPO's advantages would all be 0): r = 1 - len / 12."""

  def score(self, prompts, completions):
    return np.array([1.0 - len(c) / 12 for c in completions], np.float32)


def _policy_after(tmp_path, name, cfg):
  result = run.run(cfg, str(tmp_path / name), outcome_scorer=LengthRM())
  assert result["steps"] == cfg.train.steps
  _, params, _ = sft.load_policy(result["policy_dir"])
  return params


def _mesh_cfg(cfg, mesh_shape):
  cfg = cfg.unlock()
  cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 2, 2, 2
  cfg.reward.name, cfg.eval.maj_k = "outcome_rm", 0
  cfg.rollout.update_groups = 2  # 2 groups x 4 = 8 update rows: divisible by 8 data shards
  cfg.mesh_shape = mesh_shape
  return cfg.lock()


@pytest.mark.slow
def test_rl_on_meshes_ends_with_the_single_device_parameters(tmp_path):
  assert jax.device_count() >= 8
  single = _policy_after(tmp_path, "single", _mesh_cfg(rl_grpo.tiny(), None))
  initial = run.load_policy(rl_grpo.tiny(), 64)[1]
  assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(initial))) > 1e-6
  for shape in ((2, 2, 2), (1, 8, 1)):
    sharded = _policy_after(tmp_path, str(shape), _mesh_cfg(rl_grpo.tiny(), shape))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
                 sharded, single)


@pytest.mark.slow
def test_lora_rl_on_a_mesh_ends_with_the_single_device_parameters(tmp_path):
  single = _policy_after(tmp_path, "single", _mesh_cfg(_lora_cfg(rl_grpo.tiny()), None))
  sharded = _policy_after(tmp_path, "mesh", _mesh_cfg(_lora_cfg(rl_grpo.tiny()), (2, 2, 2)))
  initial = run.load_policy(rl_grpo.tiny(), 64)[1]
  assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(initial))) > 1e-6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
               sharded, single)
