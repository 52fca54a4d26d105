"""Hugging Face interop: our logits equal transformers' on load and after a round trip."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import rewardlab
from rewardlab import models
from rewardlab.models import hf as hf_lib

from hf_models import VARIANTS, make_model, save_model

pytestmark = pytest.mark.torch
TOL = 1e-4


def _batch(vocab_size=96):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab_size, size=(3, 20)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1, 13:] = 0  # right padding
  mask[2, 5:] = 0
  tokens[mask == 0] = 0
  return tokens, mask


def _torch_logits(model, tokens, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long))
  return out.logits.float().numpy()


def _max_err(ours, theirs, mask):
  return float(np.abs(np.asarray(ours) - theirs)[mask.astype(bool)].max())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_load_matches_transformers(variant, tmp_path):
  model = make_model(variant)
  path = save_model(model, tmp_path / variant)
  config, params = rewardlab.load_pretrained(path)
  tokens, mask = _batch()
  ours = models.logits(config, params, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  err = _max_err(ours, _torch_logits(model, tokens, mask), mask)
  assert err <= TOL, f"{variant}: max |logits - transformers| = {err:.2e}"


@pytest.mark.parametrize("variant", ["llama", "qwen2", "llama3_rope", "llama_mqa", "mistral"])
def test_save_roundtrip_through_transformers(variant, tmp_path):
  model = make_model(variant, seed=1)
  config, params = rewardlab.load_pretrained(save_model(model, tmp_path / "src"))
  out = tmp_path / "ours"
  rewardlab.save_pretrained(str(out), config, params)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(out), attn_implementation="eager").eval()
  assert type(reloaded).__name__ == type(model).__name__
  tokens, mask = _batch()
  ours = models.logits(config, params, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  err = _max_err(ours, _torch_logits(reloaded, tokens, mask), mask)
  assert err <= TOL, f"{variant}: round trip max err {err:.2e}"


def test_sharded_checkpoint_and_v4_config(tmp_path):
  model = make_model("llama3_rope", seed=2)
  path = save_model(model, tmp_path / "m", max_shard_size="40KB")
  assert (tmp_path / "m" / "model.safetensors.index.json").exists()
  # Rewrite config.json in the transformers v4 form.
  cfg_path = tmp_path / "m" / "config.json"
  hf = json.loads(cfg_path.read_text())
  rope = hf.pop("rope_parameters")
  hf["rope_theta"] = rope.pop("rope_theta")
  hf["rope_scaling"] = rope
  hf["torch_dtype"] = hf.pop("dtype", "float32")
  cfg_path.write_text(json.dumps(hf))
  config, params = rewardlab.load_pretrained(path)
  assert config.rope_scaling_dict["rope_type"] == "llama3"
  tokens, mask = _batch()
  ours = models.logits(config, params, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  assert _max_err(ours, _torch_logits(model, tokens, mask), mask) <= TOL


@pytest.mark.parametrize("torch_dtype,name", [(torch.bfloat16, "bfloat16"),
                                              (torch.float16, "float16")])
def test_half_precision_files_load_exactly(tmp_path, torch_dtype, name):
  model = make_model("qwen2", seed=3).to(torch_dtype)
  config, params = rewardlab.load_pretrained(save_model(model, tmp_path / name))
  ref = model.state_dict()["model.layers.0.self_attn.q_proj.weight"].float().numpy()
  ours = np.asarray(params["layers_0"]["self_attn"]["q_proj"])  # [D, H, E]
  np.testing.assert_array_equal(ours.transpose(1, 2, 0).reshape(ref.shape), ref)
  config16, params16 = rewardlab.load_pretrained(str(tmp_path / name), dtype=jnp.bfloat16)
  assert params16["embed_tokens"].dtype == jnp.bfloat16 and config16.param_dtype == "bfloat16"


def test_bf16_compute_is_close(tmp_path):
  model = make_model("llama", seed=4)
  path = save_model(model, tmp_path / "m")
  config, params = rewardlab.load_pretrained(path, compute_dtype=jnp.bfloat16)
  assert config.dtype == "bfloat16" and config.param_dtype == "float32"
  tokens, mask = _batch()
  ours = models.logits(config, params, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  ref = _torch_logits(model, tokens, mask)
  scale = np.abs(ref).max()
  assert _max_err(ours, ref, mask) <= 0.05 * scale


def test_errors_name_the_problem(tmp_path):
  model = make_model("llama", seed=5)
  path = save_model(model, tmp_path / "m")
  cfg_path = tmp_path / "m" / "config.json"
  hf = json.loads(cfg_path.read_text())

  cfg_path.write_text(json.dumps({**hf, "model_type": "gpt2"}))
  with pytest.raises(hf_lib.CheckpointError, match="model_type 'gpt2' is not supported"):
    rewardlab.load_pretrained(path)
  cfg_path.write_text(json.dumps({**hf, "model_type": "mistral", "sliding_window": 64}))
  with pytest.raises(hf_lib.CheckpointError, match="sliding-window"):
    rewardlab.load_pretrained(path)
  cfg_path.write_text(json.dumps({**hf, "num_local_experts": 8}))
  with pytest.raises(hf_lib.CheckpointError, match="mixture-of-experts"):
    rewardlab.load_pretrained(path)
  cfg_path.write_text(json.dumps({**hf, "rope_parameters": {"rope_type": "yarn",
                                                             "rope_theta": 1e4}}))
  with pytest.raises(hf_lib.CheckpointError, match="yarn"):
    rewardlab.load_pretrained(path)
  cfg_path.write_text(json.dumps({**hf, "intermediate_size": 100}))
  with pytest.raises(hf_lib.CheckpointError,
                     match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(112, 64\), "
                           r"expected \(100, 64\)"):
    rewardlab.load_pretrained(path)
  cfg_path.write_text(json.dumps(hf))
  (tmp_path / "m" / "model.safetensors").unlink()
  (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(hf_lib.CheckpointError, match="pickle-based weights are never loaded"):
    rewardlab.load_pretrained(path)


def test_missing_tensor_is_named(tmp_path):
  from safetensors.numpy import load_file, save_file
  model = make_model("llama", seed=6)
  path = save_model(model, tmp_path / "m")
  weights = load_file(str(tmp_path / "m" / "model.safetensors"))
  del weights["model.layers.1.mlp.up_proj.weight"]
  save_file(weights, str(tmp_path / "m" / "model.safetensors"))
  with pytest.raises(hf_lib.CheckpointError, match="'model.layers.1.mlp.up_proj.weight' is missing"):
    rewardlab.load_pretrained(path)
