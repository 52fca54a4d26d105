"""Records -> fixed-shape numpy examples (int32 tokens, right padding) for JAX.

Conventions shared by every encoder:

* Prompt text: the tokenizer's chat template when it has one (the prompt becomes
  user/assistant messages and ends with the generation prompt), else plain
  concatenation: a string prompt verbatim, a message prompt through the
  tokenizer's plain ``chat_prompt`` fallback. The prompt is encoded with BOS in
  the plain case only: chat templates write their own.
* Prompt and response are tokenized separately and concatenated, so that the
  prompt length (where the response starts) is exact.
* Reward sequences always end in EOS (training and evaluation alike), and the
  score is read at ``score_index = length - 1``, the EOS. Padding is found from the
  mask, never from token values, so ``pad_id == eos_id`` is safe.
* Nothing is truncated: an example longer than ``max_length`` (or with more than
  ``max_steps`` steps) is dropped, the encoder returns None and counts the drop in
  the ``ReadStats`` passed as ``stats`` (``"too_long"`` / ``"too_many_steps"``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from rewardlab.data.formats import (ATTRIBUTES, Message, Prompt, PreferencePair, RatedResponse,
                                    ReadStats, StepwiseSolution)
from rewardlab.data.tokenizers import Tokenizer

Example = dict[str, np.ndarray]


def pad_to(tokens: Sequence[int], length: int, pad_id: int) -> np.ndarray:
  """Right-pad ``tokens`` with ``pad_id`` to ``[length]`` int32; longer input is an error."""
  if len(tokens) > length:
    raise ValueError(f"{len(tokens)} tokens do not fit in length {length}")
  out = np.full((length,), pad_id, dtype=np.int32)
  out[:len(tokens)] = np.asarray(tokens, dtype=np.int32)
  return out


def length_mask(length: int, max_length: int) -> np.ndarray:
  """``[max_length]`` int32, 1 on the first ``length`` positions."""
  return (np.arange(max_length) < length).astype(np.int32)


def render_prompt(tokenizer: Tokenizer, prompt: Prompt) -> str:
  """The prompt text that the response is appended to.

  A plain-string prompt is used verbatim unless the tokenizer has a chat template
  (then it becomes one user message). Message prompts always go through
  ``tokenizer.chat_prompt`` with the generation prompt: the chat template, or
  the tokenizer's own plain fallback when it has none.
  """
  if isinstance(prompt, str) and not tokenizer.has_chat_template:
    return prompt
  messages = (Message("user", prompt),) if isinstance(prompt, str) else tuple(prompt)
  return tokenizer.chat_prompt([m.to_dict() for m in messages], add_generation_prompt=True)


def encode_prompt(tokenizer: Tokenizer, prompt: Prompt) -> list[int]:
  return tokenizer.encode(render_prompt(tokenizer, prompt), add_bos=not tokenizer.has_chat_template)


def _drop(stats: ReadStats | None, reason: str, detail: str) -> None:
  if stats is not None:
    stats.skip(reason, detail)


@dataclasses.dataclass(frozen=True)
class EncodedPair:
  """``prompt + response + EOS``, right padded.

  tokens, mask: ``[max_length]`` int32; ``length`` real tokens; the score is read at
  ``score_index = length - 1`` (the EOS); the response starts at ``prompt_length``.
  """
  tokens: np.ndarray
  mask: np.ndarray
  length: int
  score_index: int
  prompt_length: int


def encode_pair(tokenizer: Tokenizer, prompt: Prompt, response: str, max_length: int, *,
                stats: ReadStats | None = None) -> EncodedPair | None:
  """Encode one prompt/response for a reward model; None (counted ``too_long``) if too long."""
  prompt_ids = encode_prompt(tokenizer, prompt)
  ids = prompt_ids + tokenizer.encode(response) + [tokenizer.eos_id]
  if len(ids) > max_length:
    _drop(stats, "too_long", f"{len(ids)} tokens > max_length {max_length}")
    return None
  return EncodedPair(pad_to(ids, max_length, tokenizer.pad_id), length_mask(len(ids), max_length),
                     len(ids), len(ids) - 1, len(prompt_ids))


def _side(prefix: str, enc: EncodedPair) -> Example:
  return {
      f"{prefix}_tokens": enc.tokens,                                       # [L]
      f"{prefix}_mask": enc.mask,                                           # [L]
      f"{prefix}_score_index": np.asarray(enc.score_index, np.int32),       # []
      f"{prefix}_prompt_length": np.asarray(enc.prompt_length, np.int32),   # []
  }


def encode_preference(tokenizer: Tokenizer, pair: PreferencePair, max_length: int, *,
                      stats: ReadStats | None = None) -> Example | None:
  """Pair example: ``{chosen,rejected}_{tokens,mask}`` [L], their score indices and
  prompt lengths, ``margin`` (0.0 when the data has none) and ``strength`` (|s|, 1.0
  for plain pairs). The pair is dropped whole if either side is too long."""
  chosen = encode_pair(tokenizer, pair.prompt, pair.chosen, max_length, stats=stats)
  rejected = None
  if chosen is not None:
    rejected = encode_pair(tokenizer, pair.prompt, pair.rejected, max_length, stats=stats)
  if rejected is None:
    return None
  return {**_side("chosen", chosen), **_side("rejected", rejected),
          "margin": np.asarray(pair.margin or 0.0, np.float32),
          "strength": np.asarray(pair.strength, np.float32)}


def encode_rating(tokenizer: Tokenizer, record: RatedResponse, max_length: int, *,
                  stats: ReadStats | None = None) -> Example | None:
  """Rating example: ``tokens``, ``mask`` [L], ``score_index`` [], ``targets`` [5] float32
  in ``ATTRIBUTES`` order (raw 0–4 values)."""
  enc = encode_pair(tokenizer, record.prompt, record.response, max_length, stats=stats)
  if enc is None:
    return None
  return {"tokens": enc.tokens, "mask": enc.mask,
          "score_index": np.asarray(enc.score_index, np.int32),
          "targets": np.asarray(record.ratings, np.float32).reshape(len(ATTRIBUTES))}


def encode_steps(tokenizer: Tokenizer, prompt: Prompt, steps: Sequence[str],
                 labels: Sequence[float], max_length: int, max_steps: int, *,
                 separator: str = "\n", stats: ReadStats | None = None) -> Example | None:
  """Stepwise PRM example for ``prompt + Σ_k (step_k + separator)`` (no EOS).

  ``tokens``, ``mask`` [L]; ``step_positions`` [S] int32 = index of the last token of
  each ``step_k + separator`` (each segment is tokenized on its own, so this is exact);
  ``step_labels`` [S] float32; ``step_mask`` [S] int32. Unused step slots hold 0.
  ``prompt_length`` [] int32: the first step's first token (the prompt's length).
  """
  if len(labels) != len(steps):
    raise ValueError(f"{len(labels)} labels for {len(steps)} steps")
  if not separator:
    raise ValueError("the step separator must be a non-empty string")
  if len(steps) > max_steps:
    _drop(stats, "too_many_steps", f"{len(steps)} steps > max_steps {max_steps}")
    return None
  ids = encode_prompt(tokenizer, prompt)
  prompt_length = len(ids)
  positions = []
  for k, step in enumerate(steps):
    segment = tokenizer.encode(step + separator)
    if not segment:
      raise ValueError(f"step {k} plus separator encodes to no tokens")
    ids += segment
    positions.append(len(ids) - 1)
  if len(ids) > max_length:
    _drop(stats, "too_long", f"{len(ids)} tokens > max_length {max_length}")
    return None
  n = len(steps)
  step_labels = np.zeros((max_steps,), np.float32)
  step_labels[:n] = labels
  return {"tokens": pad_to(ids, max_length, tokenizer.pad_id),
          "mask": length_mask(len(ids), max_length),
          "step_positions": pad_to(positions, max_steps, 0),
          "step_labels": step_labels,
          "step_mask": length_mask(n, max_steps),
          "prompt_length": np.asarray(prompt_length, np.int32)}


def encode_solution(tokenizer: Tokenizer, record: StepwiseSolution, max_length: int, *,
                    max_steps: int, separator: str = "\n",
                    stats: ReadStats | None = None) -> Example | None:
  return encode_steps(tokenizer, record.prompt, record.steps, record.labels, max_length,
                      max_steps, separator=separator, stats=stats)


# Record type -> encoder; encoders take (tokenizer, record, max_length, **options).
ENCODERS: dict[type, Callable[..., Example | None]] = {
    PreferencePair: encode_preference,
    RatedResponse: encode_rating,
    StepwiseSolution: encode_solution,
}


def iter_encoded(tokenizer: Tokenizer, records: Iterable[Any], max_length: int, *,
                 stats: ReadStats | None = None, **options: Any) -> Iterator[Example]:
  """Encode each record with its type's encoder, skipping drops (counted in ``stats``).

  ``options`` go to the encoder (``max_steps=…``, ``separator=…`` for stepwise data).
  """
  for record in records:
    encoder = ENCODERS.get(type(record))
    if encoder is None:
      raise ValueError(f"no encoder for {type(record).__name__}; known: "
                       f"{[t.__name__ for t in ENCODERS]}")
    example = encoder(tokenizer, record, max_length, stats=stats, **options)
    if example is not None:
      yield example


def encode_records(tokenizer: Tokenizer, records: Iterable[Any], max_length: int, *,
                   stats: ReadStats | None = None, **options: Any) -> list[Example]:
  """``list(iter_encoded(...))``."""
  return list(iter_encoded(tokenizer, records, max_length, stats=stats, **options))


def stack_examples(examples: Sequence[Example]) -> Example:
  """List of examples -> one batch dict with a leading ``[B]`` axis."""
  if not examples:
    raise ValueError("cannot stack an empty list of examples")
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
