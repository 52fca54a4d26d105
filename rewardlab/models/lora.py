"""LoRA as a pure transform of the parameter pytree (Hu et al., 2021).

A targeted kernel `W` of the transformer (attention `q/k/v/o_proj`, MLP
`gate/up/down_proj`) is read as a matrix from its input dims to its output dims
(`q_proj [D, H, E]`: D -> H·E; `o_proj [H, E, D]`: H·E -> D) and adapted as

    W' = W + (α / r) · A B,     A: [*in, r] ~ N(0, 1/in),  B: [r, *out] = 0,

so the adapted model equals the base at initialization. The adapters are a tree that
mirrors the base tree at the targeted kernels only, `{..."q_proj": {"a": A, "b": B}}`;
`merge(config, base, adapters)` returns an ordinary parameter tree, so the same
`apply` (and `save_pretrained`) serves base and adapted models. Inside a loss, merge
with the base under `stop_gradient`: gradients reach only the adapters.

Training layout (reward models here, RL by the same API): the state's params are
`{"backbone": base, "head": ..., "lora": adapters}`; `materialize` turns them into the
plain `{"backbone": merged, "head": ...}`; `freeze_base(tx)` is the optimizer, which
keeps state for everything but the base (`optax.multi_transform` with
`optax.set_to_zero` on the base), so the optimizer state scales with the rank, not the
model. The base may be stored in bfloat16 (`base_dtype`): the merged kernels are
float32, so small adapter updates are not rounded away. For RL the reference model is
the base itself, `{"policy": params["backbone"]}` without the adapters: no second copy.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from rewardlab import sharding
from rewardlab.models import _abstract_boxed
from rewardlab.models.config import TransformerConfig
from rewardlab.models.hf import save_pretrained

# Targetable kernels -> how many leading dims are input dims.
TARGETS = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2,
           "gate_proj": 1, "up_proj": 1, "down_proj": 1}
_DTYPES = {"": None, "float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank r (0 = off), alpha α (the update is scaled by α / r), the targeted kernel names,
  and the storage dtype of the frozen base ("" = keep, "float32", "bfloat16")."""

  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = tuple(TARGETS)
  base_dtype: str = ""

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if self.rank < 0:
      raise ValueError(f"LoraConfig.rank={self.rank} must be >= 0 (0 = off)")
    unknown = sorted(set(self.targets) - set(TARGETS))
    if unknown or not self.targets:
      raise ValueError(f"LoraConfig.targets={self.targets}: unknown {unknown}; "
                       f"choose from {sorted(TARGETS)}")
    if self.base_dtype not in _DTYPES:
      raise ValueError(f"LoraConfig.base_dtype={self.base_dtype!r}; expected one of "
                       f"{sorted(_DTYPES)}")

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def from_config_dict(c) -> LoraConfig:
  """A LoraConfig from an experiment's `lora` ConfigDict (rank, alpha, targets, base_dtype)."""
  return LoraConfig(rank=int(c.rank), alpha=float(c.alpha), targets=tuple(c.targets),
                    base_dtype=str(c.base_dtype))


def _is_target(path: tuple, config: LoraConfig) -> bool:
  return path[-1] in config.targets


def _boxed_adapters(config: LoraConfig, model_config: TransformerConfig, rng) -> dict:
  """Adapters with logical axes: A keeps the kernel's input axes, B its output axes."""
  base = traverse_util.flatten_dict(_abstract_boxed(model_config))
  out = {}
  for i, (path, boxed) in enumerate(sorted(base.items())):
    if not _is_target(path, config):
      continue
    n_in = TARGETS[path[-1]]
    shape, names = boxed.value.shape, tuple(boxed.names)
    fan_in = math.prod(shape[:n_in])
    a = jax.random.normal(jax.random.fold_in(rng, i), (*shape[:n_in], config.rank), jnp.float32)
    out[path + ("a",)] = nn.LogicallyPartitioned(a / math.sqrt(fan_in), names[:n_in] + (None,))
    out[path + ("b",)] = nn.LogicallyPartitioned(
        jnp.zeros((config.rank, *shape[n_in:]), jnp.float32), (None,) + names[n_in:])
  if not out:
    raise ValueError(f"LoRA targets {config.targets} match no kernel of the model")
  return traverse_util.unflatten_dict(out)


def init_adapters(config: LoraConfig, model_config: TransformerConfig, rng, *, mesh=None):
  """Float32 adapters (B = 0: the adapted model starts equal to the base); created
  sharded on `mesh` by the base kernels' logical axes."""
  if not config.enabled:
    raise ValueError("init_adapters: LoRA rank is 0 (off)")
  params, _ = sharding.sharded_init(functools.partial(_boxed_adapters, config, model_config),
                                    mesh, rng)
  return params


def delta(config: LoraConfig, adapter: dict) -> jax.Array:
  """`(α / r) · A B` with the kernel's shape `[*in, *out]` (float32)."""
  return config.scale * jnp.tensordot(adapter["a"], adapter["b"], axes=1)


def merge(config: LoraConfig, base, adapters):
  """Base parameter tree with `W + (α / r) A B` at every adapted kernel (float32 there);
  the other leaves as they are. Pure: use it inside a loss."""
  flat = traverse_util.flatten_dict(base)
  for path, adapter in traverse_util.flatten_dict(adapters, is_leaf=_is_adapter).items():
    flat[path] = flat[path].astype(jnp.float32) + delta(config, adapter)
  return traverse_util.unflatten_dict(flat)


def _is_adapter(_, x) -> bool:
  return isinstance(x, dict) and set(x) == {"a", "b"}


def cast_base(config: LoraConfig, base):
  """The frozen base in its storage dtype (`base_dtype`; "" keeps it)."""
  dtype = _DTYPES[config.base_dtype]
  return base if dtype is None else jax.tree.map(lambda x: x.astype(dtype), base)


# ----------------------------------------------------------------------------- training layout


def attach(config: LoraConfig, params: dict, rng, *, model_config: TransformerConfig,
           base_key: str = "backbone", mesh=None) -> dict:
  """`{base_key: base, ...}` -> the same with the base cast to `base_dtype` and fresh
  adapters under "lora"; unchanged when LoRA is off."""
  if not config.enabled:
    return params
  return {**params, base_key: cast_base(config, params[base_key]),
          "lora": init_adapters(config, model_config, rng, mesh=mesh)}


def materialize(config: LoraConfig, params: dict, *, base_key: str = "backbone",
                train: bool = True) -> dict:
  """Training params -> plain params: the base merged with "lora" (under `stop_gradient`
  when `train`), the adapters dropped. Params without "lora" are returned as they are."""
  if "lora" not in params:
    return params
  base = params[base_key]
  if train:
    base = jax.lax.stop_gradient(base)
  rest = {k: v for k, v in params.items() if k not in ("lora", base_key)}
  return {**rest, base_key: merge(config, base, params["lora"])}


def merged_for_export(config: LoraConfig, params: dict, model_config: TransformerConfig, *,
                      base_key: str = "backbone") -> dict:
  """Plain params with the backbone merged and cast to the model's storage dtype (for
  `save_pretrained` / `save_reward_model`, which then write ordinary weights)."""
  plain = materialize(config, params, base_key=base_key, train=False)
  dtype = model_config.storage_dtype
  return {**plain, base_key: jax.tree.map(lambda x: x.astype(dtype), plain[base_key])}


def freeze_base(tx: optax.GradientTransformation, *,
                base_key: str = "backbone") -> optax.GradientTransformation:
  """`tx` on every top-level subtree but `base_key`, whose updates are zero and whose
  optimizer state is empty: only adapters (and heads) are trained and stored."""
  labels = lambda params: {k: jax.tree.map(lambda _: "frozen" if k == base_key else "train", v)
                           for k, v in params.items()}
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def loss_with_adapters(config: LoraConfig, loss_fn, *, base_key: str = "backbone"):
  """`loss_fn(plain_params, batch)` -> `loss(params_with_lora, batch)` (gradients reach
  the adapters and the other subtrees, not the base)."""
  return lambda params, batch: loss_fn(materialize(config, params, base_key=base_key), batch)


def tree_bytes(tree) -> int:
  """Bytes held by the array leaves of a tree (parameters, optimizer states)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def save_merged(path: str, config: LoraConfig, model_config: TransformerConfig, base,
                adapters) -> None:
  """Write `merge(base, adapters)` as a Hugging Face directory (`rewardlab.save_pretrained`)."""
  merged = merge(config, base, adapters)
  save_pretrained(path, model_config,
                  jax.tree.map(lambda x: x.astype(model_config.storage_dtype), merged))
