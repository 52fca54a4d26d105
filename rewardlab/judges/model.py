"""The judge's language model: prompts in, next-token verdict logits and samples out.

A judge is any causal LM of `rewardlab.models` with its tokenizer:
`JudgeModel(config, params, tokenizer)`. Everything in `rewardlab.judges` is a function
of a `JudgeModel`, a template and texts; nothing holds state except the text-level
scorers that search needs (`rewardlab.judges.scorers`).

Prompts: a judge prompt is the template's user text, wrapped in the tokenizer's chat
template when it has one (one user message, optional system message, generation
prompt), followed by the template's `answer_prefix` (text the assistant "has already
written", e.g. "Verdict:"). Without a chat template the text is used as is and encoded
after BOS, as `rewardlab.data.encode.encode_prompt` does.

Compute accounting: every call returns how many tokens the judge read (prompt and
re-scored tokens of each forward pass) and generated, so callers can count them in a
search budget (`rewardlab.search.budget`).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardlab import models
from rewardlab.data.tokenizers import decode_sampled
from rewardlab.sampling.generate import generate

__all__ = ["JudgeModel", "Usage", "render_prompt", "encode_prompt", "verdict_token_ids",
           "verdict_sets", "next_token_logits", "logits_at", "sample", "verdict_probability_from_logits",
           "sample_with_tool", "evaluate_expression"]


@dataclasses.dataclass(frozen=True)
class JudgeModel:
  """A causal LM (`config`, `params`) and its tokenizer, used as a judge."""

  config: object
  params: object
  tokenizer: object

  @classmethod
  def load(cls, path: str, **kwargs) -> "JudgeModel":
    """A local Hugging Face directory (weights + tokenizer) as a judge."""
    import rewardlab
    from rewardlab.data.tokenizers import load_tokenizer

    config, params = rewardlab.load_pretrained(path, **kwargs)
    return cls(config, params, load_tokenizer(path))


@dataclasses.dataclass
class Usage:
  """Tokens a judge call read (forward passes over prompts and re-scored text) and wrote."""

  tokens_read: int = 0
  tokens_generated: int = 0

  def add(self, other: "Usage") -> "Usage":
    self.tokens_read += other.tokens_read
    self.tokens_generated += other.tokens_generated
    return self

  @property
  def total(self) -> int:
    return self.tokens_read + self.tokens_generated


def render_prompt(tokenizer, user: str, *, system: str | None = None, answer_prefix: str = ""
                  ) -> str:
  """The judge's prompt text: chat template (when present) around `user`, then `answer_prefix`."""
  if tokenizer.has_chat_template:
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": user}]
    return tokenizer.chat_prompt(messages, add_generation_prompt=True) + answer_prefix
  return (system + "\n" if system else "") + user + answer_prefix


def encode_prompt(tokenizer, text: str) -> list[int]:
  """Ids of a rendered prompt: BOS first unless a chat template writes its own."""
  return tokenizer.encode(text, add_bos=not tokenizer.has_chat_template)


def verdict_token_ids(tokenizer, forms: Sequence[str], what: str = "verdict") -> tuple[int, ...]:
  """Token ids of the surface forms of one verdict (e.g. "Yes", " Yes", "yes").

  A form is represented by its first token (the verdict is decided there; with BPE the
  usual forms are one token each); forms the tokenizer cannot encode are skipped, and
  ValueError is raised when none is left. The yes and no sets must not share a token
  (`verdict_probability_from_logits` checks).
  """
  ids = []
  for form in forms:
    try:
      encoded = tokenizer.encode(form)
    except ValueError:
      continue
    if encoded and encoded[0] not in ids:
      ids.append(int(encoded[0]))
  if not ids:
    raise ValueError(f"no {what} form among {list(forms)!r} can be encoded by {tokenizer!r}")
  return tuple(ids)


def verdict_sets(tokenizer, yes_forms: Sequence[str], no_forms: Sequence[str]
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(yes ids, no ids) of a template's verdict forms (`verdict_token_ids`); a first token
  shared by a yes and a no form (" Yes" / " No" with a character tokenizer) decides
  nothing and is dropped from both; ValueError when a side is left empty."""
  yes = verdict_token_ids(tokenizer, yes_forms, "yes")
  no = verdict_token_ids(tokenizer, no_forms, "no")
  shared = set(yes) & set(no)
  yes, no = tuple(i for i in yes if i not in shared), tuple(i for i in no if i not in shared)
  if not yes or not no:
    raise ValueError(f"the verdict forms {list(yes_forms)!r} / {list(no_forms)!r} share their "
                     f"first tokens under {tokenizer!r}")
  return yes, no


def verdict_probability_from_logits(logits, yes_ids: Sequence[int], no_ids: Sequence[int]):
  """`p = Σ_yes e^z / (Σ_yes e^z + Σ_no e^z)` = `σ(lse(z_yes) - lse(z_no))`, over the last axis.

  With one form each this is `softmax([z_yes, z_no])[0]` (SPECS §6); several surface
  forms have their probabilities summed first. logits `[..., V]` -> `[...]`.
  """
  overlap = set(yes_ids) & set(no_ids)
  if overlap:
    raise ValueError(f"token ids {sorted(overlap)} are both a yes and a no verdict")
  logits = jnp.asarray(logits, jnp.float32)
  yes = jax.nn.logsumexp(logits[..., jnp.asarray(yes_ids)], axis=-1)
  no = jax.nn.logsumexp(logits[..., jnp.asarray(no_ids)], axis=-1)
  return jax.nn.sigmoid(yes - no)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _bucket(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


@functools.partial(jax.jit, static_argnums=0)
def _gather_logits(config, params, tokens, mask, positions):
  """tokens, mask [B, T]; positions [B, P] -> logits [B, P, V] at those positions."""
  hidden = models.hidden_states(config, params, tokens, attention_mask=mask)
  picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [B, P, D]
  return models.unembed(config, params, picked).astype(jnp.float32)


def logits_at(judge: JudgeModel, sequences: Sequence[Sequence[int]],
              positions: Sequence[Sequence[int]], *, batch_size: int = 16
              ) -> tuple[list[np.ndarray], Usage]:
  """Next-token logits `[P_i, V]` read at `positions[i]` of `sequences[i]` (one forward each).

  Rows are padded to power-of-two counts and lengths rounded up to 32 so that few shapes
  compile; only the requested positions are unembedded (vocabularies can be large).
  """
  if len(sequences) != len(positions):
    raise ValueError(f"{len(sequences)} sequences for {len(positions)} position lists")
  limit = judge.config.max_position_embeddings
  usage, out = Usage(), [None] * len(sequences)
  order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    length = max(len(sequences[i]) for i in idx)
    if length > limit:
      raise ValueError(f"judge input of {length} tokens exceeds max_position_embeddings {limit}")
    width = min(_round_up(length, 32), limit)
    rows = _bucket(len(idx))
    num_pos = _bucket(max(1, max(len(positions[i]) for i in idx)))
    tokens = np.full((rows, width), judge.tokenizer.pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    pos = np.zeros((rows, num_pos), np.int32)
    mask[len(idx):, 0] = 1
    for r, i in enumerate(idx):
      seq, p = list(sequences[i]), list(positions[i])
      if any(not 0 <= q < len(seq) for q in p):
        raise ValueError(f"sequence {i}: positions {p} outside [0, {len(seq)})")
      tokens[r, :len(seq)], mask[r, :len(seq)] = seq, 1
      pos[r, :len(p)] = p
      usage.tokens_read += len(seq)
    logits = np.asarray(jax.device_get(_gather_logits(judge.config, judge.params, tokens, mask,
                                                      pos)))
    for r, i in enumerate(idx):
      out[i] = logits[r, :len(positions[i])]
  return out, usage


def next_token_logits(judge: JudgeModel, prompts: Sequence[Sequence[int]], **kwargs
                      ) -> tuple[np.ndarray, Usage]:
  """Logits `[N, V]` of the token after each prompt (ids)."""
  rows, usage = logits_at(judge, prompts, [[len(p) - 1] for p in prompts], **kwargs)
  return np.stack([r[0] for r in rows]) if rows else np.zeros((0, 0), np.float32), usage


def _generation_room(judge: JudgeModel, prompts, max_new_tokens: int) -> int:
  width = _round_up(max(len(p) for p in prompts), 16)
  room = judge.config.max_position_embeddings - width
  if room < 1:
    raise ValueError(f"judge prompt of {max(len(p) for p in prompts)} tokens leaves no room to "
                     f"generate (max_position_embeddings {judge.config.max_position_embeddings})")
  return min(int(max_new_tokens), room)


def sample(judge: JudgeModel, prompts: Sequence[Sequence[int]], num_samples: int, *,
           max_new_tokens: int, temperature: float, rng, stop_strings: Sequence[str] = (),
           stop_tokens: Sequence[int] = ()) -> tuple[list[list[int]], Usage]:
  """`num_samples` continuations (ids, EOS included when emitted) of every prompt, samples of
  one prompt adjacent; a row also ends on any of `stop_tokens` or `stop_strings`.
  Temperature 0 is greedy. `rng` is a JAX key."""
  if not prompts:
    return [], Usage()
  new = _generation_room(judge, prompts, max_new_tokens)
  room = judge.config.max_position_embeddings - _round_up(max(len(p) for p in prompts), 16)
  tok = judge.tokenizer
  # Generate up to a multiple of 16 and cut (a row's tokens do not depend on the limit):
  # calls with different limits then share compiled shapes.
  out = generate(judge.config, judge.params, [list(p) for p in prompts],
                 max_new_tokens=min(_round_up(new, 16), room), temperature=float(temperature),
                 stop_tokens=(tok.eos_id, *map(int, stop_tokens)),
                 stop_strings=tuple(stop_strings),
                 decode_fn=functools.partial(decode_sampled, tok) if stop_strings else None,
                 num_samples=int(num_samples),
                 rng=rng, pad_id=tok.pad_id)
  completions = [ids[:new] for ids in out.completions()]
  usage = Usage(tokens_read=sum(len(p) for p in prompts),
                tokens_generated=sum(len(c) for c in completions))
  return completions, usage


# ----------------------------------------------------------------------------- tool use


_EXPR = re.compile(r"\s*(\d+)((?:\s*[+\-*]\s*\d+)*)\s*")


def evaluate_expression(expr: str) -> int | None:
  """Exact value of `a op b op c ...` (integers; + - *) applied left to right, as the
  arithmetic task reads its problems; None when `expr` is not such an expression."""
  match = _EXPR.fullmatch(expr)
  if match is None:
    return None
  value = int(match.group(1))
  for op, b in re.findall(r"([+\-*])\s*(\d+)", match.group(2)):
    value = value + int(b) if op == "+" else value - int(b) if op == "-" else value * int(b)
  return value


def _encode_unknown(tokenizer) -> list[int]:
  """`=?` for a tool call that could not be evaluated (`=` where `?` cannot be encoded)."""
  try:
    return tokenizer.encode("=?")
  except ValueError:
    return tokenizer.encode("=")


def sample_with_tool(judge: JudgeModel, prompts: Sequence[Sequence[int]], num_samples: int, *,
                     max_new_tokens: int, temperature: float, rng, open_tag: str = "<calc>",
                     close_tag: str = "</calc>", max_calls: int = 8
                     ) -> tuple[list[list[int]], list[list[bool]], Usage]:
  """Sampling with a calculator (Themis-style tool use).

  When a continuation writes `open_tag expr close_tag`, generation pauses, `=<value>`
  (the exact value of `expr`, `evaluate_expression`) is appended as input tokens and
  generation resumes; an expression that cannot be evaluated gets `=?`. Returns the
  continuations (generated and tool tokens interleaved), a mask that is True at generated
  tokens, and the usage: tool tokens are read, not generated.
  """
  tok = judge.tokenizer
  rows = [list(p) for p in prompts for _ in range(num_samples)]
  conts = [[] for _ in rows]
  generated = [[] for _ in rows]
  active = list(range(len(rows)))
  usage = Usage()
  for call in range(max_calls + 1):
    if not active:
      break
    rng, key = jax.random.split(rng)
    active = [i for i in active if sum(generated[i]) < max_new_tokens]
    if not active:
      break
    outs, u = sample(judge, [rows[i] + conts[i] for i in active], 1,
                     max_new_tokens=max(max_new_tokens - sum(generated[i]) for i in active),
                     temperature=temperature, rng=key,
                     stop_strings=(close_tag,) if call < max_calls else ())
    usage.tokens_read += u.tokens_read
    still = []
    for i, ids in zip(active, outs):
      ids = ids[:max_new_tokens - sum(generated[i])]
      conts[i] += ids
      generated[i] += [True] * len(ids)
      usage.tokens_generated += len(ids)
      text = decode_sampled(tok, conts[i])
      if ids and ids[-1] != tok.eos_id and text.endswith(close_tag) and open_tag in text:
        expr = text[text.rindex(open_tag) + len(open_tag):-len(close_tag)]
        value = evaluate_expression(expr)
        tool_ids = tok.encode("=" + str(value)) if value is not None else _encode_unknown(tok)
        conts[i] += tool_ids
        generated[i] += [False] * len(tool_ids)
        usage.tokens_read += len(tool_ids)
        still.append(i)
    active = still
  return conts, generated, usage
