"""Export a scalar reward model as a Hugging Face sequence-classification checkpoint.

The directory loads with `transformers.AutoModelForSequenceClassification` (Llama, Qwen2
or Mistral `...ForSequenceClassification`), so TRL, reward-bench and any PyTorch code
can score with a rewardlab model. The outcome head `w` `[D, 1]` becomes
`score.weight = w^T` `[1, D]` (no bias, like the HF layer) and `num_labels = 1`.

Hugging Face reads the score at the rightmost token that is not `pad_token_id`;
rewardlab reads it at the last unmasked position, the EOS. The two agree when sequences
end in EOS, are right padded, and the pad id occurs nowhere inside them. With
`pad_token_id == eos_token_id` Hugging Face would skip the EOS and score the token
before it, so the exporter refuses that and asks for a distinct pad id (tokenizers
without a pad token, which pad with EOS, need one; pad with it when scoring in PyTorch).
"""

from __future__ import annotations

import os

import numpy as np

from rewardlab.models.hf import save_pretrained
from rewardlab.models.reward import RewardModelConfig, save_tokenizer

SEQUENCE_CLASSIFICATION = {
    "llama": "LlamaForSequenceClassification",
    "qwen2": "Qwen2ForSequenceClassification",
    "mistral": "MistralForSequenceClassification",
}


def export_sequence_classification(path: str, config: RewardModelConfig, params, *,
                                   pad_token_id: int | None = None, tokenizer=None) -> str:
  """Write `path` as an HF `...ForSequenceClassification` directory with `num_labels = 1`.

  `pad_token_id` defaults to the backbone's, then the tokenizer's; it is required and must
  differ from the EOS id. The causal-LM output layer is not written (the classifier has
  none). Returns `path`.
  """
  if config.head != "outcome":
    raise ValueError(f"only an outcome (scalar) reward model exports as sequence "
                     f"classification; this one has head {config.head!r}")
  backbone = config.backbone
  if backbone.model_type not in SEQUENCE_CLASSIFICATION:
    raise ValueError(f"no sequence-classification class for model_type {backbone.model_type!r}")
  if pad_token_id is None:
    pad_token_id = backbone.pad_token_id
  if pad_token_id is None and tokenizer is not None:
    pad_token_id = tokenizer.pad_id
  if pad_token_id is None:
    raise ValueError("export needs pad_token_id (Hugging Face finds the scored token with it)")
  eos = backbone.eos_token_id if backbone.eos_token_id is not None else getattr(
      tokenizer, "eos_id", None)
  if eos is not None and pad_token_id == eos:
    raise ValueError(f"pad_token_id {pad_token_id} equals the EOS id: Hugging Face would not "
                     "score the EOS token; give a distinct pad id")
  score = np.asarray(params["head"]["kernel"], np.float32).T  # [1, D]
  overrides = {
      "architectures": [SEQUENCE_CLASSIFICATION[backbone.model_type]],
      "num_labels": 1,
      "id2label": {"0": "LABEL_0"},
      "label2id": {"LABEL_0": 0},
      "problem_type": "regression",
      "pad_token_id": int(pad_token_id),
      "tie_word_embeddings": backbone.tie_embeddings,
  }
  # Written with tie_embeddings=True so that no lm_head tensor is saved (a classifier has
  # none); the config keeps the backbone's own value through `overrides`.
  save_pretrained(path, backbone.replace(tie_embeddings=True), params["backbone"],
                  extra_tensors={"score.weight": score.astype(backbone.storage_dtype)},
                  config_overrides=overrides)
  if tokenizer is not None:
    save_tokenizer(tokenizer, path)
  return os.fspath(path)
