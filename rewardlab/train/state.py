"""Train state and optimizer construction."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a pure train step reads and writes. The optimizer itself is static."""

  step: jax.Array
  params: Any
  opt_state: Any

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
    """State whose optimizer state inherits the parameters' shardings."""
    opt_state = jax.jit(tx.init)(params)
    step = jnp.zeros((), jnp.int32)
    first = jax.tree.leaves(params)[0]
    if isinstance(getattr(first, "sharding", None), jax.sharding.NamedSharding):
      replicated = jax.sharding.NamedSharding(first.sharding.mesh, jax.sharding.PartitionSpec())
      step = jax.device_put(step, replicated)
      opt_state = jax.tree.map(
          lambda x: x if isinstance(x.sharding, jax.sharding.NamedSharding)
          else jax.device_put(x, replicated), opt_state)
    return cls(step=step, params=params, opt_state=opt_state)


def warmup_cosine_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                           final_fraction: float = 0.1) -> optax.Schedule:
  """Linear warmup to `peak_lr`, then cosine decay to `final_fraction * peak_lr`."""
  warmup_steps = max(1, min(warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak_lr * final_fraction)


def adamw(schedule: optax.Schedule, *, weight_decay: float = 0.0, b1: float = 0.9,
          b2: float = 0.95, clip_norm: float | None = 1.0,
          skip_nonfinite: int = 0) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; decay is not applied to norms and biases (rank < 2).

  `skip_nonfinite` > 0 drops updates whose gradients are not finite (parameters and
  moments unchanged; `optax.apply_if_finite`), up to that many in a row.
  """
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                           mask=decay_mask))
  tx = optax.chain(*parts)
  return optax.apply_if_finite(tx, skip_nonfinite) if skip_nonfinite else tx


def scale_subtree(tx: optax.GradientTransformation, key: str,
                  multiplier: float) -> optax.GradientTransformation:
  """`tx` whose updates of the top-level subtree `params[key]` are scaled by `multiplier`
  (a faster learning rate for a new head on a pretrained backbone)."""
  if multiplier == 1.0:
    return tx
  mask = lambda params: {k: jax.tree.map(lambda _: k == key, v) for k, v in params.items()}
  return optax.chain(tx, optax.masked(optax.scale(multiplier), mask))
