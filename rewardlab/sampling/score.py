"""Log-probabilities of given completions under a model: one forward over prompt+completion.

This is what RL (old/reference log-probs), DPO implicit rewards and GenARM scoring need.
Rows are `prompt + completion`, right padded; for completion token `y_t` at position
`n + t` (prompt length `n`) the log-probability reads the logits at position `n + t - 1`:

    log p(y_t | x, y_<t) = z[n+t-1, y_t] / tau - logsumexp(z[n+t-1] / tau)

with `tau` the temperature (1 = the model's own distribution).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab import models, sharding
from rewardlab.models import logprobs as logprobs_lib
from rewardlab.models.config import TransformerConfig


@functools.partial(jax.jit, static_argnames=("config", "temperature"))
def token_logprobs(config: TransformerConfig, params, tokens, attention_mask, *,
                   temperature: float = 1.0):
  """Next-token log-probabilities `[B, T]`: entry t is `log p(tokens[t] | tokens[<t])`.

  tokens, attention_mask: [B, T] right padded (1 = real token). Entry 0 and padded
  positions are 0. A pure array function: usable inside a loss. The logits are formed
  in chunks of `config.logprob_chunk` positions (`rewardlab.models.logprobs`).
  """
  hidden = models.hidden_states(config, params, tokens, attention_mask=attention_mask)
  logprobs = logprobs_lib.next_token_logprobs(config, params, hidden, tokens,
                                              temperature=temperature)
  return jnp.where(attention_mask.astype(bool), logprobs, 0.0)


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
         pad_id: int = 0, multiple: int = 16, num_rows: int | None = None):
  """Rows `prompt + completion`, right padded to a width rounded up to `multiple`.

  Returns tokens, attention_mask and completion_mask, each [num_rows, W] (completion_mask
  is 1 at completion tokens). Extra rows (num_rows > len(prompts)) are one pad token.
  """
  if len(prompts) != len(completions):
    raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
  if not prompts:
    raise ValueError("score: no prompts given")
  for i, p in enumerate(prompts):
    if len(p) == 0:
      raise ValueError(f"score: prompt {i} is empty (the first completion token needs "
                       f"context; start prompts with BOS)")
  num_rows = len(prompts) if num_rows is None else num_rows
  total = max(len(p) + len(c) for p, c in zip(prompts, completions))
  width = int(-(-total // multiple) * multiple)
  tokens = np.full((num_rows, width), pad_id, np.int32)
  attention = np.zeros((num_rows, width), np.int32)
  completion = np.zeros((num_rows, width), np.int32)
  attention[len(prompts):, 0] = 1
  for i, (p, c) in enumerate(zip(prompts, completions)):
    n, m = len(p), len(c)
    tokens[i, :n + m] = list(p) + list(c)
    attention[i, :n + m] = 1
    completion[i, n:n + m] = 1
  return tokens, attention, completion


def completion_logprobs(config: TransformerConfig, params, prompts: Sequence[Sequence[int]],
                        completions: Sequence[Sequence[int]], *, temperature: float = 1.0,
                        batch_size: int | None = None, pad_id: int = 0,
                        mesh=None) -> list[np.ndarray]:
  """Per-token log-probabilities of each completion given its prompt (float32 arrays).

  `completions[i]` is scored after `prompts[i]`; an empty completion gives an empty
  array. Rows run in batches of `batch_size` (default: all at once), all padded to one
  width so that a single compiled function serves every batch. With a `mesh` the batch
  is sharded over the data axes.
  """
  if temperature <= 0:
    raise ValueError(f"score: temperature must be > 0, got {temperature}")
  data_size = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
  batch_size = len(prompts) if batch_size is None else int(batch_size)
  if batch_size <= 0:
    raise ValueError(f"score: batch_size must be positive, got {batch_size}")
  batch_size = -(-batch_size // data_size) * data_size
  num_batches = -(-len(prompts) // batch_size) if prompts else 1
  tokens, attention, completion = pack(prompts, completions, pad_id=pad_id,
                                       num_rows=num_batches * batch_size)
  chunks = []
  with sharding.use_mesh(mesh):
    for start in range(0, len(tokens), batch_size):
      part = slice(start, start + batch_size)
      batch = sharding.shard_batch({"tokens": tokens[part], "mask": attention[part]}, mesh)
      chunks.append(token_logprobs(config, params, batch["tokens"], batch["mask"],
                                   temperature=float(temperature)))
  logprobs = np.concatenate([np.asarray(jax.device_get(c)) for c in chunks])
  return [logprobs[i][completion[i].astype(bool)] for i in range(len(prompts))]


def sequence_logprob(config: TransformerConfig, params, prompts: Sequence[Sequence[int]],
                      completions: Sequence[Sequence[int]], **kwargs) -> np.ndarray:
  """`[N]` float32: `log p(completion_i | prompt_i) = sum_t log p(y_t | x, y_<t)`.

  Keyword arguments are those of `completion_logprobs`.
  """
  per_token = completion_logprobs(config, params, prompts, completions, **kwargs)
  return np.array([lp.sum(dtype=np.float64) for lp in per_token], np.float32)
