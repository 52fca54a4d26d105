"""Tokenizers behind one small protocol: a character tokenizer and Hugging Face ones.

Every other module talks to :class:`Tokenizer` only. Two implementations:

* :class:`CharTokenizer` for the synthetic tasks: ids ``0 = <pad>``, ``1 = <bos>``,
  ``2 = <eos>``, then one id per alphabet character in order. Saved as
  ``tokenizer_char.json``.
* :class:`HFTokenizer` wrapping a local ``transformers`` tokenizer directory
  (``local_files_only=True``; remote code is never trusted).

:func:`load_tokenizer` picks the right one for a directory.

Chat prompts: when the tokenizer has a chat template it is applied as text
(``tokenize=False``). Otherwise the plain fallback :func:`plain_chat_prompt` is
used: message contents in order, each followed by a newline unless it already
ends with one; roles are dropped and ``add_generation_prompt`` has no effect.
For the arithmetic task a single user message ``"Q:37+45\\n"`` thus gives the
prompt ``"Q:37+45\\n"`` unchanged.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

CHAR_TOKENIZER_FILE = "tokenizer_char.json"
_CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>")


@runtime_checkable
class Tokenizer(Protocol):
  """The tokenizer interface used throughout rewardlab."""

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

  def decode(self, ids, *, skip_special: bool = True) -> str: ...

  def token_to_id(self, token: str) -> int: ...

  def chat_prompt(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str: ...

  @property
  def has_chat_template(self) -> bool: ...


def _check_messages(messages: Sequence[dict]) -> None:
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
        or not isinstance(message.get("role"), str):
      raise ValueError(f"messages[{i}] must be a dict with str 'role' and 'content', got {message!r}")


def plain_chat_prompt(messages: Sequence[dict]) -> str:
  """Fallback chat prompt: contents joined, each ending in ``\\n`` (roles dropped)."""
  _check_messages(messages)
  return "".join(m["content"] if m["content"].endswith("\n") else m["content"] + "\n"
                 for m in messages)


class CharTokenizer:
  """One token per character of a fixed alphabet, after three special tokens."""

  pad_id = 0
  bos_id = 1
  eos_id = 2

  def __init__(self, alphabet: str):
    if not alphabet:
      raise ValueError("alphabet must not be empty")
    duplicates = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if duplicates:
      raise ValueError(f"alphabet has duplicate characters: {duplicates!r}")
    self.alphabet = alphabet
    self._ids = {c: i + len(_CHAR_SPECIALS) for i, c in enumerate(alphabet)}
    self._tokens = list(_CHAR_SPECIALS) + list(alphabet)
    self.vocab_size = len(self._tokens)

  @classmethod
  def for_arithmetic(cls) -> CharTokenizer:
    """The tokenizer of :mod:`rewardlab.tasks.arithmetic` (its ``ALPHABET``)."""
    from rewardlab.tasks.arithmetic import ALPHABET

    return cls(ALPHABET)

  def __repr__(self) -> str:
    return f"CharTokenizer(alphabet={self.alphabet!r})"

  def __eq__(self, other) -> bool:
    return isinstance(other, CharTokenizer) and other.alphabet == self.alphabet

  def __hash__(self) -> int:
    return hash(self.alphabet)

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    """Character ids; ValueError names the first unknown character and its position."""
    ids = [self.bos_id] if add_bos else []
    for position, char in enumerate(text):
      token_id = self._ids.get(char)
      if token_id is None:
        raise ValueError(self.unencodable(text))
      ids.append(token_id)
    return ids

  def unencodable(self, text: str) -> str | None:
    """Why `text` cannot be encoded (its first character outside the alphabet), or None.
    Data readers call it per field so that a bad row is named before encoding."""
    for position, char in enumerate(text):
      if char not in self._ids:
        return (f"character {char!r} at position {position} is not in the alphabet "
                f"{self.alphabet!r}")
    return None

  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
    """Text of ``ids`` (nothing stops at eos); specials dropped or shown as ``<pad>`` etc."""
    pieces = []
    for position, token_id in enumerate(ids):
      token_id = int(token_id)
      if not 0 <= token_id < self.vocab_size:
        raise ValueError(f"token id {token_id} at position {position} is outside "
                         f"[0, {self.vocab_size})")
      if token_id < len(_CHAR_SPECIALS) and skip_special:
        continue
      pieces.append(self._tokens[token_id])
    return "".join(pieces)

  def token_to_id(self, token: str) -> int:
    """Id of a character or of ``<pad>``/``<bos>``/``<eos>``; KeyError if absent."""
    if token in _CHAR_SPECIALS:
      return _CHAR_SPECIALS.index(token)
    if token not in self._ids:
      raise KeyError(f"token {token!r} is not in the vocabulary of {self!r}")
    return self._ids[token]

  @property
  def has_chat_template(self) -> bool:
    return False

  def chat_prompt(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """Plain fallback (:func:`plain_chat_prompt`); there is no chat template."""
    del add_generation_prompt
    return plain_chat_prompt(messages)

  def save(self, path: str | os.PathLike) -> str:
    """Write ``tokenizer_char.json`` into directory ``path``; returns the file path."""
    os.makedirs(path, exist_ok=True)
    file = os.path.join(path, CHAR_TOKENIZER_FILE)
    with open(file, "w", encoding="utf-8") as f:
      json.dump({"type": "char", "version": 1, "special_tokens": list(_CHAR_SPECIALS),
                 "alphabet": self.alphabet}, f, indent=2)
    return file

  @classmethod
  def load(cls, path: str | os.PathLike) -> CharTokenizer:
    """Read a directory holding ``tokenizer_char.json`` (or that file itself)."""
    file = os.path.join(path, CHAR_TOKENIZER_FILE) if os.path.isdir(path) else os.fspath(path)
    with open(file, encoding="utf-8") as f:
      data = json.load(f)
    if data.get("type") != "char" or not isinstance(data.get("alphabet"), str):
      raise ValueError(f"{file}: not a char tokenizer file (need type 'char' and an alphabet)")
    if data.get("special_tokens", list(_CHAR_SPECIALS)) != list(_CHAR_SPECIALS):
      raise ValueError(f"{file}: special_tokens {data['special_tokens']!r} differ from "
                       f"{list(_CHAR_SPECIALS)!r}")
    return cls(data["alphabet"])


class HFTokenizer:
  """A local Hugging Face tokenizer behind the :class:`Tokenizer` protocol.

  ``vocab_size`` is ``len(tokenizer)`` (added tokens included: the embedding must
  cover every id). ``pad_id`` falls back to ``eos_id`` when the tokenizer has no
  pad token (padding is always masked, so the id only has to be valid).
  ``add_bos`` prepends the bos only when the tokenizer itself does (``adds_bos``: its
  encoding with special tokens starts with bos, as Llama's ``<s>`` does); it is a no-op
  for tokenizers that name a bos but never prepend it (GPT-2, SmolLM2, whose bos is the
  chat turn opener ``<|im_start|>``) or have none (Qwen2), and never doubles a bos
  already at the start (e.g. from a chat template). ``token_to_id`` takes raw vocabulary
  strings (for byte-level BPE, a leading space is ``Ġ``).
  """

  def __init__(self, path: str | os.PathLike):
    from transformers import AutoTokenizer

    self.path = os.fspath(path)
    self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True,
                                                   trust_remote_code=False)
    tok = self.tokenizer
    if tok.eos_token_id is None:
      raise ValueError(f"tokenizer at {self.path} has no eos token; set eos_token in "
                       f"tokenizer_config.json")
    self.eos_id = int(tok.eos_token_id)
    self.bos_id = None if tok.bos_token_id is None else int(tok.bos_token_id)
    self.adds_bos = self.bos_id is not None and (
        tok.encode("a", add_special_tokens=True)[:1] == [self.bos_id]
        and tok.encode("a", add_special_tokens=False)[:1] != [self.bos_id])
    self.pad_id = self.eos_id if tok.pad_token_id is None else int(tok.pad_token_id)
    self.vocab_size = len(tok)
    self._vocab = tok.get_vocab()

  def __repr__(self) -> str:
    return f"HFTokenizer({self.path!r})"

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    ids = list(self.tokenizer.encode(text, add_special_tokens=False))
    if add_bos and self.adds_bos and (not ids or ids[0] != self.bos_id):
      ids.insert(0, self.bos_id)
    return ids

  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def token_to_id(self, token: str) -> int:
    if token not in self._vocab:
      raise KeyError(f"token {token!r} is not in the vocabulary of {self!r}")
    return int(self._vocab[token])

  @property
  def has_chat_template(self) -> bool:
    return bool(getattr(self.tokenizer, "chat_template", None))

  def chat_prompt(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """The chat template applied as text, or :func:`plain_chat_prompt` without one."""
    _check_messages(messages)
    if not self.has_chat_template:
      return plain_chat_prompt(messages)
    return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                              add_generation_prompt=add_generation_prompt)


def decode_sampled(tokenizer: Tokenizer, ids) -> str:
  """Text of sampled ids; ids past the tokenizer's vocabulary (a model's vocabulary is
  padded, e.g. to a multiple of 8) have no text and are dropped, as a policy sampling at
  temperature 1 may emit them."""
  size = getattr(tokenizer, "vocab_size", None)
  return tokenizer.decode([i for i in ids if size is None or 0 <= i < size])


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
  """A :class:`CharTokenizer` for a directory with ``tokenizer_char.json`` (or that
  file), otherwise an :class:`HFTokenizer` for a local transformers directory."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no tokenizer at {path}")
  if os.path.basename(path) == CHAR_TOKENIZER_FILE or (
      os.path.isdir(path) and os.path.exists(os.path.join(path, CHAR_TOKENIZER_FILE))):
    return CharTokenizer.load(path)
  return HFTokenizer(path)
