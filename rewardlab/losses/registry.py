"""Name registries for policy losses and advantage estimators.

Training code picks a variant by name (`get_policy_loss(config.loss)`) instead of
branching on config strings. The built-in variants register themselves when
`rewardlab.losses` is imported (`policy.py`, `advantages.py`); users add their own
with the same decorators.

Policy losses share one call signature:
    loss_fn(logp [B, T], old_logp [B, T], advantages [B] | [B, T], mask [B, T], **kwargs)
        -> (loss, metrics)
Advantage estimators share:
    estimator(rewards [B], group_size, *, valid=None) -> advantages [B]
"""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
  """A dict from names to callables with clear errors on clashes and misses."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, Callable] = {}

  def register(self, name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator: `@registry.register("name")` adds the function under `name`."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

    def decorator(fn: F) -> F:
      if name in self._items and not overwrite:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._items[name] = fn
      return fn

    return decorator

  def get(self, name: str) -> Callable:
    try:
      return self._items[name]
    except KeyError:
      raise ValueError(
          f"unknown {self.kind} {name!r}; known: {sorted(self._items)}") from None

  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._items))


POLICY_LOSSES = Registry("policy loss")
ADVANTAGE_ESTIMATORS = Registry("advantage estimator")


def register_policy_loss(name: str, *, overwrite: bool = False):
  """Decorator registering a policy loss under `name` (see module docstring)."""
  return POLICY_LOSSES.register(name, overwrite=overwrite)


def get_policy_loss(name: str) -> Callable:
  """The policy loss registered as `name` (grpo, dapo, dr_grpo, bnpo, gspo, ppo, ...)."""
  return POLICY_LOSSES.get(name)


def register_advantage_estimator(name: str, *, overwrite: bool = False):
  """Decorator registering an advantage estimator under `name`."""
  return ADVANTAGE_ESTIMATORS.register(name, overwrite=overwrite)


def get_advantage_estimator(name: str) -> Callable:
  """The advantage estimator registered as `name` (grpo, grpo_batch, dr_grpo, rloo, ...)."""
  return ADVANTAGE_ESTIMATORS.get(name)
