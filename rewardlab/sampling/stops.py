"""Stop strings as a token-level automaton, so the jitted decode loop can stop on text.

A stop string `s` (for example the step separator "\\n\\n") may be split across tokens
or sit inside one token ("\\n\\nThe"). Matching on the host after every step would break
the jitted loop, so each string becomes a small automaton over token ids, precomputed
once per (tokenizer, strings):

* state `q` in [0, len(s)) = length of the longest suffix of the completion text so far
  that is a prefix of `s` (Knuth-Morris-Pratt style);
* `transitions[j, v, q]` = the state of string `j` after appending token `v`'s text in
  state `q`, or `MATCHED` (-1) when `s` occurs in the text `s[:q] + text(v)`.

Because `q` is the *longest* such suffix, no occurrence of `s` can start earlier in the
text than the last `q` characters, so the table is exact: a row reaches `MATCHED` at the
first token whose text completes the first occurrence of `s` in the completion.

Exact semantics (what `generate` implements with these tables):
* matching runs over the completion's text only (the prompt is not part of it);
* the completion ends with (and includes) the first token at which the decoded text of
  the completion contains any of the row's stop strings; that token's text may extend
  past the stop string (a token "\\n\\nThe" ends a row that stops on "\\n\\n");
* token texts are `decode_fn([v])` for every id `v < vocab_size`; this is exact when
  decoding concatenates token texts (byte-level BPE tokenizers such as GPT-2, Qwen2 and
  Llama 3 do for ASCII stop strings). Tokens that decode to partial UTF-8 bytes, or
  SentencePiece tokens whose leading space is dropped when decoded alone, can hide a
  stop string that contains such characters.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

MATCHED = -1


def token_texts(decode_fn: Callable[[list[int]], str], vocab_size: int) -> list[str]:
  """`decode_fn([v])` for every token id `v` in [0, vocab_size)."""
  texts = []
  for v in range(vocab_size):
    text = decode_fn([v])
    if not isinstance(text, str):
      raise ValueError(f"decode_fn([{v}]) returned {type(text).__name__}, expected str")
    texts.append(text)
  return texts


def next_state(stop: str, state: int, text: str) -> int:
  """The automaton step: state after appending `text` in `state` (or MATCHED)."""
  joined = stop[:state] + text
  if stop in joined:
    return MATCHED
  for k in range(min(len(stop) - 1, len(joined)), 0, -1):
    if joined.endswith(stop[:k]):
      return k
  return 0


def transition_table(stops: Sequence[str], texts: Sequence[str]) -> np.ndarray:
  """`[N, V, L]` int32 transitions of N stop strings over V token texts (L = longest stop).

  Entries for states `q >= len(stops[j])` are unused and set to 0.
  """
  width = max(len(s) for s in stops)
  table = np.zeros((len(stops), len(texts), width), np.int32)
  for j, stop in enumerate(stops):
    chars = set(stop)
    for v, text in enumerate(texts):
      if not text:  # empty text (e.g. a skipped special token) keeps the state
        table[j, v, :len(stop)] = np.arange(len(stop))
      elif not chars.intersection(text):  # the text cannot start, continue or end a match
        continue
      else:
        table[j, v, :len(stop)] = [next_state(stop, q, text) for q in range(len(stop))]
  return table


@functools.lru_cache(maxsize=16)
def _cached_table(decode_fn, vocab_size: int, stops: tuple[str, ...]) -> np.ndarray:
  return transition_table(stops, token_texts(decode_fn, vocab_size))


def stop_string_table(stops: Sequence[str], decode_fn: Callable[[list[int]], str],
                      vocab_size: int) -> np.ndarray:
  """The transition table of `stops` for the tokenizer behind `decode_fn` (cached).

  The cache is keyed on `decode_fn` (e.g. the bound `tokenizer.decode`), so repeated
  `generate` calls with the same tokenizer and strings decode the vocabulary once.
  """
  stops = tuple(stops)
  bad = [s for s in stops if not isinstance(s, str) or not s]
  if bad:
    raise ValueError(f"stop_strings must be non-empty str, got {bad!r}")
  try:
    return _cached_table(decode_fn, int(vocab_size), stops)
  except TypeError:  # unhashable decode_fn: build without the cache
    return transition_table(stops, token_texts(decode_fn, vocab_size))


def first_stop(texts: Sequence[str], stops: Sequence[str]) -> int | None:
  """Brute-force reference: index of the first token at which the joined texts contain a
  stop string, or None."""
  joined = ""
  for t, text in enumerate(texts):
    joined += text
    if any(s in joined for s in stops):
      return t
  return None
