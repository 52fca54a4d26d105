"""LoRA: a pure transform of the parameter tree (rewardlab.models.lora)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rewardlab import models, sharding
from rewardlab.models import lora
from rewardlab.models import reward as reward_lib
from rewardlab.train import state as state_lib
from rewardlab.train import step as step_lib

CONFIG = models.tiny_config(vocab_size=40, hidden_size=32, num_heads=4, num_kv_heads=2,
                            intermediate_size=48)


def _tokens(batch=4, length=10, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, CONFIG.vocab_size, (batch, length)),
                     jnp.int32)


def _randomized(adapters, seed=1):
  """Adapters with B != 0 (fresh ones leave the model unchanged)."""
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, x.shape) for k, x in
                                   zip(keys, leaves)])


def test_adapters_mirror_targeted_kernels_and_start_at_the_base():
  cfg = lora.LoraConfig(rank=3, alpha=6.0, targets=("q_proj", "o_proj", "down_proj"))
  base = models.init_params(CONFIG, jax.random.key(0))
  adapters = lora.init_adapters(cfg, CONFIG, jax.random.key(1))
  attn = adapters["layers_0"]["self_attn"]
  assert set(attn) == {"q_proj", "o_proj"} and set(adapters["layers_1"]["mlp"]) == {"down_proj"}
  assert attn["q_proj"]["a"].shape == (32, 3) and attn["q_proj"]["b"].shape == (3, 4, 8)
  assert attn["o_proj"]["a"].shape == (4, 8, 3) and attn["o_proj"]["b"].shape == (3, 32)
  merged = lora.merge(cfg, base, adapters)
  chex.assert_trees_all_close(merged, base)
  # W' = W + (α/r) A B at a hand-checked kernel
  adapters = _randomized(adapters)
  down = adapters["layers_1"]["mlp"]["down_proj"]
  a, b = down["a"], down["b"]
  expected = base["layers_1"]["mlp"]["down_proj"] + 2.0 * np.asarray(a) @ np.asarray(b)
  np.testing.assert_allclose(lora.merge(cfg, base, adapters)["layers_1"]["mlp"]["down_proj"],
                             expected, atol=1e-6)
  with pytest.raises(ValueError, match="unknown"):
    lora.LoraConfig(rank=2, targets=("qproj",))


def test_merged_logits_equal_unmerged_forward():
  """Merging is exact: x W' = x W + (α/r) (x A) B at each kernel (the unmerged low-rank
  path), and the merged model's logits equal the jitted training layout's to 1e-5."""
  cfg = lora.LoraConfig(rank=4, alpha=8.0)
  base = models.init_params(CONFIG, jax.random.key(0))
  adapters = _randomized(lora.init_adapters(cfg, CONFIG, jax.random.key(1)))
  tokens = _tokens()
  merged = lora.merge(cfg, base, adapters)
  x = jax.random.normal(jax.random.key(5), (4, 10, 32))
  for name, group in (("q_proj", "self_attn"), ("up_proj", "mlp")):
    ad = adapters["layers_0"][group][name]
    w = base["layers_0"][group][name]
    unmerged = (jnp.tensordot(x, w, axes=1)
                + cfg.scale * jnp.tensordot(jnp.tensordot(x, ad["a"], axes=1), ad["b"], axes=1))
    np.testing.assert_allclose(jnp.tensordot(x, merged["layers_0"][group][name], axes=1),
                               unmerged, atol=1e-5)
  # and the whole model: merged logits differ from the base's (the adapters act) ...
  lm = models.logits(CONFIG, merged, tokens)
  assert float(jnp.abs(lm - models.logits(CONFIG, base, tokens)).max()) > 1e-3
  # ... and equal a jitted training-layout forward (materialize) to 1e-5
  params = {"backbone": base, "lora": adapters}
  lm2 = jax.jit(lambda p: models.logits(CONFIG, lora.materialize(cfg, p)["backbone"], tokens))(
      params)
  np.testing.assert_allclose(lm2, lm, atol=1e-5)


def _rm_state(rank, *, base_dtype="", mesh=None):
  rm = reward_lib.RewardModelConfig(backbone=CONFIG, head="outcome")
  params = reward_lib.init_reward_model(rm, jax.random.key(0), mesh=mesh)
  cfg = lora.LoraConfig(rank=rank, alpha=2.0 * rank, base_dtype=base_dtype)
  params = lora.attach(cfg, params, jax.random.key(1), model_config=CONFIG, mesh=mesh)
  tx = lora.freeze_base(state_lib.adamw(optax.constant_schedule(1e-2), weight_decay=0.01))
  state = state_lib.TrainState.create(params, tx)

  def loss(p, batch):
    scores = reward_lib.outcome_scores(rm, p, batch["tokens"], batch["mask"], batch["index"])
    return jnp.mean((scores - batch["target"]) ** 2), {}

  step = step_lib.make_train_step(
      lora.loss_with_adapters(cfg, loss), tx, mesh=mesh,
      state_shardings=step_lib.state_shardings_of(state) if mesh is not None else None)
  batch = {"tokens": np.asarray(_tokens(8)), "mask": np.ones((8, 10), np.int32),
           "index": np.full((8,), 9, np.int32), "target": np.linspace(-1, 1, 8).astype(np.float32)}
  return cfg, state, step, batch


def test_only_adapters_and_head_change_in_a_train_step():
  cfg, state, step, batch = _rm_state(4, base_dtype="bfloat16")
  before = jax.device_get(state.params)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(before["backbone"]))
  for _ in range(2):
    state, metrics = step(state, jax.tree.map(jnp.asarray, batch))
  after = jax.device_get(state.params)
  chex.assert_trees_all_equal(after["backbone"], before["backbone"])  # bit for bit
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(after["backbone"]))
  changed = lambda a, b: float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())
  assert changed(after["head"]["kernel"], before["head"]["kernel"]) > 0
  for a, b in zip(jax.tree.leaves(after["lora"]), jax.tree.leaves(before["lora"])):
    assert changed(a, b) > 0  # A and B of every kernel (B moves first, A from step 2)
  assert np.isfinite(float(metrics["loss"]))


def test_optimizer_state_holds_only_adapters_and_scales_with_rank():
  """Byte counts of abstract states (`eval_shape`: the optimizer's real init, no compile)."""
  rm = reward_lib.RewardModelConfig(backbone=CONFIG, head="outcome")
  adamw = state_lib.adamw(optax.constant_schedule(1e-2), weight_decay=0.01)
  sizes = {}
  for rank in (2, 4, 8):
    cfg = lora.LoraConfig(rank=rank, alpha=2.0 * rank)
    params = jax.eval_shape(lambda: lora.attach(cfg, reward_lib.init_reward_model(
        rm, jax.random.key(0)), jax.random.key(1), model_config=CONFIG))
    sizes[rank] = lora.tree_bytes(jax.eval_shape(lora.freeze_base(adamw).init, params))
    trained = lora.tree_bytes(params["lora"]) + lora.tree_bytes(params["head"])
    assert 2 * trained <= sizes[rank] <= 2 * trained + 64  # Adam's two moments (+ counts)
  assert sizes[8] - sizes[4] == 2 * (sizes[4] - sizes[2]) > 0  # linear in r
  full = lora.tree_bytes(jax.eval_shape(adamw.init, params["backbone"]))
  assert sizes[2] < full / 4  # rank 2 on a 32-wide model; the ratio grows with the width


@pytest.mark.torch
def test_exported_merged_directory_loads_in_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = CONFIG.replace(tie_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  cfg = lora.LoraConfig(rank=4, alpha=8.0, base_dtype="bfloat16")
  base = lora.cast_base(cfg, models.init_params(config, jax.random.key(0)))
  adapters = _randomized(lora.init_adapters(cfg, config, jax.random.key(1)))
  lora.save_merged(str(tmp_path / "merged"), cfg, config, base, adapters)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "merged"), attn_implementation="eager").eval()
  tokens = _tokens()
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
  ours = models.logits(config, lora.merge(cfg, base, adapters), tokens)
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
  assert float(jnp.abs(ours - models.logits(config, base, tokens)).max()) > 1e-3


def test_lora_train_step_on_an_8_device_mesh_matches_one_device():
  assert jax.device_count() >= 8, "tests/conftest.py should give 8 CPU devices"
  mesh = sharding.make_mesh((2, 2, 2), devices=jax.devices()[:8])
  _, single, step1, batch = _rm_state(4)
  _, sharded, step8, _ = _rm_state(4, mesh=mesh)
  q_a = sharded.params["lora"]["layers_0"]["self_attn"]["q_proj"]["a"]  # [D, r]: D over fsdp
  assert q_a.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  for _ in range(2):
    single, _ = step1(single, jax.tree.map(jnp.asarray, batch))
    sharded, _ = step8(sharded, sharding.shard_batch(batch, mesh))
  chex.assert_trees_all_close(jax.device_get(sharded.params), jax.device_get(single.params),
                              atol=1e-5, rtol=1e-5)
