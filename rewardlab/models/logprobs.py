"""Token log-probs, entropy and KL from final hidden states, without the full logits.

At a real vocabulary the logits of a batch do not fit: one float32 `[B, T, V]` tensor
at B x T = 64 x 320 and V = 49,152 is 4 GB, and autodiff keeps several. Here the
logits exist one piece at a time:

- over the sequence: positions are cut into chunks of `c`; a `lax.scan` computes each
  chunk's logits `[B, c, V]`, reduces them to per-token statistics and drops them. The
  chunk body is `jax.checkpoint`ed, so the backward pass recomputes a chunk's logits
  from its hidden states instead of keeping every chunk's;
- over the vocabulary (`vocab_chunk > 0`): a chunk's row is reduced with an online
  logsumexp over vocabulary slices `[B, c, v]` (running max `m`, `s = Σ e^{z-m}`,
  `u = Σ e^{z-m} (z - m)`), also checkpointed.

With `z = logits / τ` (τ the temperature), `lse = logsumexp(z) = m + log s`:

    log p(y) = z_y - lse,     H = -Σ_v p_v log p_v = log s - u / s

(both terms of H are non-negative, so large logits lose no precision to cancellation).

and, given reference log-probs of the same tokens, the per-token KL estimate
`kl_penalty(log p, log p_ref)` (k1 / k2 / k3, SPECS §2). Gradients are those of the
unchunked computation (tests compare both, values and gradients, to 1e-5).

Dimension letters: B batch, T positions, D model width, V vocabulary, c positions per
chunk, v vocabulary entries per chunk.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rewardlab.losses.policy import kl_penalty
from rewardlab.models import hidden_states
from rewardlab.models.config import TransformerConfig
from rewardlab.models.transformer import unembed_with

Array = jax.Array
# Logits per chunk when `logprob_chunk` is 0: 2^24 float32 values are 64 MB.
AUTO_CHUNK_ELEMENTS = 1 << 24


class TokenStats(NamedTuple):
  """Per-token statistics `[B, T]` of softmax(logits / τ): `logprobs` of the given
  targets and `entropy` of the whole distribution."""

  logprobs: Array
  entropy: Array


def unembedding_table(config: TransformerConfig, params) -> Array:
  """The table `unembed_with` reads: `embed_tokens` [V, D] if tied, else `lm_head` [D, V]."""
  return params["embed_tokens"] if config.tie_embeddings else params["lm_head"]


def sequence_chunk(config: TransformerConfig, batch: int, length: int,
                   chunk: int | None = None) -> int:
  """Positions per chunk: `chunk`, else `config.logprob_chunk`, else (0) as many as keep a
  chunk's logits `[batch, c, V]` within `AUTO_CHUNK_ELEMENTS`; never more than `length`."""
  chunk = config.logprob_chunk if chunk is None else int(chunk)
  if chunk < 0:
    raise ValueError(f"logprob chunk must be >= 0 (0 = automatic), got {chunk}")
  if chunk == 0:
    chunk = max(1, AUTO_CHUNK_ELEMENTS // max(1, batch * config.vocab_size))
  return max(1, min(chunk, length))


def _whole_vocab(config, table, hidden, targets, temperature):
  """Statistics of one chunk with its full logits `[B, c, V]`."""
  z = unembed_with(config, table, hidden) / temperature  # [B, c, V]
  logp = jax.nn.log_softmax(z, axis=-1)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return picked, -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _vocab_slice(config, table, start, size):
  axis = 0 if config.tie_embeddings else 1  # [V, D] rows or [D, V] columns
  return jax.lax.dynamic_slice_in_dim(table, start, size, axis=axis)


def _online_vocab(config, table, hidden, targets, temperature, vocab_chunk):
  """Statistics of one chunk by an online logsumexp over vocabulary slices `[B, c, v]`.

  The last slice is shifted back to end at V; entries it shares with the slice before
  are masked, so every vocabulary entry counts once.
  """
  vocab = config.vocab_size
  size = min(vocab_chunk, vocab)
  num = -(-vocab // size)
  shape = hidden.shape[:-1]

  @jax.checkpoint
  def body(carry, i):
    m, s, u, picked = carry
    first = i * size
    start = jnp.minimum(first, vocab - size)
    z = unembed_with(config, _vocab_slice(config, table, start, size), hidden) / temperature
    cols = start + jnp.arange(size)
    valid = cols >= first  # [v]
    z_valid = jnp.where(valid, z, -jnp.inf)
    m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(z_valid, axis=-1)))  # lse is m-free
    shift = jnp.where(jnp.isfinite(m), m - m_new, 0.0)  # <= 0; 0 before the first slice
    scale = jnp.exp(shift)
    centered = jnp.where(valid, z - m_new[..., None], 0.0)  # <= 0
    e = jnp.where(valid, jnp.exp(centered), 0.0)
    u = scale * (u + shift * s) + jnp.sum(e * centered, axis=-1)
    s = s * scale + jnp.sum(e, axis=-1)
    hit = valid & (cols == targets[..., None])
    picked = picked + jnp.sum(jnp.where(hit, z, 0.0), axis=-1)
    return (m_new, s, u, picked), None

  zeros = jnp.zeros(shape, jnp.float32)
  init = (jnp.full(shape, -jnp.inf, jnp.float32), zeros, zeros, zeros)
  (m, s, u, picked), _ = jax.lax.scan(body, init, jnp.arange(num))
  lse = m + jnp.log(s)
  return picked - lse, jnp.log(s) - u / s  # two non-negative terms: no cancellation


def token_stats_from_hidden(config: TransformerConfig, params, hidden: Array, targets: Array, *,
                            temperature: float = 1.0, chunk: int | None = None,
                            vocab_chunk: int | None = None) -> TokenStats:
  """Log-probs of `targets` and entropies under softmax(unembed(hidden) / τ), chunked.

  Args:
    config, params: the transformer and its parameters (only the unembedding is read).
    hidden: [B, T, D] final (normed) hidden states; position t predicts `targets[:, t]`.
    targets: [B, T] int token ids.
    temperature: τ > 0.
    chunk: positions per sequence chunk (None: `config.logprob_chunk`; 0: automatic).
    vocab_chunk: vocabulary entries per slice (None: `config.logprob_vocab_chunk`;
      0: whole rows).
  Returns:
    TokenStats of [B, T] float32 arrays. No `[B, T, V]` array is formed unless one
    chunk covers every position.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  batch, length = targets.shape
  if hidden.shape[:2] != (batch, length):
    raise ValueError(f"hidden {hidden.shape} and targets {targets.shape} disagree on [B, T]")
  vocab_chunk = config.logprob_vocab_chunk if vocab_chunk is None else int(vocab_chunk)
  c = sequence_chunk(config, batch, length, chunk)
  table = unembedding_table(config, params)
  targets = targets.astype(jnp.int32)
  if vocab_chunk:
    piece = functools.partial(_online_vocab, config, vocab_chunk=vocab_chunk,
                              temperature=temperature)
  else:
    piece = functools.partial(_whole_vocab, config, temperature=temperature)
  if c >= length:
    return TokenStats(*piece(table, hidden, targets))

  num = -(-length // c)
  pad = num * c - length
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  split = lambda x: jnp.moveaxis(x.reshape(batch, num, c, *x.shape[2:]), 1, 0)  # [n, B, c, ...]
  piece = jax.checkpoint(piece)

  def body(_, xs):
    return None, piece(table, *xs)

  _, (logprobs, entropy) = jax.lax.scan(body, None, (split(hidden), split(targets)))
  join = lambda x: jnp.moveaxis(x, 0, 1).reshape(batch, num * c)[:, :length]
  return TokenStats(join(logprobs), join(entropy))


def next_token_logprobs(config: TransformerConfig, params, hidden: Array, tokens: Array, *,
                        temperature: float = 1.0, chunk: int | None = None) -> Array:
  """`[B, T]`: entry t is `log p(tokens[t] | tokens[<t])` read from `hidden[:, t-1]`;
  entry 0 is 0 (as `heads.token_logprobs`, without its `[B, T, V]` logits)."""
  stats = token_stats_from_hidden(config, params, hidden[:, :-1], tokens[:, 1:],
                                  temperature=temperature, chunk=chunk)
  return jnp.pad(stats.logprobs, ((0, 0), (1, 0)))


def policy_token_stats(config: TransformerConfig, params, tokens: Array, attention_mask: Array,
                       completion_index: Array, completion_tokens: Array, *,
                       temperature: float = 1.0, chunk: int | None = None,
                       ref_logprobs: Array | None = None, kl_estimator: str = "k3") -> dict:
  """One forward pass, then the RL statistics of the completion tokens, chunked.

  Args:
    tokens, attention_mask: [N, W] `prompt ++ completion` rows, right padded.
    completion_index: [N, T] position whose hidden state predicts completion token t
      (`len(prompt) - 1 + t`, as in the RL training batch).
    completion_tokens: [N, T] the sampled tokens.
    temperature: the policy is softmax(logits / τ).
    ref_logprobs: optional [N, T] reference log-probs of the same tokens.
  Returns:
    {"logp": [N, T], "entropy": [N, T], "hidden": [N, T, D] (the gathered states, for a
    value head)} and, with `ref_logprobs`, "kl": [N, T] `kl_penalty(logp, ref_logprobs)`.
    Masking is the caller's (`masked_mean(entropy, completion_mask)`).
  """
  hidden = hidden_states(config, params, tokens, attention_mask=attention_mask)  # [N, W, D]
  h = jnp.take_along_axis(hidden, completion_index[..., None], axis=1)  # [N, T, D]
  stats = token_stats_from_hidden(config, params, h, completion_tokens,
                                  temperature=temperature, chunk=chunk)
  out = {"logp": stats.logprobs, "entropy": stats.entropy, "hidden": h}
  if ref_logprobs is not None:
    out["kl"] = kl_penalty(stats.logprobs, ref_logprobs, kl_estimator)
  return out
