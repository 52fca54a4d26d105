"""Transformer configuration for the Llama family (Llama, Qwen2, Mistral)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of a decoder-only Llama-family transformer.

  `dtype` is the dtype that matmul *inputs* are cast to; matmuls always accumulate in
  float32 (`preferred_element_type`), and softmax, norms and the residual stream stay in
  float32. `param_dtype` is the storage dtype of the parameters.
  `remat` recomputes each decoder block's activations in the backward pass.
  `logprob_chunk` / `logprob_vocab_chunk` bound the logits that token log-probs,
  entropy and KL materialize at once (`rewardlab.models.logprobs`): positions per
  sequence chunk (0 = automatic, about 2^24 logits per chunk, so models with small
  vocabularies run in one piece) and vocabulary entries per chunk (0 = the whole row).
  `rope_scaling` is None (default RoPE) or a dict with `rope_type` in
  {"default", "linear", "llama3"} and its fields (`factor`, and for llama3
  `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`).
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  intermediate_size: int
  head_dim: int | None = None
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: Any = None
  max_position_embeddings: int = 2048
  qkv_bias: bool = False
  tie_embeddings: bool = False
  model_type: str = "llama"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  logprob_chunk: int = 0
  logprob_vocab_chunk: int = 0
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.hidden_size <= 0 or self.num_layers <= 0 or self.vocab_size <= 0:
      raise ValueError(f"TransformerConfig: sizes must be positive, got {self}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"TransformerConfig: num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(
          f"TransformerConfig: hidden_size={self.hidden_size} is not divisible by "
          f"num_heads={self.num_heads}; give head_dim explicitly")
    for name in ("logprob_chunk", "logprob_vocab_chunk"):
      if getattr(self, name) < 0:
        raise ValueError(f"TransformerConfig.{name}={getattr(self, name)} must be >= 0")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"TransformerConfig.{name}={getattr(self, name)!r}; "
                         f"expected one of {sorted(_DTYPES)}")
    if self.rope_scaling is not None:
      kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
      if kind not in ("default", "linear", "llama3"):
        raise ValueError(f"TransformerConfig: unsupported rope_type {kind!r}; "
                         "supported: default, linear, llama3")
      # Freeze the dict into a hashable form so configs can be static jit arguments.
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))

  @property
  def head_size(self) -> int:
    return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def rope_scaling_dict(self) -> dict | None:
    return None if self.rope_scaling is None else dict(self.rope_scaling)

  def replace(self, **changes) -> "TransformerConfig":
    if isinstance(self.rope_scaling, tuple) and "rope_scaling" not in changes:
      changes["rope_scaling"] = dict(self.rope_scaling)
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count (embeddings included, tied embeddings counted once)."""
    d, hd = self.hidden_size, self.head_size
    attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
    if self.qkv_bias:
      attn += hd * (self.num_heads + 2 * self.num_kv_heads)
    mlp = 3 * d * self.intermediate_size
    per_layer = attn + mlp + 2 * d
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * per_layer + emb + d

  def flops_per_token(self, seq_len: int) -> float:
    """Training (forward + backward) matmul FLOPs per token at sequence length `seq_len`.

    6 FLOPs per weight for the dense projections (the output projection counts even when
    tied) plus the attention scores and weighted sum: 2 matmuls of `seq_len x head_dim`
    per head, averaged over causal positions (half the keys), times 3 for fwd + bwd.
    """
    d, hd = self.hidden_size, self.head_size
    per_layer = d * hd * (2 * self.num_heads + 2 * self.num_kv_heads) + 3 * d * self.intermediate_size
    weights = 6 * (self.num_layers * per_layer + self.vocab_size * d)
    attention = 6 * self.num_layers * self.num_heads * hd * seq_len
    return float(weights + attention)


def tiny_config(**overrides) -> TransformerConfig:
  """A small config for tests and the synthetic task."""
  base = dict(vocab_size=32, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
              intermediate_size=128, max_position_embeddings=256, rope_theta=10000.0)
  base.update(overrides)
  return TransformerConfig(**base)
