"""Batched autoregressive sampling with a preallocated KV cache, in two `jit`s.

Prefill runs once per prompt (a right-padded batch of prompts of any lengths) and only
the last prompt position is unembedded; the prompt cache is then repeated for the
`num_samples` samples of each prompt (first jit), and one `lax.while_loop` decodes until
every row has stopped or `max_new_tokens` tokens exist (second jit; the loop exits as
soon as all rows are done; `GenerateOutput.num_steps` says how many positions it ran).
The decode loop is compiled per number of rows (prompts x samples), not per split of the
rows into prompts and samples: calls with 1 x 8, 2 x 4 or 8 x 1 rows share it and only
recompile the cheaper prefill.

Randomness is per row: row `r` (= prompt `i * num_samples + sample`) draws its token at
step `t` with `fold_in(fold_in(rng, r), t)`. A row's draws therefore depend only on
`(rng, r, t)`, not on the batch around it, on mesh padding or on stop settings: a run
with stops yields a prefix of the same run without them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab import models, sharding
from rewardlab.models.config import TransformerConfig
from rewardlab.sampling import stops as stops_lib
from rewardlab.sampling.filters import SamplingParams, choose_tokens

_KEY_AXES = ("activation_batch", "activation_kv_heads", None, "cache_length")  # [B, K, E, S]
_VALUE_AXES = ("activation_batch", "activation_kv_heads", "cache_length", None)  # [B, K, S, E]


@dataclasses.dataclass
class GenerateOutput:
  """Completions of `generate`; N = len(prompts) * num_samples, M = max_new_tokens.

  tokens: [N, M] int32 completions only (samples of one prompt adjacent: row
    `i * num_samples + s` is sample `s` of prompt `i`), `pad_id` after `lengths`.
  lengths: [N] completion lengths (a stop token/string's token is included).
  logprobs: [N, M] the model's log-probabilities of the tokens (untempered,
    untruncated: `log softmax(logits)[token]`), 0 after `lengths`.
  stopped: [N] True where the row ended on a stop token or stop string, False where it
    ran out of `max_new_tokens`.
  num_steps: decode positions the loop ran (= max(lengths): it exits once all rows stop).
  """

  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray
  stopped: np.ndarray
  num_steps: int

  def completions(self) -> list[list[int]]:
    return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


def _record(rows: dict, step, token, logprob, row_stops: dict, table, pad_id: int) -> dict:
  """Write the tokens drawn at `step` into `rows` and mark the rows that stop on them.

  rows: "tokens"/"logprobs" [B, M], "lengths" [B], "done"/"stopped" [B] bool and
  "string_state" [B, N] (automaton state of each stop string, see `stops.py`).
  """
  done = rows["done"]
  token = jnp.where(done, pad_id, token)
  new = dict(rows)
  new["tokens"] = rows["tokens"].at[:, step].set(token)
  new["logprobs"] = rows["logprobs"].at[:, step].set(jnp.where(done, 0.0, logprob))
  new["lengths"] = rows["lengths"] + (~done).astype(jnp.int32)
  hit = jnp.any(token[:, None] == row_stops["tokens"], axis=-1)  # [B]
  if table is not None:  # [N, V, L]
    strings = jnp.arange(table.shape[0])[None, :]
    state = table[strings, token[:, None], rows["string_state"]]  # [B, N]
    hit |= jnp.any((state == stops_lib.MATCHED) & row_stops["active"], axis=-1)
    new["string_state"] = jnp.maximum(state, 0)
  hit &= ~done
  new["stopped"] = rows["stopped"] | hit
  new["done"] = done | hit
  return new


def row_keys(rng, batch: int):
  """One PRNG key per row: row r draws its token at step t with `fold_in(keys[r], t)`."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(batch))


def step_keys(keys, step):
  """[B] keys of one decode step (see `row_keys`)."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)


def segment_ends(max_new_tokens: int, cache_chunk: int | None) -> tuple[int, ...]:
  """Decode steps at which each cache segment ends: (c, 2c, ..., max_new_tokens)."""
  if cache_chunk is None or cache_chunk >= max_new_tokens:
    return (max_new_tokens,)
  return tuple(range(cache_chunk, max_new_tokens, cache_chunk)) + (max_new_tokens,)


def _constrain_cache(cache: dict) -> dict:
  return {**cache, "k": [sharding.constrain(c, _KEY_AXES) for c in cache["k"]],
          "v": [sharding.constrain(c, _VALUE_AXES) for c in cache["v"]]}


def _grow_cache(cache: dict, slots: int) -> dict:
  """Zero-pad every layer's keys [B, K, E, S] and values [B, K, S, E] to `slots` slots."""
  pad = lambda c, axis: jnp.pad(c, [(0, slots - c.shape[axis]) if a == axis else (0, 0)
                                    for a in range(c.ndim)])
  return _constrain_cache({**cache, "k": [pad(c, 3) for c in cache["k"]],
                           "v": [pad(c, 2) for c in cache["v"]]})


def _prefill(config, params, prompt_tokens, prompt_lengths, slots: int):
  """Cache [P, ..., slots, ...] holding the prompts, and the logits [P, V] after each."""
  num_prompts, width = prompt_tokens.shape
  mask = (jnp.arange(width)[None] < prompt_lengths[:, None]).astype(jnp.int32)
  cache = _constrain_cache(models.init_cache(config, num_prompts, slots))
  hidden, cache = models.forward(config, params, prompt_tokens, attention_mask=mask,
                                 cache=cache, return_logits=False)
  last = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  return cache, models.unembed(config, params, last)


@functools.partial(jax.jit, static_argnames=("config", "num_samples", "slots"))
def _prefill_rows(params, prompt_tokens, prompt_lengths, *, config: TransformerConfig,
                  num_samples: int, slots: int):
  """The cache [P * num_samples, ..., slots, ...] and last logits of the prompts
  (prompt_tokens [P, W] right padded, prompt_lengths [P]), each prompt prefilled once and
  repeated for its samples (row i * num_samples + s)."""
  cache, logits = _prefill(config, params, prompt_tokens, prompt_lengths, slots)
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  return _constrain_cache(jax.tree.map(repeat, cache)), repeat(logits)


def _decode(params, cache, logits, rng, row_stops, table, *, config: TransformerConfig,
            max_new_tokens: int, width: int, sampling: SamplingParams, pad_id: int,
            cache_chunk: int | None):
  """cache / logits [B, ...] from `_prefill_rows` (prompt width W = `width`); row_stops
  per row: "tokens" [B, S] (-1 = none) and, with stop strings, "active" [B, N] (which of
  the N strings apply) next to their transition `table` [N, V, L] (else None).

  Decode step t (>= 1) writes token t-1 at slot `length + t - 1`, so a segment ending at
  step e needs W + e - 1 cache slots; each segment attends over only those. Returns the
  final cache too, so that with one segment the input cache's buffers are reused for it
  (donated, see `_DECODE`) instead of held next to a copy.
  """
  ends = segment_ends(max_new_tokens, cache_chunk)
  batch = logits.shape[0]
  keys = row_keys(rng, batch)
  num_strings = 0 if table is None else table.shape[0]
  rows = {"tokens": jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
          "logprobs": jnp.zeros((batch, max_new_tokens), jnp.float32),
          "lengths": jnp.zeros((batch,), jnp.int32), "done": jnp.zeros((batch,), bool),
          "stopped": jnp.zeros((batch,), bool),
          "string_state": jnp.zeros((batch, num_strings), jnp.int32)}
  token, logprob = choose_tokens(logits, step_keys(keys, 0), sampling)
  rows = _record(rows, 0, token, logprob, row_stops, table, pad_id)

  def body(carry):
    step, rows, cache = carry
    logits, cache = models.forward(config, params, rows["tokens"][:, step - 1, None],
                                   cache=cache)
    token, logprob = choose_tokens(logits[:, 0], step_keys(keys, step), sampling)
    return step + 1, _record(rows, step, token, logprob, row_stops, table, pad_id), cache

  step = jnp.int32(1)
  for i, end in enumerate(ends):
    if i:
      cache = _grow_cache(cache, width + end - 1)
    cond = lambda carry, end=end: (carry[0] < end) & ~jnp.all(carry[1]["done"])
    step, rows, cache = jax.lax.while_loop(cond, body, (step, rows, cache))
  return {k: rows[k] for k in ("tokens", "lengths", "logprobs", "stopped")}, step, cache


_DECODE_STATIC = ("config", "max_new_tokens", "width", "sampling", "pad_id", "cache_chunk")
# Keyed by "the cache keeps its shape" (one segment): then its buffers are donated and reused.
_DECODE = {True: jax.jit(_decode, static_argnames=_DECODE_STATIC, donate_argnames=("cache",)),
           False: jax.jit(_decode, static_argnames=_DECODE_STATIC)}


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 16,
                num_rows: int | None = None):
  """Right-pad token lists to a width rounded up to `multiple` (bounds recompiles).

  `num_rows` (>= len(prompts)) adds dummy one-token prompts at the end (mesh padding).
  Returns tokens [num_rows, W] int32 and lengths [num_rows] int32.
  """
  if not prompts:
    raise ValueError("generate: no prompts given")
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.min() == 0:
    raise ValueError(f"generate: prompt {int(lengths.argmin())} is empty")
  num_rows = len(prompts) if num_rows is None else num_rows
  width = int(-(-lengths.max() // multiple) * multiple)
  tokens = np.full((num_rows, width), pad_id, np.int32)
  for i, p in enumerate(prompts):
    tokens[i, :len(p)] = p
  all_lengths = np.ones((num_rows,), np.int32)
  all_lengths[:len(prompts)] = lengths
  return tokens, all_lengths


def _per_prompt(values, num_prompts: int, name: str, is_item) -> list[tuple]:
  """A shared list (applied to every prompt) or one list per prompt -> one tuple per prompt."""
  if is_item(values):
    values = [values]
  values = list(values)
  if all(is_item(v) for v in values):
    return [tuple(values)] * num_prompts
  if len(values) != num_prompts:
    raise ValueError(f"generate: {name} has {len(values)} entries but there are "
                     f"{num_prompts} prompts (give one shared list or one list per prompt)")
  rows = [tuple([v] if is_item(v) else v) for v in values]
  for i, row in enumerate(rows):
    if not all(is_item(v) for v in row):
      raise ValueError(f"generate: {name}[{i}] = {row!r} is not a list of {name[5:]}")
  return rows


def _stop_arrays(config: TransformerConfig, num_prompts: int, num_rows: int, stop_tokens,
                 stop_strings, decode_fn) -> tuple[dict, np.ndarray | None]:
  """Per-row stop arrays for `_generate` (rows past `num_prompts` never stop) and the
  stop-string transition table (None without stop strings)."""
  is_token = lambda v: isinstance(v, (int, np.integer))
  token_rows = _per_prompt(stop_tokens, num_prompts, "stop_tokens", is_token)
  bad = [int(t) for row in token_rows for t in row if not 0 <= int(t) < config.vocab_size]
  if bad:
    raise ValueError(f"generate: stop_tokens {bad} outside [0, {config.vocab_size})")
  tokens = np.full((num_rows, max(1, *map(len, token_rows))), -1, np.int32)
  for i, row in enumerate(token_rows):
    tokens[i, :len(row)] = row
  string_rows = _per_prompt(stop_strings, num_prompts, "stop_strings",
                            lambda v: isinstance(v, str))
  strings = sorted({s for row in string_rows for s in row})
  if not strings:
    return {"tokens": tokens}, None
  if decode_fn is None:
    raise ValueError("generate: stop_strings need decode_fn (e.g. tokenizer.decode)")
  table = stops_lib.stop_string_table(strings, decode_fn, config.vocab_size)
  active = np.zeros((num_rows, len(strings)), bool)
  for i, row in enumerate(string_rows):
    active[i] = [s in row for s in strings]
  return {"tokens": tokens, "active": active}, table


def place_global_batch(batch, mesh):
  """Place a host batch that every process holds in full (the *global* rows) on the mesh's
  data axes; each device receives only its rows. Without a mesh: `jnp.asarray`. In one
  process this is `sharding.shard_batch`; across processes it differs from it, which takes
  each process's local slice."""
  if mesh is None or jax.process_count() == 1:
    return sharding.shard_batch(batch, mesh)
  return jax.tree.map(lambda x: sharding.put_sharded(
      np.asarray(x), sharding.batch_sharding(mesh, np.ndim(x))), batch)


def gather_global(tree):
  """numpy copies of a tree of arrays, gathered from every process where a mesh spans
  several (`process_allgather`; every process calls this)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


def generate(config: TransformerConfig, params, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, temperature: float, top_k: int = 0, top_p: float = 1.0,
             min_p: float = 0.0, stop_tokens=(), stop_strings=(),
             decode_fn: Callable[[list[int]], str] | None = None, num_samples: int = 1,
             rng=None, pad_id: int = 0, mesh=None,
             cache_chunk: int | None = None) -> GenerateOutput:
  """Sample `num_samples` completions for each prompt (token id lists of any length).

  temperature 0 is greedy; otherwise see `filter_logits` for top_k / top_p / min_p.
  stop_tokens: token ids shared by all prompts, or one list per prompt. A row ends with
    the first stop token it emits (included in the completion and in `lengths`).
  stop_strings: strings shared by all prompts, or one list per prompt; needs
    `decode_fn(ids) -> str` (e.g. `tokenizer.decode`). A row ends with the first token
    at which its completion's text contains a stop string (`stops.py` has the exact
    semantics); matching runs inside the jitted loop.
  rng: a PRNG key (required unless greedy). With a `mesh`, the prompt batch is sharded
    over the mesh's data axes (padded with dummy prompts to a multiple of their size) and
    the output equals the unsharded one. When the mesh spans several `jax.distributed`
    processes, every process passes the same (global) prompts and rng, each process's
    devices decode their rows, and every process receives all completions (gathered).
  cache_chunk: None attends over the whole preallocated cache (prompt width +
    max_new_tokens slots) at every step. An int c decodes in segments of c steps whose
    cache holds only the slots filled so far (it grows by c slots between segments), so
    early steps read less; each segment is a separately compiled loop body (more compile
    time), and the output is the same.
  """
  if max_new_tokens <= 0:
    raise ValueError(f"generate: max_new_tokens must be positive, got {max_new_tokens}")
  if num_samples <= 0:
    raise ValueError(f"generate: num_samples must be positive, got {num_samples}")
  if cache_chunk is not None and int(cache_chunk) <= 0:
    raise ValueError(f"generate: cache_chunk must be positive or None, got {cache_chunk}")
  sampling = SamplingParams(temperature=float(temperature), top_k=int(top_k),
                            top_p=float(top_p), min_p=float(min_p))
  if rng is None:
    if not sampling.greedy:
      raise ValueError("generate: pass rng when temperature > 0")
    rng = jax.random.key(0)
  num_prompts = len(prompts)
  data_size = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
  num_rows = -(-num_prompts // data_size) * data_size
  tokens, lengths = pad_prompts(prompts, pad_id, num_rows=num_rows)
  # Positions are cache slots `length + t`, so padding does not count: only the longest
  # real prompt plus the new tokens must fit the model's positions.
  if int(lengths.max()) + max_new_tokens > config.max_position_embeddings:
    raise ValueError(f"generate: longest prompt {int(lengths.max())} + max_new_tokens "
                     f"{max_new_tokens} exceeds max_position_embeddings "
                     f"{config.max_position_embeddings}")
  row_stops, table = _stop_arrays(config, num_prompts, num_rows, stop_tokens, stop_strings,
                                  decode_fn)
  # Every sample of a prompt stops as the prompt says (rows i * num_samples + s).
  row_stops = {k: np.repeat(v, num_samples, axis=0) for k, v in row_stops.items()}
  inputs = place_global_batch({"tokens": tokens, "lengths": lengths}, mesh)
  row_stops = place_global_batch(row_stops, mesh)
  table = None if table is None else jnp.asarray(table)
  width = tokens.shape[1]
  slots = width + segment_ends(int(max_new_tokens), cache_chunk)[0] - 1
  with sharding.use_mesh(mesh):
    cache, logits = _prefill_rows(params, inputs["tokens"], inputs["lengths"], config=config,
                                  num_samples=int(num_samples), slots=slots)
    one_segment = len(segment_ends(int(max_new_tokens), cache_chunk)) == 1
    out, steps, _ = _DECODE[one_segment](
        params, cache, logits, rng, row_stops, table, config=config,
        max_new_tokens=int(max_new_tokens), width=width, sampling=sampling, pad_id=int(pad_id),
        cache_chunk=cache_chunk)
  out = gather_global(out)
  keep = num_prompts * num_samples
  return GenerateOutput(tokens=np.asarray(out["tokens"][:keep]),
                        lengths=np.asarray(out["lengths"][:keep]),
                        logprobs=np.asarray(out["logprobs"][:keep]),
                        stopped=np.asarray(out["stopped"][:keep]),
                        num_steps=int(gather_global(steps)))
