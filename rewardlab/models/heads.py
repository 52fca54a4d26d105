"""Reward heads: pure functions over the backbone's final hidden states.

Dimension letters: B batch, T tokens, D model width, K head outputs (attributes),
S steps, V vocabulary.

Every head reads the final (normed) hidden states `[B, T, D]` of a causal
transformer:

- outcome (Bradley-Terry): `r_b = w · h[b, score_index_b]`, one scalar per sequence,
  read at the last non-pad token (the EOS). No bias, so that the head is exactly a
  Hugging Face `score` layer (`score.weight = w^T`, `[1, D]`); a bias would cancel in
  every pairwise loss anyway.
- attributes (HelpSteer2 regression): `s_b = W^T h[b, score_index_b] + c`, `[B, K]`.
- process, classifier form: `z_bk = w · h[b, step_positions_bk] + c`, `[B, S]`.
- process, LM-token form (Math-Shepherd / RLHFlow): `z_bk = u_+ · h - u_- · h` with
  `u_±` the backbone's unembedding columns of two designated tokens, so that
  `σ(z) = softmax([z_+, z_-])_0`.
- process, GenARM form (a token-level reward's partial sums as step values, as in the
  implicit PRM of Yuan et al. 2024 without a reference model): `z_bk = β Σ_t m_bt
  log π_r(y_t | x, y_<t) + c` over the response tokens up to `step_positions_bk`. Made
  from a policy, it starts as the policy's own likelihood of the solution so far.
- value (PPO critic): `v_bt = w · h[b, t] + c` at every position, `[B, T]`.
- GenARM: the LM itself is the reward model; `log π_r(y_t | x, y_<t)` per token from the
  logits and `r = β Σ_t m_t log π_r(y_t | ...)` over the response tokens.

Parameters are plain dicts. `init_linear_head` returns them boxed with logical axis
names ('embed' for D, 'attributes' for K), so `rewardlab.sharding.sharded_init`
creates them sharded by the same rules table as the backbone.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewardlab.losses import preference as preference_losses
from rewardlab.losses import process as process_losses

Array = jax.Array


# ----------------------------------------------------------------------------- parameters


def init_linear_head(rng, hidden_size: int, num_outputs: int = 1, *, bias: bool = True,
                     dtype=jnp.float32, stddev: float | None = None) -> dict:
  """Boxed params of a linear head: `kernel [D, K]` ('embed', 'attributes'), `bias [K]`.

  The kernel is `N(0, stddev²)` with `stddev = 1/sqrt(D)` by default (unit-scale
  outputs from RMS-normed hidden states); the bias starts at 0.
  """
  if hidden_size < 1 or num_outputs < 1:
    raise ValueError(f"init_linear_head: hidden_size={hidden_size} and "
                     f"num_outputs={num_outputs} must be positive")
  stddev = hidden_size ** -0.5 if stddev is None else stddev
  kernel = stddev * jax.random.normal(rng, (hidden_size, num_outputs), jnp.float32)
  params = {"kernel": nn.LogicallyPartitioned(kernel.astype(dtype), ("embed", "attributes"))}
  if bias:
    params["bias"] = nn.LogicallyPartitioned(jnp.zeros((num_outputs,), dtype), ("attributes",))
  return params


def linear_head(params: dict, hidden: Array) -> Array:
  """`[..., D] -> [..., K]`: `h W + c` in float32 (c only when the head has a bias)."""
  out = jnp.einsum("...d,dk->...k", hidden.astype(jnp.float32),
                   params["kernel"].astype(jnp.float32))
  if "bias" in params:
    out = out + params["bias"].astype(jnp.float32)
  return out


# ----------------------------------------------------------------------------- reading positions


def gather_positions(hidden: Array, positions: Array) -> Array:
  """`hidden [B, T, D]`, `positions [B, S]` int -> `[B, S, D]` (row b at its positions)."""
  return jnp.take_along_axis(hidden, positions[:, :, None].astype(jnp.int32), axis=1)


def gather_last(hidden: Array, score_index: Array) -> Array:
  """`hidden [B, T, D]`, `score_index [B]` -> `[B, D]`, the state at each row's index."""
  return gather_positions(hidden, score_index[:, None])[:, 0]


# ----------------------------------------------------------------------------- heads


def outcome_head(params: dict, hidden: Array, score_index: Array) -> Array:
  """Scalar reward at `score_index` (the EOS): `[B, T, D], [B] -> [B]`."""
  return linear_head(params, gather_last(hidden, score_index))[:, 0]


def attribute_head(params: dict, hidden: Array, score_index: Array) -> Array:
  """K attribute scores at `score_index`: `[B, T, D], [B] -> [B, K]`."""
  return linear_head(params, gather_last(hidden, score_index))


def weighted_attributes(scores: Array, weights) -> Array:
  """Ranking reward from attribute scores: `Σ_k w_k s_k`, `[B, K], [K] -> [B]`."""
  return scores @ jnp.asarray(weights, jnp.float32)


def step_classifier_head(params: dict, hidden: Array, step_positions: Array) -> Array:
  """One logit per step, read at `step_positions`: `[B, T, D], [B, S] -> [B, S]`."""
  return linear_head(params, gather_positions(hidden, step_positions))[..., 0]


def step_lm_token_head(unembed: Callable[[Array], Array], hidden: Array, step_positions: Array,
                       plus_id: int, minus_id: int) -> Array:
  """LM-token step logit `z_+ - z_-` at `step_positions`: `[B, T, D], [B, S] -> [B, S]`.

  `unembed` maps final hidden states `[..., D]` to the backbone's logits `[..., V]`
  (e.g. `functools.partial(models.unembed, config, params)`).
  """
  logits = unembed(gather_positions(hidden, step_positions))  # [B, S, V]
  return process_losses.lm_token_step_logits(logits[..., plus_id], logits[..., minus_id])


def value_head(params: dict, hidden: Array) -> Array:
  """Per-token values for PPO: `[B, T, D] -> [B, T]`."""
  return linear_head(params, hidden)[..., 0]


# ----------------------------------------------------------------------------- token log-probs


def token_logprobs(logits: Array, tokens: Array) -> Array:
  """Log-probability of each token given the ones before it: `[B, T, V], [B, T] -> [B, T]`.

  `out[b, t] = log softmax(logits[b, t-1])[tokens[b, t]]` for t >= 1 and `out[b, 0] = 0`
  (the first token has no prediction). Computed as `z_y - logsumexp(z)` in float32.
  """
  logits = logits[:, :-1].astype(jnp.float32)  # position t-1 predicts token t
  targets = tokens[:, 1:, None].astype(jnp.int32)
  picked = jnp.take_along_axis(logits, targets, axis=-1)[..., 0]
  logps = picked - jax.nn.logsumexp(logits, axis=-1)  # [B, T-1]
  return jnp.pad(logps, ((0, 0), (1, 0)))


def response_mask(mask: Array, prompt_length: Array) -> Array:
  """1 on response tokens: `t >= prompt_length_b` and `mask[b, t] = 1`. `[B, T], [B] -> [B, T]`."""
  positions = jnp.arange(mask.shape[1], dtype=jnp.int32)[None]
  return (mask.astype(bool) & (positions >= prompt_length[:, None])).astype(jnp.int32)


def step_genarm_head(logps: Array, mask: Array, prompt_length: Array, step_positions: Array,
                     beta: float, bias: Array) -> Array:
  """GenARM-form step logits `β Σ_{prompt_length <= t <= p_k} log π_r(y_t | ...) + c` from
  the LM's `token_logprobs`: `[B, T], [B, T], [B], [B, S] -> [B, S]`."""
  logps = logps * response_mask(mask, prompt_length)
  partial = jnp.cumsum(logps, axis=1)  # [B, T]: the response's log-prob up to token t
  at_steps = jnp.take_along_axis(partial, step_positions.astype(jnp.int32), axis=1)
  return beta * at_steps + bias.astype(jnp.float32)[0]


def genarm_head(logits: Array, tokens: Array, mask: Array, prompt_length: Array,
                beta: float) -> Array:
  """GenARM reward `r_b = β Σ_t m_bt log π_r(y_t | x, y_<t)` over the response: `-> [B]`."""
  return genarm_reward_from_logprobs(token_logprobs(logits, tokens), mask, prompt_length, beta)


def genarm_reward_from_logprobs(logps: Array, mask: Array, prompt_length: Array,
                                beta: float) -> Array:
  """`genarm_head` from the LM's `token_logprobs` `[B, T]` (e.g. computed in chunks)."""
  return preference_losses.genarm_reward(logps, response_mask(mask, prompt_length), beta)
