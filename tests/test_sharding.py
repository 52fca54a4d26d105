"""Sharding on 8 fake CPU devices and on two real processes (the multi-host path)."""

import os
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

import rewardlab
from rewardlab import models, sharding
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib

CONFIG = models.tiny_config(vocab_size=32, hidden_size=64, num_heads=4, num_kv_heads=2,
                            intermediate_size=128)
HERE = os.path.dirname(__file__)


def _batch(seed=0, batch=8, length=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CONFIG.vocab_size, size=(batch, length)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1::3, length - 4:] = 0
  loss_mask = mask.copy()
  loss_mask[:, :3] = 0
  return {"tokens": tokens, "attention_mask": mask, "loss_mask": loss_mask}


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() >= 8, "tests/conftest.py should give 8 CPU devices"
  return sharding.make_mesh((2, 2, 2), devices=jax.devices()[:8])


def test_params_are_created_sharded(mesh):
  params = models.init_params(CONFIG, jax.random.key(0), mesh=mesh)
  q = params["layers_0"]["self_attn"]["q_proj"]  # [D, H, E]: embed->fsdp, heads->tensor
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  sharded = 0
  for leaf in jax.tree.leaves(params):
    if any(axis is not None for axis in leaf.sharding.spec):
      sharded += 1
      for shard in leaf.addressable_shards:  # no device holds the whole tensor
        assert shard.data.size < leaf.size
  assert sharded >= 10
  reference = models.init_params(CONFIG, jax.random.key(0))
  chex.assert_trees_all_close(jax.device_get(params), jax.device_get(reference))


def test_mqa_heads_fall_back_to_replicated(mesh):
  config = CONFIG.replace(num_kv_heads=1)
  params = models.init_params(config, jax.random.key(0), mesh=mesh)
  assert params["layers_0"]["self_attn"]["k_proj"].sharding.spec == \
      jax.sharding.PartitionSpec("fsdp", None, None)


def test_logits_on_mesh_equal_single_device(mesh):
  params = models.init_params(CONFIG, jax.random.key(1))
  sharded_params = models.init_params(CONFIG, jax.random.key(1), mesh=mesh)
  batch = _batch()
  expected = models.logits(CONFIG, params, jnp.asarray(batch["tokens"]),
                           attention_mask=jnp.asarray(batch["attention_mask"]))
  placed = sharding.shard_batch(batch, mesh)
  with sharding.use_mesh(mesh):
    got = models.logits(CONFIG, sharded_params, placed["tokens"],
                        attention_mask=placed["attention_mask"])
  assert got.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5, rtol=0)


def _loss_fn(params, batch):
  fwd = lambda p, t, m: models.logits(CONFIG, p, t, attention_mask=m)
  return step_lib.causal_lm_loss(fwd, params, batch)


def test_train_step_on_mesh_equals_single_device(mesh):
  # Plain SGD: Adam's normalisation would amplify float reduction-order noise in
  # near-zero gradients into visible parameter differences.
  tx = optax.sgd(0.5)
  batch = _batch(1)
  single = state_lib.TrainState.create(models.init_params(CONFIG, jax.random.key(2)), tx)
  single, m1 = step_lib.make_train_step(_loss_fn, tx)(single, jax.tree.map(jnp.asarray, batch))

  state = state_lib.TrainState.create(models.init_params(CONFIG, jax.random.key(2), mesh=mesh), tx)
  step = step_lib.make_train_step(_loss_fn, tx, mesh=mesh,
                                  state_shardings=step_lib.state_shardings_of(state))
  state, m2 = step(state, sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-6)
  chex.assert_trees_all_close(jax.device_get(state.params), jax.device_get(single.params),
                              atol=1e-5, rtol=0)
  # Layouts are preserved across the step.
  assert state.params["layers_0"]["mlp"]["up_proj"].sharding.spec == \
      jax.sharding.PartitionSpec("fsdp", "tensor")
  # Retrace guard: same shapes are fine, new shapes raise instead of recompiling silently.
  state, _ = step(state, sharding.shard_batch(_batch(2), mesh))
  with pytest.raises(AssertionError, match="traced"):
    step(state, sharding.shard_batch(_batch(3, length=16), mesh))


@pytest.mark.torch
def test_load_pretrained_onto_mesh(mesh, tmp_path):
  from hf_models import make_model, save_model
  path = save_model(make_model("llama"), tmp_path / "m")
  config, params = rewardlab.load_pretrained(path)
  _, sharded_params = rewardlab.load_pretrained(path, mesh=mesh)
  up = sharded_params["layers_1"]["mlp"]["up_proj"]
  assert up.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert all(s.data.size < up.size for s in up.addressable_shards)
  chex.assert_trees_all_equal(jax.device_get(sharded_params), jax.device_get(params))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_train_step_equals_single_process(tmp_path):
  """Two localhost processes with jax.distributed: one sharded step == one local step."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  worker = os.path.join(HERE, "multihost_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(port), str(i), str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  got = load_file(str(tmp_path / "params_after_step.safetensors"))

  tx = optax.sgd(0.5)
  single = state_lib.TrainState.create(models.init_params(CONFIG, jax.random.key(7)), tx)
  single, _ = step_lib.make_train_step(_loss_fn, tx)(single, jax.tree.map(jnp.asarray, _batch(9)))
  flat = {"/".join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(single.params)[0]}
  assert set(flat) == set(got)
  for name in flat:
    np.testing.assert_allclose(got[name], flat[name], atol=1e-5, rtol=0, err_msg=name)
