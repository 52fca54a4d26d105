"""Export of a scalar reward model: transformers' sequence classifier gives our scores."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

import rewardlab
from rewardlab.models import reward
from rewardlab.models.export import export_sequence_classification

from hf_models import make_model, save_model

pytestmark = pytest.mark.torch
TOL = 1e-4
PAD, EOS = 0, 2


def _batch(vocab_size=96):
  """Right-padded rows ending in EOS; the pad id (0) occurs only in the padding, as HF
  finds the scored token as the rightmost non-pad id."""
  rng = np.random.default_rng(0)
  lengths = [20, 13, 5]
  tokens = np.full((3, 20), PAD, np.int32)
  mask = np.zeros((3, 20), np.int32)
  for b, n in enumerate(lengths):
    tokens[b, :n - 1] = rng.integers(3, vocab_size, size=n - 1)
    tokens[b, n - 1] = EOS
    mask[b, :n] = 1
  return tokens, mask, np.asarray(lengths, np.int32) - 1


def _reward_model(variant, tmp_path):
  config, params = rewardlab.load_pretrained(save_model(make_model(variant), tmp_path / "src"))
  rm = reward.RewardModelConfig(backbone=config, head="outcome")
  params = reward.init_reward_model(rm, jax.random.key(1), backbone_params=params)
  return rm, params


@pytest.mark.parametrize("variant", ["llama", "qwen2", "mistral"])
def test_exported_classifier_matches_our_scores(variant, tmp_path):
  rm, params = _reward_model(variant, tmp_path)
  out = export_sequence_classification(str(tmp_path / "export"), rm, params)
  tokens, mask, score_index = _batch()
  ours = np.asarray(reward.outcome_scores(rm, params, jnp.asarray(tokens), jnp.asarray(mask),
                                          jnp.asarray(score_index)))
  model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
  assert type(model).__name__.endswith("ForSequenceClassification")
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                   attention_mask=torch.tensor(mask, dtype=torch.long)).logits[:, 0].numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
  assert np.ptp(ours) > 1e-3  # the rows really differ, so reading the wrong token would show


def test_export_writes_a_classifier_config_and_no_lm_head(tmp_path):
  rm, params = _reward_model("llama", tmp_path)
  out = tmp_path / "export"
  export_sequence_classification(str(out), rm, params)
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["LlamaForSequenceClassification"]
  assert config["num_labels"] == 1 and config["pad_token_id"] == PAD
  assert config["tie_word_embeddings"] is False
  with safe_open(str(out / "model.safetensors"), framework="numpy") as f:
    names = set(f.keys())
    score = f.get_tensor("score.weight")
  assert "lm_head.weight" not in names
  np.testing.assert_array_equal(score, np.asarray(params["head"]["kernel"]).T)
  assert score.shape == (1, rm.backbone.hidden_size)


def test_export_refuses_other_heads_and_ambiguous_padding(tmp_path):
  rm, params = _reward_model("llama", tmp_path)
  attributes = rm.replace(head="attributes")
  with pytest.raises(ValueError, match="head 'attributes'"):
    export_sequence_classification(str(tmp_path / "a"), attributes,
                                   reward.init_reward_model(attributes, jax.random.key(0),
                                                            backbone_params=params["backbone"]))
  with pytest.raises(ValueError, match="equals the EOS id"):
    export_sequence_classification(str(tmp_path / "b"), rm, params, pad_token_id=EOS)
  no_pad = rm.replace(backbone=rm.backbone.replace(pad_token_id=None))
  with pytest.raises(ValueError, match="needs pad_token_id"):
    export_sequence_classification(str(tmp_path / "c"), no_pad, params)
