"""Reward models: a transformer backbone plus one head, as pure functions.

Parameters are `{"backbone": <transformer params>, "head": <head params>}`. Heads
(`rewardlab.models.heads`):

=============  ==========================================  ==============================
head           output                                      trained as (train/reward.py)
=============  ==========================================  ==============================
outcome        `[B]` scalar at the EOS                     bt, scaled_bt
attributes     `[B, K]` scores at the EOS (+ weighted sum)  regression
process        `[B, S]` step logits (classifier /          prm
               lm_token / genarm form)
value          `[B, T]` per-token values                    (PPO critic)
genarm         `[B, T]` token log-probs of the LM itself    genarm
=============  ==========================================  ==============================

Text-level scorers (`OutcomeScorer`, `ProcessScorer`, `GenARMScorer`) encode text
exactly as the trainer does (`rewardlab.data.encode`: prompt with BOS or the chat
template, response, EOS), batch it into padded shape buckets (each bucket compiles
once) and count the tokens they score. Saving writes the backbone as a Hugging Face
directory, the head as `head.safetensors` and the head options as `reward_config.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from rewardlab import models, sharding
from rewardlab.data import encode as encode_lib
from rewardlab.data.formats import ATTRIBUTES
from rewardlab.data.tokenizers import CHAR_TOKENIZER_FILE, load_tokenizer
from rewardlab.models import heads
from rewardlab.models import logprobs as logprobs_lib
from rewardlab.models.config import TransformerConfig
from rewardlab.models.hf import load_pretrained, save_pretrained

HEADS = ("outcome", "attributes", "process", "value", "genarm")
PROCESS_FORMS = ("classifier", "lm_token", "genarm")
REWARD_CONFIG_FILE = "reward_config.json"
HEAD_FILE = "head.safetensors"


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  """A backbone and the head on top of it (hashable: usable as a static jit argument).

  `attribute_weights` turn attribute scores into the ranking reward `Σ w_k s_k`
  (default: helpfulness only). `process_form` picks the PRM parametrization;
  `lm_token` needs `plus_token_id` / `minus_token_id`. `beta` scales GenARM rewards,
  and the log-probabilities of the `genarm` process form, whose bias starts at
  `step_bias` (the only head parameter of that form).
  """

  backbone: TransformerConfig
  head: str = "outcome"
  attributes: tuple[str, ...] = ATTRIBUTES
  attribute_weights: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0)
  process_form: str = "classifier"
  plus_token_id: int | None = None
  minus_token_id: int | None = None
  beta: float = 0.05
  step_bias: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "attributes", tuple(self.attributes))
    object.__setattr__(self, "attribute_weights", tuple(float(w) for w in self.attribute_weights))
    if self.head not in HEADS:
      raise ValueError(f"RewardModelConfig.head={self.head!r}; expected one of {HEADS}")
    if self.process_form not in PROCESS_FORMS:
      raise ValueError(f"RewardModelConfig.process_form={self.process_form!r}; "
                       f"expected one of {PROCESS_FORMS}")
    if len(self.attribute_weights) != len(self.attributes):
      raise ValueError(f"RewardModelConfig: {len(self.attribute_weights)} attribute_weights for "
                       f"{len(self.attributes)} attributes")
    if self.head == "process" and self.process_form == "lm_token":
      for name in ("plus_token_id", "minus_token_id"):
        value = getattr(self, name)
        if value is None or not 0 <= value < self.backbone.vocab_size:
          raise ValueError(f"RewardModelConfig.{name}={value!r}: the lm_token process head needs "
                           f"a token id in [0, {self.backbone.vocab_size})")

  def replace(self, **changes) -> "RewardModelConfig":
    return dataclasses.replace(self, **changes)

  def options(self) -> dict:
    """The head options as JSON (the backbone is saved separately as config.json)."""
    out = dataclasses.asdict(self)
    del out["backbone"]
    out["attributes"] = list(self.attributes)
    out["attribute_weights"] = list(self.attribute_weights)
    return out


# ----------------------------------------------------------------------------- init


def linear_head_shape(config: RewardModelConfig) -> tuple[int, bool] | None:
  """(outputs K, has bias) of the head's linear layer; None when the backbone's
  unembedding is the head (genarm, process in lm_token or genarm form)."""
  return {
      "outcome": (1, False),  # no bias: exactly a Hugging Face `score` layer
      "attributes": (len(config.attributes), True),
      "process": (1, True) if config.process_form == "classifier" else None,
      "value": (1, True),
      "genarm": None,
  }[config.head]


def _boxed_head(config: RewardModelConfig, rng) -> dict:
  """Boxed head params (logical axis names attached); {} for heads without params."""
  shape = linear_head_shape(config)
  if config.head == "process" and config.process_form == "genarm":
    bias = jnp.full((1,), config.step_bias, config.backbone.storage_dtype)
    return {"bias": nn.LogicallyPartitioned(bias, ("attributes",))}
  if shape is None:
    return {}
  outputs, bias = shape
  return heads.init_linear_head(rng, config.backbone.hidden_size, outputs, bias=bias,
                                dtype=config.backbone.storage_dtype)


def init_head(config: RewardModelConfig, rng, *, mesh=None) -> dict:
  """Random head params (created sharded when a mesh is given)."""
  params, _ = sharding.sharded_init(functools.partial(_boxed_head, config), mesh, rng)
  return params


def head_shardings(config: RewardModelConfig, mesh):
  abstract = jax.eval_shape(functools.partial(_boxed_head, config), jax.random.key(0))
  return sharding.tree_shardings(sharding.logical_axes_of(abstract), nn.meta.unbox(abstract), mesh)


def init_reward_model(config: RewardModelConfig, rng, *, mesh=None, backbone_params=None) -> dict:
  """`{"backbone", "head"}` params; a given `backbone_params` (e.g. from `load_pretrained`)
  is used as is and only the head is initialized."""
  rng_backbone, rng_head = jax.random.split(rng)
  if backbone_params is None:
    backbone_params = models.init_params(config.backbone, rng_backbone, mesh=mesh)
  return {"backbone": backbone_params, "head": init_head(config, rng_head, mesh=mesh)}


# ----------------------------------------------------------------------------- pure scores


def _hidden(config: RewardModelConfig, params, tokens, mask):
  return models.hidden_states(config.backbone, params["backbone"], tokens, attention_mask=mask)


def _require(config: RewardModelConfig, allowed: tuple[str, ...], what: str) -> None:
  if config.head not in allowed:
    raise ValueError(f"{what} needs a reward model with head in {allowed}, got {config.head!r}")


def _attributes_from_hidden(config, params, hidden, score_index):
  return heads.attribute_head(params["head"], hidden, score_index)


def _outcome_from_hidden(config, params, hidden, score_index):
  if config.head == "attributes":
    scores = _attributes_from_hidden(config, params, hidden, score_index)
    return heads.weighted_attributes(scores, config.attribute_weights)
  return heads.outcome_head(params["head"], hidden, score_index)


def _steps_from_hidden(config, params, hidden, step_positions, tokens, mask, prompt_length,
                       logps=None):
  """Step logits; `logps` (the LM's token log-probs, if already computed) serves the genarm form."""
  if config.process_form == "classifier":
    return heads.step_classifier_head(params["head"], hidden, step_positions)
  if config.process_form == "genarm":
    if prompt_length is None:
      raise ValueError("the genarm process form needs prompt_length (where the response starts)")
    if logps is None:
      logps = _logprobs_from_hidden(config, params, hidden, tokens)
    mask = jnp.ones_like(tokens) if mask is None else mask
    return heads.step_genarm_head(logps, mask, prompt_length, step_positions, config.beta,
                                  params["head"]["bias"])
  unembed = functools.partial(models.unembed, config.backbone, params["backbone"])
  return heads.step_lm_token_head(unembed, hidden, step_positions, config.plus_token_id,
                                  config.minus_token_id)


def _logprobs_from_hidden(config, params, hidden, tokens):
  """The LM's `[B, T]` token log-probs, formed in chunks (`rewardlab.models.logprobs`)."""
  return logprobs_lib.next_token_logprobs(config.backbone, params["backbone"], hidden, tokens)


def attribute_scores(config: RewardModelConfig, params, tokens, mask, score_index):
  """`[B, T]` tokens -> `[B, K]` attribute scores read at `score_index` `[B]`."""
  _require(config, ("attributes",), "attribute_scores")
  return _attributes_from_hidden(config, params, _hidden(config, params, tokens, mask),
                                 score_index)


def outcome_scores(config: RewardModelConfig, params, tokens, mask, score_index):
  """`[B, T]` tokens -> `[B]` rewards read at `score_index` (the EOS).

  Attribute models give their ranking reward `Σ_k w_k s_k`.
  """
  _require(config, ("outcome", "attributes"), "outcome_scores")
  return _outcome_from_hidden(config, params, _hidden(config, params, tokens, mask), score_index)


def step_logits(config: RewardModelConfig, params, tokens, mask, step_positions,
                prompt_length=None):
  """`[B, T]` tokens -> `[B, S]` step logits at `step_positions` (`p_k = σ(z_k)`).

  `prompt_length` `[B]` (where each response starts) is needed by the genarm form only.
  """
  _require(config, ("process",), "step_logits")
  return _steps_from_hidden(config, params, _hidden(config, params, tokens, mask), step_positions,
                            tokens, mask, prompt_length)


def outcome_scores_and_logprobs(config: RewardModelConfig, params, tokens, mask, score_index):
  """`outcome_scores` `[B]` and the backbone LM's `token_logprobs` `[B, T]` from one pass
  (for a language-modelling regularizer on the reward model's hidden states)."""
  _require(config, ("outcome", "attributes"), "outcome_scores_and_logprobs")
  hidden = _hidden(config, params, tokens, mask)
  return (_outcome_from_hidden(config, params, hidden, score_index),
          _logprobs_from_hidden(config, params, hidden, tokens))


def step_logits_and_logprobs(config: RewardModelConfig, params, tokens, mask, step_positions,
                             prompt_length=None):
  """`step_logits` `[B, S]` and the backbone LM's `token_logprobs` `[B, T]` from one pass."""
  _require(config, ("process",), "step_logits_and_logprobs")
  hidden = _hidden(config, params, tokens, mask)
  logps = _logprobs_from_hidden(config, params, hidden, tokens)  # one unembedding for both
  return (_steps_from_hidden(config, params, hidden, step_positions, tokens, mask, prompt_length,
                             logps), logps)


def token_logprobs(config: RewardModelConfig, params, tokens, mask):
  """`[B, T]` -> `[B, T]`: `log π(tokens[t] | tokens[<t])` (0 at t = 0) of the backbone LM."""
  return _logprobs_from_hidden(config, params, _hidden(config, params, tokens, mask), tokens)


def genarm_scores(config: RewardModelConfig, params, tokens, mask, prompt_length):
  """`[B]` GenARM rewards `β Σ_{t >= prompt_length} log π_r(y_t | ...)`."""
  _require(config, ("genarm",), "genarm_scores")
  logps = _logprobs_from_hidden(config, params, _hidden(config, params, tokens, mask), tokens)
  return heads.genarm_reward_from_logprobs(logps, mask, prompt_length, config.beta)


def values(config: RewardModelConfig, params, tokens, mask):
  """`[B, T]` per-token values of a value-head model (PPO critic)."""
  _require(config, ("value",), "values")
  return heads.value_head(params["head"], _hidden(config, params, tokens, mask))


# One jitted function per score, shared by every caller; configs are static arguments.
jit_outcome_scores = jax.jit(outcome_scores, static_argnums=0)
jit_attribute_scores = jax.jit(attribute_scores, static_argnums=0)
jit_step_logits = jax.jit(step_logits, static_argnums=0)
jit_genarm_scores = jax.jit(genarm_scores, static_argnums=0)
jit_values = jax.jit(values, static_argnums=0)


def apply_in_batches(fn, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
  """`fn(**batch)` over `[N, ...]` arrays in batches of `batch_size`, concatenated to `[N, ...]`.

  The last batch is padded by repeating its first row, so every call has one shape.
  """
  n = len(next(iter(arrays.values())))
  outputs = []
  for start in range(0, n, batch_size):
    chunk = {k: v[start:start + batch_size] for k, v in arrays.items()}
    size = len(next(iter(chunk.values())))
    if size < batch_size:
      chunk = {k: np.concatenate([v, np.repeat(v[:1], batch_size - size, axis=0)])
               for k, v in chunk.items()}
    outputs.append(np.asarray(fn(**chunk))[:size])
  return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


# ----------------------------------------------------------------------------- text scorers


def _bucket(n: int, smallest: int, largest: int) -> int:
  """Smallest power-of-two multiple of `smallest` that is >= n, capped at `largest`."""
  size = smallest
  while size < n:
    size *= 2
  return min(size, largest)


class _BucketedScorer:
  """Shared batching: sort items by length, pad each chunk to a (batch, length) bucket.

  `batch_size` bounds the rows per call; rows and length are rounded up to powers of
  two (length at least `min_length`), so a jitted score compiles once per bucket.
  `tokens_scored` counts the real (non-pad) tokens fed to the model. With a `mesh` (the
  params placed on it, e.g. `load_reward_model(path, mesh=mesh)`) each forward's rows
  are sharded over the data axes (padded with empty rows to a multiple of their size).
  """

  def __init__(self, config: RewardModelConfig, params, tokenizer, *, batch_size: int = 32,
               min_length: int = 16, mesh=None):
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.mesh = mesh
    self.batch_size, self.min_length = batch_size, min_length
    self.max_length = config.backbone.max_position_embeddings
    self.tokens_scored = 0

  def _check_length(self, n: int, index: int) -> None:
    if n > self.max_length:
      raise ValueError(f"item {index}: {n} tokens exceed the model's max_position_embeddings "
                       f"{self.max_length}")

  def _run(self, items: list[dict], fn) -> list[np.ndarray]:
    """items: dicts with `ids` (list[int]) and per-item int arrays; `fn(batch) -> [b, ...]`."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]["ids"]))
    results: list = [None] * len(items)
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      rows = _bucket(len(idx), 1, self.batch_size)
      if self.mesh is not None:
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        rows = -(-rows // shards) * shards
      length = _bucket(max(len(items[i]["ids"]) for i in idx), self.min_length, self.max_length)
      batch = {"tokens": np.full((rows, length), self.tokenizer.pad_id, np.int32),
               "mask": np.zeros((rows, length), np.int32)}
      for key in items[idx[0]]:
        if key != "ids":
          batch[key] = np.zeros((rows,) + np.shape(items[idx[0]][key]), np.int32)
      for r, i in enumerate(idx):
        ids = items[i]["ids"]
        batch["tokens"][r, :len(ids)] = ids
        batch["mask"][r, :len(ids)] = 1
        for key, value in items[i].items():
          if key != "ids":
            batch[key][r] = value
        self.tokens_scored += len(ids)
      if self.mesh is not None:
        with sharding.use_mesh(self.mesh):
          out = np.asarray(jax.device_get(fn(sharding.shard_batch(batch, self.mesh))))
      else:
        out = np.asarray(jax.device_get(fn(batch)))
      for r, i in enumerate(idx):
        results[i] = out[r]
    return results

  def _pair_items(self, prompts: Sequence, completions: Sequence[str]) -> list[dict]:
    if len(prompts) != len(completions):
      raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    items = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
      prompt_ids = encode_lib.encode_prompt(self.tokenizer, prompt)
      ids = prompt_ids + self.tokenizer.encode(completion) + [self.tokenizer.eos_id]
      self._check_length(len(ids), i)
      items.append({"ids": ids, "score_index": len(ids) - 1, "prompt_length": len(prompt_ids)})
    return items


class OutcomeScorer(_BucketedScorer):
  """`score(prompts, completions) -> [N]` rewards of an outcome (or attributes) model."""

  def score(self, prompts: Sequence, completions: Sequence[str]) -> np.ndarray:
    items = self._pair_items(prompts, completions)
    fn = lambda b: jit_outcome_scores(self.config, self.params, b["tokens"], b["mask"],
                                      b["score_index"])
    return np.asarray(self._run(items, fn), np.float32).reshape(len(items))


class GenARMScorer(_BucketedScorer):
  """`score(prompts, completions) -> [N]`: `β Σ_t log π_r(y_t | x, y_<t)` over the
  completion and its EOS (no reference model, no length normalization)."""

  def score(self, prompts: Sequence, completions: Sequence[str]) -> np.ndarray:
    items = self._pair_items(prompts, completions)
    fn = lambda b: jit_genarm_scores(self.config, self.params, b["tokens"], b["mask"],
                                     b["prompt_length"])
    return np.asarray(self._run(items, fn), np.float32).reshape(len(items))


class ProcessScorer(_BucketedScorer):
  """`score_steps(prompts, steps) -> list of [K_i]` probabilities that each step is right.

  The text is `prompt + Σ_k (step_k + separator)` and step k is read at the last token
  of `step_k + separator`, as in training (`encode.encode_steps`).
  """

  def __init__(self, config: RewardModelConfig, params, tokenizer, *, separator: str = "\n",
               **kwargs):
    super().__init__(config, params, tokenizer, **kwargs)
    self.separator = separator

  def score_steps(self, prompts: Sequence, steps: Sequence[Sequence[str]]) -> list[np.ndarray]:
    if len(prompts) != len(steps):
      raise ValueError(f"{len(prompts)} prompts for {len(steps)} step lists")
    width = _bucket(max((len(s) for s in steps), default=1), 1, 1 << 30)
    items, where = [], []
    for i, (prompt, row) in enumerate(zip(prompts, steps)):
      if not row:
        continue
      ex = encode_lib.encode_steps(self.tokenizer, prompt, list(row), [0.0] * len(row),
                                   self.max_length, width, separator=self.separator)
      if ex is None:
        raise ValueError(f"item {i}: prompt and {len(row)} steps exceed the model's "
                         f"max_position_embeddings {self.max_length}")
      items.append({"ids": ex["tokens"][:int(ex["mask"].sum())].tolist(),
                    "step_positions": ex["step_positions"], "prompt_length": ex["prompt_length"]})
      where.append(i)
    fn = lambda b: jax.nn.sigmoid(jit_step_logits(self.config, self.params, b["tokens"],
                                                  b["mask"], b["step_positions"],
                                                  b["prompt_length"]))
    out = [np.zeros((0,), np.float32) for _ in steps]
    for i, probs in zip(where, self._run(items, fn) if items else []):
      out[i] = np.asarray(probs[:len(steps[i])], np.float32)
    return out


SEQUENCE_SCORERS = {"outcome": OutcomeScorer, "attributes": OutcomeScorer,
                    "genarm": GenARMScorer}


def sequence_scorer(config: RewardModelConfig, params, tokenizer, **kwargs):
  """The scorer that turns (prompt, completion) into one reward for this head."""
  if config.head not in SEQUENCE_SCORERS:
    raise ValueError(f"no sequence-level score for head {config.head!r}; "
                     f"heads with one: {sorted(SEQUENCE_SCORERS)}")
  return SEQUENCE_SCORERS[config.head](config, params, tokenizer, **kwargs)


# ----------------------------------------------------------------------------- save / load


def save_tokenizer(tokenizer, path: str) -> None:
  """Write a char tokenizer (`save`) or a Hugging Face one (`save_pretrained`) into `path`."""
  if hasattr(tokenizer, "save"):
    tokenizer.save(path)
  elif hasattr(getattr(tokenizer, "tokenizer", None), "save_pretrained"):
    tokenizer.tokenizer.save_pretrained(path)
  else:
    raise ValueError(f"cannot save tokenizer {tokenizer!r}: no save() or save_pretrained()")


def _has_tokenizer(path: str) -> bool:
  names = (CHAR_TOKENIZER_FILE, "tokenizer.json", "tokenizer_config.json")
  return any(os.path.exists(os.path.join(path, n)) for n in names)


def save_reward_model(path: str, config: RewardModelConfig, params, tokenizer=None) -> None:
  """Backbone as a Hugging Face directory, `head.safetensors`, `reward_config.json`
  (and the tokenizer when given)."""
  save_pretrained(path, config.backbone, params["backbone"])
  if jax.process_index() != 0:
    return
  flat = traverse_util.flatten_dict(params["head"], sep="/")
  save_file({k: np.ascontiguousarray(jax.device_get(v)) for k, v in flat.items()},
            os.path.join(path, HEAD_FILE))
  with open(os.path.join(path, REWARD_CONFIG_FILE), "w") as f:
    json.dump({"format_version": 1, **config.options()}, f, indent=2)
  if tokenizer is not None:
    save_tokenizer(tokenizer, path)


def load_reward_config(path: str, backbone: TransformerConfig) -> RewardModelConfig:
  file = os.path.join(path, REWARD_CONFIG_FILE)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{path}: no {REWARD_CONFIG_FILE}; not a saved reward model")
  with open(file) as f:
    options = json.load(f)
  options.pop("format_version", None)
  known = {f.name for f in dataclasses.fields(RewardModelConfig)} - {"backbone"}
  unknown = sorted(set(options) - known)
  if unknown:
    raise ValueError(f"{file}: unknown fields {unknown}")
  return RewardModelConfig(backbone=backbone, **options)


def load_reward_model(path: str, *, dtype=jnp.float32, compute_dtype=None, mesh=None):
  """`(config, params, tokenizer or None)` from a directory written by `save_reward_model`."""
  backbone, backbone_params = load_pretrained(path, dtype=dtype, compute_dtype=compute_dtype,
                                              mesh=mesh)
  config = load_reward_config(path, backbone)
  expected = jax.eval_shape(functools.partial(init_head, config), jax.random.key(0))
  stored = load_file(os.path.join(path, HEAD_FILE)) if os.path.exists(
      os.path.join(path, HEAD_FILE)) else {}
  flat_expected = traverse_util.flatten_dict(expected, sep="/")
  if set(stored) != set(flat_expected):
    raise ValueError(f"{path}/{HEAD_FILE}: tensors {sorted(stored)}, expected "
                     f"{sorted(flat_expected)} for head {config.head!r}")
  head = {}
  for name, shape in flat_expected.items():
    if stored[name].shape != shape.shape:
      raise ValueError(f"{path}/{HEAD_FILE}: {name} has shape {stored[name].shape}, "
                       f"expected {shape.shape}")
    head[name] = stored[name].astype(backbone.storage_dtype)
  head = traverse_util.unflatten_dict(head, sep="/")
  if mesh is not None:
    head = jax.tree.map(sharding.put_sharded, head, head_shardings(config, mesh))
  else:
    head = jax.tree.map(jnp.asarray, head)
  tokenizer = load_tokenizer(path) if _has_tokenizer(path) else None
  return config, {"backbone": backbone_params, "head": head}, tokenizer
