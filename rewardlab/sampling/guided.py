"""GenARM reward-guided decoding: a base LM steered by token-level reward LMs.

At every step each model reads the same tokens with its own KV cache, and the next
token is drawn from

    z_t = log_softmax(base_t) + sum_k alpha_k * log_softmax(guide_{k,t}),
    y_t ~ softmax(z_t / tau)          (argmax z_t when tau = 0)

after the usual top-k / top-p / min-p truncation of `z_t / tau`. A guide is an
autoregressive reward model `pi_r` (GenARM: `r(x, y) = beta * sum_t log pi_r(y_t | x, y_<t)`),
so `alpha = 1 / beta_decode` trades the base LM against the reward; several guides
give multi-objective decoding. The paper evaluates with alpha = 1, tau = 0.5.

Like `generate`, prefill runs once per prompt, each prompt's caches are shared by its
`num_samples` samples, and one jitted `lax.while_loop` decodes until every row stopped.
Rows draw their randomness as `generate` does (row r at step t uses
`fold_in(fold_in(rng, r), t)`), so with all alphas 0 the samples equal `generate`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab import models, sharding
from rewardlab.sampling.filters import SamplingParams, choose_tokens
from rewardlab.sampling.generate import GenerateOutput, pad_prompts

__all__ = ["GuidedOutput", "combine_logits", "guided_generate"]


@dataclasses.dataclass
class GuidedOutput(GenerateOutput):
  """`GenerateOutput` (whose `logprobs` are the base model's, untempered) plus
  `guided_logprobs` [N, max_new_tokens]: log softmax(z_t) at the sampled tokens
  (the guided distribution before temperature and truncation), 0 after `lengths`."""

  guided_logprobs: np.ndarray


def combine_logits(base: jax.Array, guides: Sequence[jax.Array], alphas: jax.Array) -> jax.Array:
  """z = log_softmax(base) + sum_k alphas[k] * log_softmax(guides[k]); all [B, V], alphas [K]."""
  z = jax.nn.log_softmax(base.astype(jnp.float32), axis=-1)
  for k, guide in enumerate(guides):
    z = z + alphas[k] * jax.nn.log_softmax(guide.astype(jnp.float32), axis=-1)
  return z


def _as_model(guide):
  """(config, params) from a pair or from an object with `config` and `params`."""
  if hasattr(guide, "config") and hasattr(guide, "params"):
    return guide.config, guide.params
  config, params = guide
  return config, params


def _row_keys(rng, batch: int):
  """One key per row, as `generate` derives them: row r draws at step t with
  fold_in(fold_in(rng, r), t), so draws do not depend on the batch around a row."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(batch))


@functools.partial(jax.jit, static_argnames=("configs", "max_new_tokens", "num_samples",
                                              "sampling", "pad_id"))
def _guided_generate(params, alphas, prompt_tokens, prompt_lengths, rng, stops, *, configs,
                     max_new_tokens: int, num_samples: int, sampling: SamplingParams,
                     pad_id: int):
  """params: tuple (base, guide_1, ...) matching `configs`; alphas [K]; stops [S] token
  ids shared by all rows (-1 = none)."""
  num_prompts, prompt_len = prompt_tokens.shape
  slots = prompt_len + max_new_tokens
  mask = (jnp.arange(prompt_len)[None] < prompt_lengths[:, None]).astype(jnp.int32)
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  caches, lasts = [], []
  for config, p in zip(configs, params):
    cache = models.init_cache(config, num_prompts, slots)
    hidden, cache = models.forward(config, p, prompt_tokens, attention_mask=mask, cache=cache,
                                   return_logits=False)
    last = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
    caches.append(jax.tree.map(repeat, cache))
    lasts.append(repeat(models.unembed(config, p, last)))  # [B, V]
  batch = num_prompts * num_samples
  row_keys = _row_keys(rng, batch)

  def cond(carry):
    step, rows, _, _ = carry
    return (step < max_new_tokens) & ~jnp.all(rows["done"])

  def body(carry):
    step, rows, caches, lasts = carry
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    z = combine_logits(lasts[0], lasts[1:], alphas)  # [B, V]
    token, guided_lp = choose_tokens(z, keys, sampling)
    base_lp = jnp.take_along_axis(jax.nn.log_softmax(lasts[0].astype(jnp.float32), axis=-1),
                                  token[:, None], axis=1)[:, 0]
    done = rows["done"]
    token = jnp.where(done, pad_id, token)
    hit = jnp.isin(token, stops) & ~done
    rows = {"tokens": rows["tokens"].at[:, step].set(token),
            "logprobs": rows["logprobs"].at[:, step].set(jnp.where(done, 0.0, base_lp)),
            "guided_logprobs": rows["guided_logprobs"].at[:, step].set(
                jnp.where(done, 0.0, guided_lp)),
            "lengths": rows["lengths"] + (~done).astype(jnp.int32),
            "stopped": rows["stopped"] | hit, "done": done | hit}
    new_caches, new_lasts = [], []
    for config, p, cache in zip(configs, params, caches):
      logits, cache = models.forward(config, p, token[:, None], cache=cache)
      new_caches.append(cache)
      new_lasts.append(logits[:, 0])
    return step + 1, rows, new_caches, new_lasts

  zeros = lambda dtype: jnp.zeros((batch, max_new_tokens), dtype)
  rows = {"tokens": jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
          "logprobs": zeros(jnp.float32), "guided_logprobs": zeros(jnp.float32),
          "lengths": jnp.zeros((batch,), jnp.int32), "stopped": jnp.zeros((batch,), bool),
          "done": jnp.zeros((batch,), bool)}
  step, rows, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), rows, caches, lasts))
  del rows["done"]
  return rows, step


def guided_generate(config, params, guides: Sequence, alphas: Sequence[float],
                    prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
                    top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                    stop_tokens: Sequence[int] = (), num_samples: int = 1, rng=None,
                    pad_id: int = 0, mesh=None) -> GuidedOutput:
  """Sample `num_samples` guided completions per prompt (token id lists of any length).

  Args:
    config, params: the base policy.
    guides: GenARM reward LMs, each a `(config, params)` pair or an object with
      `config` and `params`; they must share the base model's vocabulary.
    alphas: one weight per guide (traced: changing them does not recompile).
    Other arguments as in `rewardlab.sampling.generate`.

  With no guides (or all alphas 0) this samples from the base model alone.
  """
  if max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
  if num_samples <= 0:
    raise ValueError(f"num_samples must be positive, got {num_samples}")
  guides = [_as_model(g) for g in guides]
  if len(guides) != len(alphas):
    raise ValueError(f"got {len(guides)} guide models but {len(alphas)} alphas")
  for k, (gconfig, _) in enumerate(guides):
    if gconfig.vocab_size != config.vocab_size:
      raise ValueError(f"guide {k} has vocab_size {gconfig.vocab_size}, the base model "
                       f"{config.vocab_size}; guided decoding needs one shared vocabulary")
  sampling = SamplingParams(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                            min_p=float(min_p))
  if rng is None:
    if temperature != 0.0:
      raise ValueError("guided_generate: pass rng when temperature > 0")
    rng = jax.random.key(0)
  data_size = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
  num_rows = -(-len(prompts) // data_size) * data_size  # mesh padding: dummy prompts
  tokens, lengths = pad_prompts(prompts, pad_id, num_rows=num_rows)
  configs = (config, *(c for c, _ in guides))
  for k, c in enumerate(configs):
    if tokens.shape[1] + max_new_tokens > c.max_position_embeddings:
      raise ValueError(f"guided_generate: prompt length {tokens.shape[1]} + max_new_tokens "
                       f"{max_new_tokens} exceeds max_position_embeddings "
                       f"{c.max_position_embeddings} of model {k} (0 = base)")
  inputs = sharding.shard_batch({"tokens": tokens, "lengths": lengths}, mesh)
  with sharding.use_mesh(mesh):
    out = _guided_generate((params, *(p for _, p in guides)),
                           jnp.asarray(alphas if len(alphas) else (0.0,), jnp.float32),
                           inputs["tokens"], inputs["lengths"], rng,
                           jnp.asarray(tuple(int(t) for t in stop_tokens) or (-1,), jnp.int32),
                           configs=configs, max_new_tokens=int(max_new_tokens),
                           num_samples=int(num_samples), sampling=sampling, pad_id=int(pad_id))
  out, steps = out
  keep = len(prompts) * num_samples
  out = {k: np.asarray(v)[:keep] for k, v in jax.device_get(out).items()}
  return GuidedOutput(num_steps=int(steps), **out)
