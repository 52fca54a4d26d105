"""Batched autoregressive sampling with a preallocated KV cache, all under `jit`.

Prefill runs once per prompt (right-padded batch of prompts of any lengths); the prompt
cache is then repeated for `num_samples` samples per prompt, and one `lax.while_loop`
decodes until every row has stopped or `max_new_tokens` is reached.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab import models, sharding
from rewardlab.models.config import TransformerConfig


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How the next token is drawn. temperature 0 means greedy.

  top_k 0 disables top-k; top_p 1.0 disables nucleus sampling; min_p 0 disables min-p
  (keep tokens with probability >= min_p * max probability).
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  min_p: float = 0.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not 0.0 <= self.min_p < 1.0:
      raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclasses.dataclass
class GenerateOutput:
  """`tokens` [N, max_new_tokens] completions (samples of one prompt adjacent), padded with
  `pad_id` after `lengths` [N]; `logprobs` [N, max_new_tokens] are the model's (untempered,
  untruncated) log-probabilities of the sampled tokens, 0 after `lengths`."""

  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray

  def completions(self) -> list[list[int]]:
    return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


def filter_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
  """Temperature, then top-k, top-p and min-p truncation (removed tokens get -inf).

  logits: [B, V] float32. Greedy (temperature 0) is handled by the caller.
  """
  logits = logits / params.temperature
  neg_inf = jnp.finfo(logits.dtype).min
  if params.top_k:
    kth = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if params.top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass strictly before it is < top_p (the crossing token is kept).
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < params.top_p
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, neg_inf)
  if params.min_p > 0.0:
    probs = jax.nn.softmax(logits, axis=-1)
    threshold = params.min_p * probs.max(axis=-1, keepdims=True)
    logits = jnp.where(probs >= threshold, logits, neg_inf)
  return logits


def _sample(rng, logits, params: SamplingParams):
  if params.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, filter_logits(logits, params), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "num_samples",
                                              "sampling", "stop_tokens", "pad_id"))
def _generate(params, prompt_tokens, prompt_lengths, rng, *, config: TransformerConfig,
              max_new_tokens: int, num_samples: int, sampling: SamplingParams,
              stop_tokens: tuple[int, ...], pad_id: int):
  num_prompts, prompt_len = prompt_tokens.shape
  slots = prompt_len + max_new_tokens
  mask = (jnp.arange(prompt_len)[None] < prompt_lengths[:, None]).astype(jnp.int32)
  cache = models.init_cache(config, num_prompts, slots)
  logits, cache = models.forward(config, params, prompt_tokens, attention_mask=mask, cache=cache)
  last = jnp.take_along_axis(logits, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]  # [P, V]

  # Share each prompt's cache among its samples.
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  cache = jax.tree.map(repeat, cache)
  last = repeat(last)
  batch = num_prompts * num_samples
  stops = jnp.asarray(stop_tokens if stop_tokens else (-1,), jnp.int32)

  def cond(carry):
    step, _, _, done, *_ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, tokens, logprobs, done, lengths, cache, last, rng = carry
    rng, key = jax.random.split(rng)
    token = _sample(key, last, sampling)
    logprob = jnp.take_along_axis(jax.nn.log_softmax(last, axis=-1), token[:, None], axis=1)[:, 0]
    token = jnp.where(done, pad_id, token)
    tokens = tokens.at[:, step].set(token)
    logprobs = logprobs.at[:, step].set(jnp.where(done, 0.0, logprob))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.isin(token, stops)
    logits, cache = models.forward(config, params, token[:, None], cache=cache)
    return step + 1, tokens, logprobs, done, lengths, cache, logits[:, 0], rng

  carry = (jnp.int32(0), jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
           jnp.zeros((batch, max_new_tokens), jnp.float32), jnp.zeros((batch,), bool),
           jnp.zeros((batch,), jnp.int32), cache, last, rng)
  _, tokens, logprobs, _, lengths, _, _, _ = jax.lax.while_loop(cond, body, carry)
  return tokens, lengths, logprobs


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 16):
  """Right-pad token lists to a length rounded up to `multiple` (bounds recompiles)."""
  if not prompts:
    raise ValueError("generate: no prompts given")
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.min() == 0:
    raise ValueError(f"generate: prompt {int(lengths.argmin())} is empty")
  width = int(-(-lengths.max() // multiple) * multiple)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  for i, p in enumerate(prompts):
    tokens[i, :len(p)] = p
  return tokens, lengths


def generate(config: TransformerConfig, params, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, temperature: float, top_k: int = 0, top_p: float = 1.0,
             min_p: float = 0.0, stop_tokens: Sequence[int] = (), num_samples: int = 1,
             rng=None, pad_id: int = 0, mesh=None) -> GenerateOutput:
  """Sample `num_samples` completions for each prompt (token id lists of any length).

  Rows stop after emitting any of `stop_tokens` (the stop token is included in the
  completion and in `lengths`). Deterministic for a given `rng`. With a `mesh`, the
  batch is sharded over the data axes.
  """
  if max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
  if num_samples <= 0:
    raise ValueError(f"num_samples must be positive, got {num_samples}")
  sampling = SamplingParams(temperature=float(temperature), top_k=int(top_k),
                            top_p=float(top_p), min_p=float(min_p))
  if rng is None:
    if temperature != 0.0:
      raise ValueError("generate: pass rng when temperature > 0")
    rng = jax.random.key(0)
  tokens, lengths = pad_prompts(prompts, pad_id)
  if tokens.shape[1] + max_new_tokens > config.max_position_embeddings:
    raise ValueError(f"generate: prompt length {tokens.shape[1]} + max_new_tokens "
                     f"{max_new_tokens} exceeds max_position_embeddings "
                     f"{config.max_position_embeddings}")
  inputs = {"tokens": tokens, "lengths": lengths}
  inputs = sharding.shard_batch(inputs, mesh)
  with sharding.use_mesh(mesh):
    out = _generate(params, inputs["tokens"], inputs["lengths"], rng, config=config,
                    max_new_tokens=int(max_new_tokens), num_samples=int(num_samples),
                    sampling=sampling, stop_tokens=tuple(int(t) for t in stop_tokens),
                    pad_id=int(pad_id))
  tokens_out, lengths_out, logprobs_out = jax.device_get(out)
  return GenerateOutput(tokens=np.asarray(tokens_out), lengths=np.asarray(lengths_out),
                        logprobs=np.asarray(logprobs_out))
