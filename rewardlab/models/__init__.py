"""Pure-functional entry points over the flax transformer.

Parameters are plain pytrees (the `params` collection of the linen module); every
function here takes `(config, params, ...)` and is safe to call under `jax.jit`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewardlab import sharding
from rewardlab.models.config import TransformerConfig, tiny_config
from rewardlab.models.transformer import Transformer, init_cache

__all__ = [
    "TransformerConfig", "Transformer", "tiny_config", "init_params", "init_cache",
    "logits", "hidden_states", "forward", "unembed", "param_logical_axes",
]


def _boxed_init(config: TransformerConfig, rng):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Transformer(config).init(rng, tokens)["params"]


def init_params(config: TransformerConfig, rng, *, mesh=None):
  """Random parameters; with a mesh they are created already sharded."""
  params, _ = sharding.sharded_init(functools.partial(_boxed_init, config), mesh, rng)
  return params


def _abstract_boxed(config: TransformerConfig):
  return jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0))


def param_logical_axes(config: TransformerConfig):
  """Tree of logical axis-name tuples, matching the parameter tree."""
  return sharding.logical_axes_of(_abstract_boxed(config))


def param_shardings(config: TransformerConfig, mesh):
  """Tree of NamedShardings of the parameters on `mesh` (by the logical rules)."""
  abstract = _abstract_boxed(config)
  return sharding.tree_shardings(sharding.logical_axes_of(abstract), nn.meta.unbox(abstract),
                                 mesh)


def forward(config: TransformerConfig, params, tokens, *, positions=None, attention_mask=None,
            cache=None, return_logits=True):
  """The model call: returns `(logits or final hidden, new_cache)`; see `Transformer`."""
  return Transformer(config).apply({"params": params}, tokens, positions=positions,
                                   attention_mask=attention_mask, cache=cache,
                                   return_logits=return_logits)


@functools.partial(jax.jit, static_argnums=0)
def logits(config: TransformerConfig, params, tokens, *, attention_mask=None, positions=None):
  """[B, T] int tokens -> [B, T, V] float32 logits (right padding allowed via the mask)."""
  out, _ = forward(config, params, tokens, attention_mask=attention_mask, positions=positions)
  return out


def hidden_states(config: TransformerConfig, params, tokens, *, attention_mask=None,
                  positions=None):
  """[B, T] int tokens -> [B, T, D] float32 final (normed) hidden states."""
  out, _ = forward(config, params, tokens, attention_mask=attention_mask, positions=positions,
                   return_logits=False)
  return out


def unembed(config: TransformerConfig, params, hidden):
  """[..., D] final hidden states -> [..., V] logits."""
  return Transformer(config).apply({"params": params}, hidden, method=Transformer.unembed)
