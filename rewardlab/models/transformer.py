"""Llama-family decoder-only transformer in flax.linen with a functional KV cache.

Dimension letters: B batch, T new tokens, S cache slots, D model width, H query heads,
K key/value heads, G = H // K query heads per kv head, E head dim, F MLP width, V vocab.

Dtype policy: matmul inputs are cast to `config.compute_dtype`, every matmul accumulates
in float32 (`preferred_element_type`), and the residual stream, norms and softmax stay in
float32. Parameters are stored in `config.storage_dtype`.

The KV cache is an explicit pytree argument, not a mutable flax collection:
`{"k": [K-layers list of [B, K, S, E]], "v": [...], "lengths": [B] int32}`; a call with
a cache writes the new tokens at slots `lengths[b] + t` of each row and returns the
updated cache. Rows may have different lengths (prompts of different lengths in one
batch, right padded).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewardlab.models.config import TransformerConfig
from rewardlab.sharding import constrain

Array = jax.Array
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


@functools.lru_cache(maxsize=None)
def _einsum_fn(equation: str, dtype, a_dtype, b_dtype):
  """Two-operand einsum with `dtype` inputs, float32 accumulation and output, whose
  backward also feeds `dtype` inputs (the float32 cotangent is cast) to its two einsums.

  Plain autodiff would run the backward einsums in float32 (the cotangent of a float32
  output is float32), so a bfloat16 model would get bfloat16 speed only in the forward.
  Every index must appear in exactly two of the three terms, which makes each gradient
  an einsum of the cotangent with the other operand.
  """
  inputs, out = equation.split("->")
  lhs, rhs = inputs.split(",")

  def forward(a, b):
    a, b = a.astype(dtype), b.astype(dtype)
    return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32), (a, b)

  def backward(residuals, g):
    a, b = residuals
    g = g.astype(dtype)
    da = jnp.einsum(f"{out},{rhs}->{lhs}", g, b, preferred_element_type=jnp.float32)
    db = jnp.einsum(f"{out},{lhs}->{rhs}", g, a, preferred_element_type=jnp.float32)
    return da.astype(a_dtype), db.astype(b_dtype)

  fn = jax.custom_vjp(lambda a, b: forward(a, b)[0])
  fn.defvjp(forward, backward)
  return fn


def _einsum(equation: str, a: Array, b: Array, dtype) -> Array:
  """`jnp.einsum` with inputs cast to `dtype` (backward included), float32 accumulation."""
  return _einsum_fn(equation, jnp.dtype(dtype), a.dtype, b.dtype)(a, b)


def _dense(x: Array, w: Array, dtype, *, contract: int = 1, transpose_w: bool = False) -> Array:
  """Contract the last `contract` dims of x with the first `contract` dims of w (its last
  ones if `transpose_w`): [*lead, *C] x [*C, *N] -> [*lead, *N] float32.

  Runs as one 2-D GEMM [M, K] x [K, N] over the flattened leading (token) dims: with a
  multi-dim einsum such as "btd,df->btf", XLA:CPU computes the weight gradient from
  transposed copies of the activations, which made train steps ~1.4x slower.
  """
  lead, k = x.shape[:x.ndim - contract], math.prod(x.shape[x.ndim - contract:])
  x2 = x.reshape(-1, k)  # [M, K]
  if transpose_w:
    free = w.shape[:w.ndim - contract]
    y = _einsum("mk,nk->mn", x2, w.reshape(-1, k), dtype)
  else:
    free = w.shape[contract:]
    y = _einsum("mk,kn->mn", x2, w.reshape(k, -1), dtype)
  return y.reshape(*lead, *free)


def rope_inverse_frequencies(config: TransformerConfig) -> Array:
  """Inverse frequencies [E/2] with the configured scaling (default, linear, llama3)."""
  dim = config.head_size
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  scaling = config.rope_scaling_dict
  if scaling is None:
    return inv_freq
  kind = scaling.get("rope_type", scaling.get("type"))
  if kind == "default":
    return inv_freq
  factor = float(scaling["factor"])
  if kind == "linear":
    return inv_freq / factor
  # llama3: long wavelengths divided by `factor`, short kept, smooth blend in between.
  low = float(scaling["low_freq_factor"])
  high = float(scaling["high_freq_factor"])
  old_len = float(scaling["original_max_position_embeddings"])
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  blended = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
  return jnp.where(medium, blended, scaled)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotary embedding in the rotate-half layout. x: [B, T, N, E], positions: [B, T]."""
  angles = positions[:, :, None].astype(jnp.float32) * inv_freq  # [B, T, E/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, E]
  x = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * jnp.cos(angles) + rotated * jnp.sin(angles)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("norm",),
                   self.param_dtype)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return x * scale.astype(jnp.float32)


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, key_mask: Array, cache: dict | None):
    """x: [B, T, D]; positions: [B, T]; key_mask: [B, T, S] bool (True = attend).

    Without a cache S = T and keys are this call's tokens; with a cache the new keys are
    written at slots `positions` and queries attend over all S cache slots.
    """
    cfg = self.config
    dt, pdt = cfg.compute_dtype, cfg.storage_dtype
    num_heads, num_kv, head = cfg.num_heads, cfg.num_kv_heads, cfg.head_size
    init = nn.initializers.normal(0.02)
    d = x.shape[-1]
    wq = _param(self, "q_proj", init, (d, num_heads, head), ("embed", "heads", "head_dim"), pdt)
    wk = _param(self, "k_proj", init, (d, num_kv, head), ("embed", "kv_heads", "head_dim"), pdt)
    wv = _param(self, "v_proj", init, (d, num_kv, head), ("embed", "kv_heads", "head_dim"), pdt)
    wo = _param(self, "o_proj", init, (num_heads, head, d), ("heads", "head_dim", "embed"), pdt)
    q = _dense(x, wq, dt)  # [B, T, H, E]
    k = _dense(x, wk, dt)  # [B, T, K, E]
    v = _dense(x, wv, dt)
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", zeros, (num_heads, head), ("heads", "head_dim"), pdt)
      k = k + _param(self, "k_bias", zeros, (num_kv, head), ("kv_heads", "head_dim"), pdt)
      v = v + _param(self, "v_bias", zeros, (num_kv, head), ("kv_heads", "head_dim"), pdt)
    inv_freq = rope_inverse_frequencies(cfg)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    k = jnp.swapaxes(k, 1, 2).astype(dt)  # [B, K, T, E]
    v = jnp.swapaxes(v, 1, 2).astype(dt)
    new_cache = None
    if cache is not None:
      # Keys are cached transposed, [B, K, E, S]: the query-key product is then a plain
      # [G·T, E] x [E, S] matrix product per (row, kv head). With [B, K, S, E] XLA:CPU ran
      # it ~5x slower (101 vs 20 us per decode step and layer at batch 16 x 144 slots).
      write = jax.vmap(lambda c, new, at: jax.lax.dynamic_update_slice(c, new, at))
      start = positions[:, 0]
      zero = jnp.zeros_like(start)
      k = write(cache["k"], jnp.swapaxes(k, 2, 3).astype(cache["k"].dtype),
                (zero, zero, start))  # [B, K, E, S]
      v = write(cache["v"], v.astype(cache["v"].dtype), (zero, start, zero))  # [B, K, S, E]
      new_cache = {"k": k, "v": v}
    batch, length = q.shape[:2]
    group = num_heads // num_kv
    q = q.reshape(batch, length, num_kv, group, head).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, E]
    keys = "bkgte,bkes->bkgts" if cache is not None else "bkgte,bkse->bkgts"
    scores = _einsum(keys, q, k, dt) / math.sqrt(head)
    scores = jnp.where(key_mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = _einsum("bkgts,bkse->bkgte", probs, v, dt)
    out = out.transpose(0, 3, 1, 2, 4).reshape(batch, length, num_heads, head)  # [B, T, H, E]
    return _dense(out, wo, dt, contract=2), new_cache


class MLP(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    d, f = x.shape[-1], cfg.intermediate_size
    init = nn.initializers.normal(0.02)
    gate = _param(self, "gate_proj", init, (d, f), ("embed", "mlp"), cfg.storage_dtype)
    up = _param(self, "up_proj", init, (d, f), ("embed", "mlp"), cfg.storage_dtype)
    down = _param(self, "down_proj", init, (f, d), ("mlp", "embed"), cfg.storage_dtype)
    h = jax.nn.silu(_dense(x, gate, cfg.compute_dtype))
    h = h * _dense(x, up, cfg.compute_dtype)
    h = constrain(h, ("activation_batch", "activation_length", "activation_mlp"))
    return _dense(h, down, cfg.compute_dtype)


class DecoderBlock(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, key_mask, cache):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.storage_dtype, name=name)
    h, new_cache = Attention(cfg, name="self_attn")(norm("input_layernorm")(x), positions,
                                                    key_mask, cache)
    x = x + h
    x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
    x = constrain(x, ("activation_batch", "activation_length", "activation_embed"))
    return x, new_cache


class Transformer(nn.Module):
  """Decoder-only transformer. `__call__` returns `(hidden or logits, new_cache)`."""

  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = self.param(
        "embed_tokens",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
        (cfg.vocab_size, cfg.hidden_size), cfg.storage_dtype)
    block = nn.remat(DecoderBlock, static_argnums=()) if cfg.remat else DecoderBlock
    self.layers = [block(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.norm = RMSNorm(cfg.rms_norm_eps, cfg.storage_dtype)
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head",
          nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")),
          (cfg.hidden_size, cfg.vocab_size), cfg.storage_dtype)

  def __call__(self, tokens: Array, *, positions: Array | None = None,
               attention_mask: Array | None = None, cache: dict | None = None,
               return_logits: bool = True):
    """tokens: [B, T] int. Returns ([B, T, V] logits or [B, T, D] final hidden, cache).

    Without a cache: causal attention over this call's tokens; `attention_mask` [B, T]
    (1 = real token) hides padded keys; `positions` default to 0..T-1 (pass them for left
    padding). With a cache: positions are the cache slots `lengths[b] + t`, keys are
    every cache slot up to the query's own, and the returned cache has
    `lengths + attention_mask.sum(1)` (or `+ T`).
    """
    batch, length = tokens.shape
    if cache is None:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
      causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None]  # [1, T, T]
      if attention_mask is not None:
        key_mask = causal & attention_mask.astype(bool)[:, None, :]
      else:
        key_mask = jnp.broadcast_to(causal, (batch, length, length))
      layer_caches = [None] * len(self.layers)
    else:
      positions = cache["lengths"][:, None] + jnp.arange(length, dtype=jnp.int32)[None]
      slots = cache["v"][0].shape[2]
      key_mask = jnp.arange(slots)[None, None, :] <= positions[:, :, None]  # [B, T, S]
      layer_caches = [{"k": k, "v": v} for k, v in zip(cache["k"], cache["v"])]

    x = jnp.take(self.embed_tokens, tokens, axis=0).astype(jnp.float32)
    x = constrain(x, ("activation_batch", "activation_length", "activation_embed"))
    new_layer_caches = []
    for layer, layer_cache in zip(self.layers, layer_caches):
      x, new_layer_cache = layer(x, positions, key_mask, layer_cache)
      new_layer_caches.append(new_layer_cache)
    x = self.norm(x)

    new_cache = None
    if cache is not None:
      added = length if attention_mask is None else attention_mask.astype(jnp.int32).sum(1)
      new_cache = {"k": [c["k"] for c in new_layer_caches],
                   "v": [c["v"] for c in new_layer_caches],
                   "lengths": cache["lengths"] + added}
    if not return_logits:
      return x, new_cache
    return self.unembed(x), new_cache

  def unembed(self, hidden: Array) -> Array:
    """Final hidden states [..., D] -> logits [..., V] (float32)."""
    cfg = self.config
    return unembed_with(cfg, self.embed_tokens if cfg.tie_embeddings else self.lm_head, hidden)


def unembed_with(config: TransformerConfig, table: Array, hidden: Array) -> Array:
  """Logits [..., V'] (float32) of final hidden states [..., D] against an unembedding
  table: `embed_tokens` rows [V', D] when the embeddings are tied, else `lm_head`
  columns [D, V'] (V' may be a slice of the vocabulary)."""
  transpose = config.tie_embeddings
  logits = _dense(hidden, table, config.compute_dtype, transpose_w=transpose)
  return constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))


def init_cache(config: TransformerConfig, batch_size: int, max_length: int,
               dtype=None) -> dict:
  """An empty KV cache with `max_length` slots per row: per layer, keys `[B, K, E, S]`
  (transposed, see `Attention`) and values `[B, K, S, E]`."""
  dtype = config.compute_dtype if dtype is None else dtype
  b, k, e = batch_size, config.num_kv_heads, config.head_size
  zeros = lambda shape: [jnp.zeros(shape, dtype) for _ in range(config.num_layers)]
  return {"k": zeros((b, k, e, max_length)), "v": zeros((b, k, max_length, e)),
          "lengths": jnp.zeros((batch_size,), jnp.int32)}
