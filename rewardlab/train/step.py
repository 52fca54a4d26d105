"""Pure, jitted train steps: `step(state, batch) -> (state, metrics)`.

`make_train_step` turns any `loss_fn(params, batch) -> (loss, metrics)` into a jitted
step with explicit input/output shardings, the state donated, and a retrace guard: a
second trace (a shape or dtype change that would silently recompile every step) raises.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rewardlab import sharding
from rewardlab.train.state import TrainState


class RetraceError(AssertionError):
  """A jitted step was traced more often than allowed (it would recompile every call)."""


LossFn = Callable[[Any, dict], tuple[jax.Array, dict]]


def guard_retraces(fn: Callable, *, max_traces: int = 1, name: str = "step") -> Callable:
  """`fn(state, batch, ...)` that raises `RetraceError` when traced more than `max_traces`
  times. Jit the result: each trace (a new batch shape or dtype) runs the wrapper, each
  cached call does not, so a step that would silently recompile fails instead."""
  traces = 0

  @functools.wraps(fn)
  def guarded(state, batch, *args, **kwargs):
    nonlocal traces
    traces += 1
    if traces > max_traces:
      raise RetraceError(
          f"{name} traced {traces} times (limit {max_traces}): a batch changed shape or "
          f"dtype; got {jax.tree.map(lambda x: (x.shape, x.dtype), batch)}")
    return fn(state, batch, *args, **kwargs)

  return guarded


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, mesh=None,
                    state_shardings=None, max_traces: int = 1):
  """A jitted train step over `loss_fn`.

  With a mesh, `state_shardings` (a TrainState of NamedShardings, e.g. from
  `state_shardings_of(state)`) fixes the state layout and batches are sharded on the
  data axes. The step is traced at most `max_traces` times.
  """

  @functools.partial(guard_retraces, max_traces=max_traces, name="train step")
  def step(state: TrainState, batch: dict):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   param_norm=optax.tree.norm(params))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=0)

  batch_spec = lambda batch: jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim), batch)
  jitted_cache: dict = {}

  def sharded_step(state, batch):
    key = jax.tree.structure(batch)
    if key not in jitted_cache:
      jitted_cache[key] = jax.jit(step, in_shardings=(state_shardings, batch_spec(batch)),
                                  out_shardings=(state_shardings, None), donate_argnums=0)
    with sharding.use_mesh(mesh):
      return jitted_cache[key](state, batch)

  return sharded_step


def state_shardings_of(state: TrainState):
  """The current shardings of a (placed) train state, for `make_train_step`."""
  return jax.tree.map(lambda x: x.sharding, state)


def causal_lm_loss(forward_logits: Callable, params, batch: dict):
  """Masked next-token cross-entropy.

  batch: `tokens` [B, T] int, `loss_mask` [B, T] (1 where the token is a *target*, e.g.
  the solution and EOS but not the prompt), `attention_mask` [B, T] optional.
  The prediction at position t is scored against token t+1 where `loss_mask[t+1]` is 1.
  """
  tokens = batch["tokens"]
  logits = forward_logits(params, tokens, batch.get("attention_mask"))  # [B, T, V]
  targets = tokens[:, 1:]
  weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
  num_tokens = jnp.maximum(weights.sum(), 1.0)
  loss = (losses * weights).sum() / num_tokens
  correct = (jnp.argmax(logits[:, :-1], axis=-1) == targets).astype(jnp.float32)
  return loss, {"token_accuracy": (correct * weights).sum() / num_tokens,
                "target_tokens": weights.sum()}
