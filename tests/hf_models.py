"""Tiny random Hugging Face models (PyTorch) saved locally: the numerical reference."""

import torch
import transformers

VARIANTS = {
    # name: (model_type, config overrides)
    "llama": ("llama", dict(num_key_value_heads=2)),
    "llama_tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_mqa": ("llama", dict(num_key_value_heads=1)),
    "llama3_rope": ("llama", dict(num_key_value_heads=2, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16))),
    "llama_linear_rope": ("llama", dict(num_key_value_heads=4, rope_parameters=dict(
        rope_type="linear", rope_theta=10000.0, factor=2.0))),
    "llama_head_dim": ("llama", dict(num_key_value_heads=2, head_dim=24)),
    "qwen2": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "mistral": ("mistral", dict(num_key_value_heads=2, sliding_window=None)),
}

_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
}


def make_model(variant: str, seed: int = 0, vocab_size: int = 96, **config):
  """A random model of `variant`; `config` overrides its HF config fields."""
  model_type, overrides = VARIANTS[variant]
  config_cls, model_cls = _CLASSES[model_type]
  kwargs = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=112,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                eos_token_id=2, pad_token_id=0, attn_implementation="eager")
  kwargs.update(overrides)
  kwargs.update(config)
  torch.manual_seed(seed)
  model = model_cls(config_cls(**kwargs)).eval()
  # Larger-than-default weights so that differences are not hidden by tiny activations.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.normal_(0.0, 0.5)
      elif "norm" in name:
        p.uniform_(0.5, 1.5)
      else:
        p.normal_(0.0, 0.1)
  return model


def save_model(model, path, **kwargs):
  model.save_pretrained(path, safe_serialization=True, **kwargs)
  return str(path)
