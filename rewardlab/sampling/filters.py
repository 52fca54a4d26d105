"""How the next token is drawn: temperature, top-k, top-p, min-p, and the log-probability.

All functions take logits `[B, V]` float32 and are safe under `jit`; sampling settings
are a hashable `SamplingParams` (a static argument: each distinct setting compiles once).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How the next token is drawn. temperature 0 means greedy (argmax, no randomness).

  top_k 0 disables top-k; top_p 1.0 disables nucleus sampling; min_p 0 disables min-p.
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

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


def filter_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
  """Tempered, truncated logits `[B, V]`: removed tokens get -inf.

  With `z = logits / temperature` and `p = softmax(z)`, applied in this order, each on
  the distribution left (renormalized) by the previous one:
  * top-k: keep tokens with `z >= z_(k)` (the k-th largest; ties with it are kept);
  * top-p: sort the kept tokens by probability, keep the shortest prefix whose mass
    reaches `top_p` (a token is kept iff the mass strictly before it is `< top_p`, so
    the token that crosses `top_p` is kept; ties with the last kept token are kept);
  * min-p: keep tokens with `p >= min_p * max(p)`, i.e. `z >= max(z) + log(min_p)`.
  Sampling from `softmax` of the result draws from the truncated renormalized
  distribution. Greedy (temperature 0) is handled by `choose_tokens`, not here.
  """
  if params.greedy:
    raise ValueError("filter_logits: temperature 0 is greedy; use choose_tokens")
  z = logits.astype(jnp.float32) / params.temperature
  top = None
  if params.top_k:
    top = jax.lax.top_k(z, min(params.top_k, z.shape[-1]))[0]  # [B, k] descending
    z = jnp.where(z >= top[:, -1:], z, -jnp.inf)
  if params.top_p < 1.0:
    ordered = top if top is not None else -jnp.sort(-z, axis=-1)  # [B, V'] descending
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    count = jnp.sum(before < params.top_p, axis=-1, keepdims=True)  # >= 1
    threshold = jnp.take_along_axis(ordered, count - 1, axis=-1)
    z = jnp.where(z >= threshold, z, -jnp.inf)
  if params.min_p > 0.0:
    floor = jnp.max(z, axis=-1, keepdims=True) + jnp.log(params.min_p)
    z = jnp.where(z >= floor, z, -jnp.inf)
  return z


def choose_tokens(logits: jax.Array, keys: jax.Array, params: SamplingParams):
  """Next tokens `[B]` int32 and their model log-probabilities `[B]` float32.

  keys: `[B]` one PRNG key per row (ignored when greedy). The log-probability is the
  model's: `log softmax(logits)[token]`, untempered and untruncated (what RL ratios and
  scoring compare against), computed with one logsumexp over the vocabulary.
  """
  logits = logits.astype(jnp.float32)
  if params.greedy:
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  else:
    filtered = filter_logits(logits, params)
    token = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
  chosen = jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0]
  return token, chosen - jax.nn.logsumexp(logits, axis=-1)
