"""Read and write Hugging Face checkpoint directories (Llama, Qwen2, Mistral).

A directory holds `config.json` and `model.safetensors` or a sharded
`model.safetensors.index.json`. Both the transformers v5 config form (`rope_parameters`,
`dtype`) and the v4 form (`rope_theta`, `rope_scaling`, `torch_dtype`) are read; v5 is
written. Weights are only ever read from safetensors (never pickles), and remote code is
never executed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from rewardlab import sharding
from rewardlab.models.config import TransformerConfig


SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "mistral": "MistralForCausalLM"}
_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Tensors that some checkpoints carry but that hold no learned state.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read as a supported model."""


# ----------------------------------------------------------------------------- config


def config_from_hf(hf: dict, *, source: str = "config.json", dtype: str = "float32",
                   compute_dtype: str | None = None) -> TransformerConfig:
  """A `TransformerConfig` from a Hugging Face config dict (v4 or v5 form)."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(f"{source}: model_type {model_type!r} is not supported; "
                          f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")

  def unsupported(feature: str):
    raise CheckpointError(f"{source}: {model_type} checkpoint uses {feature}, which rewardlab "
                          "does not implement")

  if hf.get("num_local_experts") or hf.get("num_experts"):
    unsupported("mixture-of-experts layers (num_experts)")
  if model_type == "mistral" and hf.get("sliding_window") is not None:
    unsupported(f"sliding-window attention (sliding_window={hf['sliding_window']})")
  if model_type == "qwen2" and hf.get("use_sliding_window"):
    unsupported("sliding-window attention (use_sliding_window=true)")
  if hf.get("attention_bias") and model_type != "qwen2":
    unsupported("attention_bias=true")
  if hf.get("mlp_bias"):
    unsupported("mlp_bias=true")
  if hf.get("hidden_act", "silu") != "silu":
    unsupported(f"hidden_act={hf['hidden_act']!r} (only silu)")
  if hf.get("pretraining_tp", 1) not in (1, None):
    unsupported(f"pretraining_tp={hf['pretraining_tp']}")

  rope = dict(hf.get("rope_parameters") or {})  # v5
  if not rope:  # v4
    rope = dict(hf.get("rope_scaling") or {})
    rope.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "linear", "llama3"):
    unsupported(f"rope_type={rope_type!r} (supported: default, linear, llama3)")
  theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
  scaling = None
  if rope_type == "linear":
    scaling = {"rope_type": "linear", "factor": float(rope["factor"])}
  elif rope_type == "llama3":
    scaling = {"rope_type": "llama3", "factor": float(rope["factor"]),
               "low_freq_factor": float(rope["low_freq_factor"]),
               "high_freq_factor": float(rope["high_freq_factor"]),
               "original_max_position_embeddings":
                   int(rope["original_max_position_embeddings"])}

  try:
    num_heads = int(hf["num_attention_heads"])
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        intermediate_size=int(hf["intermediate_size"]),
        head_dim=hf.get("head_dim"),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        qkv_bias=model_type == "qwen2",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        model_type=model_type,
        dtype=compute_dtype or dtype,
        param_dtype=dtype,
        bos_token_id=_first(hf.get("bos_token_id")),
        eos_token_id=_first(hf.get("eos_token_id")),
        pad_token_id=_first(hf.get("pad_token_id")),
    )
  except KeyError as err:
    raise CheckpointError(f"{source}: missing field {err.args[0]!r}") from None


def _first(value):
  return value[0] if isinstance(value, list) and value else value


def config_to_hf(config: TransformerConfig) -> dict:
  """The transformers v5 config dict for `config`."""
  rope = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    rope.update(config.rope_scaling_dict)
  hf = {
      "architectures": [_ARCHITECTURES[config.model_type]],
      "model_type": config.model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_size,
      "hidden_act": "silu",
      "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_parameters": rope,
      "tie_word_embeddings": config.tie_embeddings,
      "attention_dropout": 0.0,
      "dtype": config.param_dtype,
      "bos_token_id": config.bos_token_id,
      "eos_token_id": config.eos_token_id,
      "pad_token_id": config.pad_token_id,
  }
  if config.model_type == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  if config.model_type == "mistral":
    hf["sliding_window"] = None
  if config.model_type == "qwen2":
    hf.update(use_sliding_window=False, sliding_window=None)
  return hf


# ----------------------------------------------------------------------------- tensor map


def _tensor_map(config: TransformerConfig) -> list[tuple[str, tuple[str, ...], Callable, Callable]]:
  """(HF tensor name, our param path, HF->ours, ours->HF) for every parameter."""
  h, k, e, d = config.num_heads, config.num_kv_heads, config.head_size, config.hidden_size
  transpose = (lambda w: w.T, lambda w: w.T)
  identity = (lambda w: w, lambda w: w)

  def in_proj(n):  # HF [n*E, D] <-> ours [D, n, E]
    return (lambda w: w.reshape(n, e, d).transpose(2, 0, 1),
            lambda w: w.transpose(1, 2, 0).reshape(n * e, d))

  def bias(n):  # HF [n*E] <-> ours [n, E]
    return (lambda b: b.reshape(n, e), lambda b: b.reshape(n * e))

  out_proj = (lambda w: w.reshape(d, h, e).transpose(1, 2, 0),  # HF [D, H*E] <-> ours [H, E, D]
              lambda w: w.transpose(2, 0, 1).reshape(d, h * e))
  entries = [("model.embed_tokens.weight", ("embed_tokens",), *identity),
             ("model.norm.weight", ("norm", "scale"), *identity)]
  if not config.tie_embeddings:
    entries.append(("lm_head.weight", ("lm_head",), *transpose))
  for i in range(config.num_layers):
    hf_layer, ours = f"model.layers.{i}.", f"layers_{i}"
    entries += [
        (hf_layer + "input_layernorm.weight", (ours, "input_layernorm", "scale"), *identity),
        (hf_layer + "post_attention_layernorm.weight",
         (ours, "post_attention_layernorm", "scale"), *identity),
        (hf_layer + "self_attn.q_proj.weight", (ours, "self_attn", "q_proj"), *in_proj(h)),
        (hf_layer + "self_attn.k_proj.weight", (ours, "self_attn", "k_proj"), *in_proj(k)),
        (hf_layer + "self_attn.v_proj.weight", (ours, "self_attn", "v_proj"), *in_proj(k)),
        (hf_layer + "self_attn.o_proj.weight", (ours, "self_attn", "o_proj"), *out_proj),
        (hf_layer + "mlp.gate_proj.weight", (ours, "mlp", "gate_proj"), *transpose),
        (hf_layer + "mlp.up_proj.weight", (ours, "mlp", "up_proj"), *transpose),
        (hf_layer + "mlp.down_proj.weight", (ours, "mlp", "down_proj"), *transpose),
    ]
    if config.qkv_bias:
      for name, n in (("q", h), ("k", k), ("v", k)):
        entries.append((hf_layer + f"self_attn.{name}_proj.bias", (ours, "self_attn", f"{name}_bias"),
                        *bias(n)))
  return entries


# ----------------------------------------------------------------------------- reading


class SafetensorsReader:
  """Random access to the tensors of a single-file or sharded safetensors checkpoint."""

  def __init__(self, path: str):
    self.path = path
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        try:
          weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
          raise CheckpointError(f"{index}: not a valid safetensors index ({err})") from None
      self.files = {name: os.path.join(path, shard) for name, shard in weight_map.items()}
      for shard in sorted(set(self.files.values())):
        if not os.path.exists(shard):
          raise CheckpointError(f"{index}: shard {os.path.basename(shard)} is missing")
        with self._open(shard):  # a truncated shard fails here
          pass
    elif os.path.exists(single):
      with self._open(single) as f:
        self.files = {name: single for name in f.keys()}
    else:
      bins = [n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
      hint = (f" (found {', '.join(sorted(bins))}: pickle-based weights are never loaded; "
              "convert them to safetensors)") if bins else ""
      raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json{hint}")

  @staticmethod
  def _open(file: str):
    """`safe_open(file)`; a truncated or corrupt file raises `CheckpointError` naming it."""
    try:
      return safe_open(file, framework="numpy")
    except (SafetensorError, OSError) as err:
      raise CheckpointError(f"{file}: not a readable safetensors file (truncated or corrupt? "
                            f"{err})") from None

  def names(self) -> list[str]:
    return list(self.files)

  def get(self, name: str) -> np.ndarray:
    if name not in self.files:
      raise CheckpointError(f"{self.path}: tensor {name!r} is missing from the checkpoint")
    with self._open(self.files[name]) as f:
      try:
        return f.get_tensor(name)
      except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{self.files[name]}: cannot read tensor {name!r} ({err})"
                              ) from None


def load_hf_config(path: str, *, dtype: str = "float32",
                   compute_dtype: str | None = None) -> TransformerConfig:
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"{path}: no config.json")
  with open(config_path) as f:
    try:
      hf = json.load(f)
    except json.JSONDecodeError as err:
      raise CheckpointError(f"{config_path}: invalid JSON ({err})") from None
  return config_from_hf(hf, source=config_path, dtype=dtype, compute_dtype=compute_dtype)


def _dtype_name(dtype) -> str:
  dtype = jnp.dtype(dtype)
  for name, np_dtype in _NP_DTYPES.items():
    if jnp.dtype(np_dtype) == dtype:
      return name
  raise ValueError(f"unsupported parameter dtype {dtype}; use float32, bfloat16 or float16")


def load_pretrained(path: str, *, dtype=jnp.float32, compute_dtype=None, mesh=None):
  """Read a local Hugging Face checkpoint directory -> `(config, params)`.

  `dtype` is the parameter dtype (weights are converted from whatever the file holds);
  `compute_dtype` (default: `dtype`) is the matmul input dtype. With a `mesh`, each
  tensor is placed directly in its sharded layout (each device receives its own shard).
  """
  from rewardlab import models  # local import: models imports this module's siblings

  dtype_name = _dtype_name(dtype)
  compute_name = _dtype_name(compute_dtype) if compute_dtype is not None else None
  config = load_hf_config(path, dtype=dtype_name, compute_dtype=compute_name)
  reader = SafetensorsReader(path)
  abstract = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
  shardings = models.param_shardings(config, mesh) if mesh is not None else None

  params: dict[str, Any] = {}
  used = set()
  for hf_name, ours, to_ours, to_hf in _tensor_map(config):
    raw = reader.get(hf_name)
    expected = _lookup(abstract, ours).shape
    expected_hf = to_hf(np.empty(expected, dtype=np.int8)).shape
    if raw.shape != expected_hf:
      raise CheckpointError(f"{path}: tensor {hf_name!r} has shape {tuple(raw.shape)}, "
                            f"expected {tuple(expected_hf)} from config.json")
    value = np.ascontiguousarray(to_ours(raw)).astype(_NP_DTYPES[dtype_name])
    if shardings is not None:
      value = sharding.put_sharded(value, _lookup(shardings, ours))
    else:
      value = jnp.asarray(value)
    _assign(params, ours, value)
    used.add(hf_name)
  unused = [n for n in reader.names() if n not in used and not n.endswith(_IGNORED_SUFFIXES)]
  if config.tie_embeddings:
    unused = [n for n in unused if n != "lm_head.weight"]
  if unused:  # e.g. config.json has fewer layers than the weights: never load half a model
    raise CheckpointError(
        f"{path}: {len(unused)} tensors are not used by the causal LM that config.json "
        f"describes ({config.num_layers} layers): {', '.join(sorted(unused)[:10])}"
        f"{' ...' if len(unused) > 10 else ''}")
  return config, params


def _lookup(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _assign(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------- writing


def _to_host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save_pretrained(path: str, config: TransformerConfig, params, *,
                    extra_tensors: dict[str, np.ndarray] | None = None,
                    config_overrides: dict | None = None,
                    max_shard_bytes: int = 5 * 2**30) -> None:
  """Write `config.json` and safetensors weights that transformers loads.

  `extra_tensors` (e.g. a reward head's `score.weight`) and `config_overrides` (e.g.
  `architectures`, `num_labels`) let the reward-model export reuse this writer. Weights
  above `max_shard_bytes` are split into shards with a `model.safetensors.index.json`.
  In a multi-process run every process must call this; process 0 writes.
  """
  tensors = {}
  for hf_name, ours, _, to_hf in _tensor_map(config):
    tensors[hf_name] = np.ascontiguousarray(to_hf(_to_host(_lookup(params, ours))))
  for name, value in (extra_tensors or {}).items():
    tensors[name] = np.ascontiguousarray(_to_host(value))
  if jax.process_index() != 0:
    return
  os.makedirs(path, exist_ok=True)
  hf = config_to_hf(config)
  hf.update(config_overrides or {})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=2, sort_keys=True)

  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, value in tensors.items():
    if shards[-1] and size + value.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = value
    size += value.nbytes
  metadata = {"format": "pt"}
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, "model.safetensors"), metadata=metadata)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, filename), metadata=metadata)
    weight_map.update({name: filename for name in shard})
  total = sum(v.nbytes for v in tensors.values())
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
