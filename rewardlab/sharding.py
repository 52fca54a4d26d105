"""Device mesh, logical axis rules, sharded initialization and batch sharding.

One mesh with axes ('data', 'fsdp', 'tensor'). Parameters and activations carry
*logical* axis names ('embed', 'heads', 'activation_batch', ...); the single rules table
below maps them to mesh axes. A logical dimension whose size is not divisible by the
mesh axes it maps to is replicated instead (for example the single key/value head of
multi-query attention on a 2-way tensor axis).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("attributes", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("cache_length", None),
)

_ACTIVE: dict[str, Any] = {"mesh": None, "rules": LOGICAL_RULES}


def make_mesh(shape: Sequence[int] = (-1, 1, 1), *, devices=None) -> Mesh:
  """A mesh with axes ('data', 'fsdp', 'tensor'); one -1 entry takes the remaining devices.

  Axes are Auto (the compiler propagates shardings from the annotations we give).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape must have 3 entries (data, fsdp, tensor), got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1 entry")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, "
                     f"{len(devices)} available")
  device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _rules_dict(rules) -> dict:
  return {name: target for name, target in rules}


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_RULES) -> P:
  """PartitionSpec for an array of `shape` whose dims carry `logical_axes`.

  Mesh axes of size 1 are dropped, an axis already used by an earlier dim is not reused,
  and a dim not divisible by the product of its mesh axes stays replicated.
  """
  table = _rules_dict(rules)
  used: set[str] = set()
  spec = []
  for name, size in zip(logical_axes, shape):
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule in the sharding rules table")
    axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    axes = tuple(a for a in axes if mesh.shape[a] > 1 and a not in used)
    if axes and size % math.prod(mesh.shape[a] for a in axes) == 0:
      used.update(axes)
      spec.append(axes[0] if len(axes) == 1 else axes)
    else:
      spec.append(None)
  return P(*spec)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules=LOGICAL_RULES):
  """Activate `mesh` for `constrain` (activation annotations) and as JAX's mesh."""
  previous = dict(_ACTIVE)
  _ACTIVE.update(mesh=mesh, rules=rules)
  try:
    if mesh is None:
      yield
    else:
      with jax.set_mesh(mesh):
        yield
  finally:
    _ACTIVE.update(previous)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op without a mesh."""
  mesh = _ACTIVE["mesh"]
  if mesh is None:
    return x
  spec = logical_to_spec(logical_axes, x.shape, mesh, _ACTIVE["rules"])
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def logical_axes_of(boxed_tree) -> Any:
  """The logical axis names of every leaf of a tree of `nn.LogicallyPartitioned` boxes."""
  return jax.tree.map(
      lambda b: tuple(b.names) if isinstance(b, nn.LogicallyPartitioned) else (None,) * b.ndim,
      boxed_tree, is_leaf=lambda b: isinstance(b, nn.LogicallyPartitioned))


def tree_shardings(logical_tree, shape_tree, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a tree of arrays given a matching tree of logical axis tuples."""
  return jax.tree.map(
      lambda names, shaped: NamedSharding(mesh, logical_to_spec(names, shaped.shape, mesh, rules)),
      logical_tree, shape_tree, is_leaf=lambda x: isinstance(x, tuple))


def sharded_init(init_fn, mesh: Mesh | None, *args, rules=LOGICAL_RULES):
  """Run `init_fn(*args)` (returning boxed params) so that outputs are created sharded.

  Returns `(params, shardings)`: plain (unboxed) parameters, each created directly in its
  sharded layout by `jit(..., out_shardings=...)`: no full copy lands on one device.
  Without a mesh, params are created on the default device and shardings is None.
  """
  unboxed_init = lambda *a: nn.meta.unbox(init_fn(*a))
  if mesh is None:
    return jax.jit(unboxed_init)(*args), None
  abstract = jax.eval_shape(init_fn, *args)
  logical = logical_axes_of(abstract)
  shapes = nn.meta.unbox(abstract)
  shardings = tree_shardings(logical, shapes, mesh, rules)
  with use_mesh(mesh, rules):
    params = jax.jit(unboxed_init, out_shardings=shardings)(*args)
  return params, shardings


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding of a batch array: leading dim over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh | None):
  """Place a host batch (tree of numpy arrays with the *global* batch) on the mesh.

  In a multi-process run each process passes its local slice of the global batch and the
  global array is assembled with `jax.make_array_from_process_local_data`.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, batch)

  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() > 1:
      return jax.make_array_from_process_local_data(sharding, x)
    return jax.device_put(x, sharding)

  return jax.tree.map(put, batch)


def put_sharded(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Place a host array with `sharding`, each device receiving only its own shard."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
