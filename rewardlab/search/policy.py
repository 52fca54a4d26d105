"""What test-time search talks to: a policy that continues text, and reward scorers.

Search code is model-agnostic. It sees

* a `Policy`: `sample(prompts, n, *, max_new_tokens, temperature, stop_at_step, rng)`
  returns, for each prompt (the problem prompt followed by the solution text so
  far), `n` `Completion`s. With `stop_at_step` a completion ends after the step
  separator (one reasoning step: its text ends with the separator string); otherwise
  it runs to EOS. `rng` is a numpy `Generator`; the same rng state gives the same
  completions.
* an outcome scorer with `score(prompts, completions) -> [B]` rewards, or a process
  scorer with `score_steps(prompts, steps_lists) -> list of [K_b]` step
  probabilities; both carry an integer `tokens_scored` counter that grows with
  every call (the compute accounting of `rewardlab.search.budget` reads it).

`LMPolicy` implements the protocol over `rewardlab.sampling.generate` (or, with
guide models, GenARM reward-guided decoding) and a tokenizer; tests use scripted
policies and scorers.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable

import jax
import numpy as np

from rewardlab.sampling import stops as stops_lib
from rewardlab.sampling.generate import generate
from rewardlab.sampling.guided import guided_generate

__all__ = ["Completion", "Policy", "OutcomeScorer", "ProcessScorer", "LMPolicy", "split_steps",
           "separator_token", "cut_after", "TokenText"]


@dataclasses.dataclass(frozen=True)
class Completion:
    """One continuation written by a policy.

    `text`: the decoded continuation (special tokens such as EOS dropped).
    `num_tokens`: tokens generated, the stop token (EOS or separator) included.
    `finished`: the policy will write nothing more: it emitted EOS or ran out of context.
    `token_ends`: optional, `[num_tokens]` character offsets in `text` where each token
      ends, so the text of the first i tokens is `text[:token_ends[i-1]]` (EOS ends
      where the text ends). Token-level QAlign needs it.
    """

    text: str
    num_tokens: int
    finished: bool
    token_ends: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.num_tokens < 0:
            raise ValueError(f"Completion.num_tokens must be >= 0, got {self.num_tokens}")
        if self.token_ends is not None:
            ends = tuple(int(e) for e in self.token_ends)
            object.__setattr__(self, "token_ends", ends)
            if len(ends) != self.num_tokens:
                raise ValueError(f"Completion.token_ends has {len(ends)} entries for "
                                 f"{self.num_tokens} tokens")
            if any(b < a for a, b in zip(ends, ends[1:])) or (ends and not 0 <= ends[-1] <= len(self.text)):
                raise ValueError(f"Completion.token_ends {ends} must be non-decreasing "
                                 f"offsets into a text of length {len(self.text)}")

    def prefix(self, num_tokens: int) -> str:
        """Text of the first `num_tokens` tokens (needs `token_ends`)."""
        if self.token_ends is None:
            raise ValueError("Completion.prefix needs token_ends (the policy did not report them)")
        if not 0 <= num_tokens <= self.num_tokens:
            raise ValueError(f"prefix length {num_tokens} outside [0, {self.num_tokens}]")
        return self.text[:self.token_ends[num_tokens - 1]] if num_tokens else ""


@runtime_checkable
class Policy(Protocol):
    def sample(self, prompts: list[str], n: int, *, max_new_tokens: int, temperature: float,
               stop_at_step: bool, rng: np.random.Generator) -> list[list[Completion]]: ...


@runtime_checkable
class OutcomeScorer(Protocol):
    tokens_scored: int

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray: ...


@runtime_checkable
class ProcessScorer(Protocol):
    tokens_scored: int

    def score_steps(self, prompts: list[str], steps_lists: list[list[str]]) -> list[np.ndarray]: ...


def split_steps(text: str, separator: str = "\n") -> list[str]:
    """Non-blank step strings of a solution text (separators removed).

    `"1+2=3\\n3*2=6\\nA:6\\n"` -> `["1+2=3", "3*2=6", "A:6"]`; the answer line is a step.
    """
    return [s for s in text.split(separator) if s.strip()]


def _bucket(n: int) -> int:
    """Next power of two >= n (row counts are bucketed to bound recompiles)."""
    return 1 << max(0, n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class TokenText:
    """`decode_fn` for stop-string tables: the text of token ids, where ids past the
    tokenizer's vocabulary (the model's vocabulary padding) have none. Equal for equal
    tokenizers, so the table cache of `rewardlab.sampling.stops` is shared by policies."""

    tokenizer: object

    def __call__(self, ids) -> str:
        return self.tokenizer.decode([i for i in ids if i < self.tokenizer.vocab_size])


def separator_token(tokenizer, separator: str, vocab_size: int) -> int | None:
    """The id of a one-character separator that is one token and inside no other token's
    text (then stopping on that token is stopping on the string), else None.

    A separator of several characters can be completed across tokens ("\\n" + "\\n" =
    "\\n\\n"), and one that other tokens contain (".\\n", "\\n\\n") can be emitted inside
    them, so both need a stop string. Decodes the vocabulary (`vocab_size` ids) only for a
    one-character, one-token separator.
    """
    ids = tokenizer.encode(separator)
    if len(separator) != 1 or len(ids) != 1:
        return None
    sep = int(ids[0])
    texts = stops_lib.token_texts(TokenText(tokenizer), vocab_size)
    if any(separator in text for v, text in enumerate(texts) if v != sep):
        return None
    return sep


def cut_after(text: str, separator: str) -> str:
    """`text` up to the end of the first `separator` in it (all of it when there is none)."""
    i = text.find(separator)
    return text if i < 0 else text[:i + len(separator)]


class LMPolicy:
    """The `Policy` protocol over a causal LM (`rewardlab.models` params) and a tokenizer.

    A prompt text is encoded as [BOS] + encode(text) (as `sft.prompt_ids` does). Rows
    stop at EOS, and with `stop_at_step` at the end of a step: when `step_separator` is
    one character that is one token and no other token contains it (the character
    tokenizer's "\\n"), by stopping on that token; otherwise (a separator of several
    tokens such as "\\n\\n" for a BPE tokenizer, or one that merges with its neighbours
    into other tokens) by the stop string `step_separator` (`rewardlab.sampling.stops`),
    and the completion's text is cut after the first separator (a token such as
    "\\n\\nThe" that runs past it leaves "The" out; `num_tokens` still counts it).

    Each prompt of a call is prefilled once and its n samples are drawn from that cache
    (`generate(num_samples=n)`); the prompt list is padded (by repeating the last prompt)
    to a power of two, at least `min_rows / n`, so that calls share compiled shapes (one
    set per n). Sample s of prompt p is sampler row p * n + s, as when every sample was its
    own row, so the draws do not depend on the sharing. `prefill_tokens` counts the
    prompt tokens the sampler prefilled (padding prompts included). `max_new_tokens` is
    rounded up to a multiple of 16 for generation and the output cut back. It is also
    limited to the room left in the model's context
    (`max_position_embeddings` minus the prompt width rounded up to 16, as `generate`
    requires); a completion cut by the context is `finished`. Token ids past the
    tokenizer's vocabulary (the model's vocabulary padding) decode to nothing.

    `guides`: GenARM token-level reward models, `(config, params)` pairs sharing the
    tokenizer; sampling then uses `rewardlab.sampling.guided.guided_generate` with
    weights `alphas` (which stops on tokens only: a separator that needs a stop string
    cannot end guided steps).

    `mesh`: sample on this device mesh, the prompts sharded over its data axes
    (`generate(mesh=...)`; the params placed by the logical rules, e.g.
    `sft.load_policy(dir, mesh=mesh)`); the completions equal the unsharded ones.
    """

    def __init__(self, config, params, tokenizer, *, step_separator: str = "\n", top_k: int = 0,
                 top_p: float = 1.0, guides: Sequence = (), alphas: Sequence[float] = (),
                 min_rows: int = 8, mesh=None):
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.mesh = mesh
        self.min_rows = int(min_rows)
        if not isinstance(step_separator, str) or not step_separator:
            raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
        self.step_separator = step_separator
        self.separator_id = separator_token(tokenizer, step_separator, config.vocab_size)
        self._token_text = TokenText(tokenizer)
        self.top_k, self.top_p = int(top_k), float(top_p)
        self.guides, self.alphas = tuple(guides), tuple(float(a) for a in alphas)
        if len(self.guides) != len(self.alphas):
            raise ValueError(f"got {len(self.guides)} guide models but {len(self.alphas)} alphas")
        self.prefill_tokens = 0

    def with_guides(self, guides: Sequence, alphas: Sequence[float]) -> "LMPolicy":
        """The same policy decoding with GenARM guidance by `guides` weighted by `alphas`."""
        return LMPolicy(self.config, self.params, self.tokenizer, step_separator=self.step_separator,
                        top_k=self.top_k, top_p=self.top_p, guides=guides, alphas=alphas,
                        min_rows=self.min_rows, mesh=self.mesh)

    def _decode(self, ids: list[int], finished: bool, cut: str | None) -> Completion:
        ids = [i if i < self.tokenizer.vocab_size else self.tokenizer.pad_id for i in ids]
        text = self.tokenizer.decode(ids)
        if cut is not None:
            text = cut_after(text, cut)
        ends, last = [], 0
        for i in range(len(ids)):  # offsets from decoded prefixes, clamped to stay monotone
            last = min(max(last, len(self.tokenizer.decode(ids[:i + 1]))), len(text))
            ends.append(last)
        return Completion(text, len(ids), finished, tuple(ends))

    def sample(self, prompts: list[str], n: int, *, max_new_tokens: int, temperature: float,
               stop_at_step: bool, rng: np.random.Generator) -> list[list[Completion]]:
        if not prompts:
            return []
        encoded = [self.tokenizer.encode(p, add_bos=True) for p in prompts]
        # Prompts padded to a power of two (at least min_rows / n) by repeating the last one:
        # few compiled shapes. Rows p * n + s are the real samples, padding rows come after.
        num_prompts = max(_bucket(len(encoded)), -(-self.min_rows // n))
        padded = encoded + [encoded[-1]] * (num_prompts - len(encoded))
        width = -(-max(len(p) for p in encoded) // 16) * 16
        room = self.config.max_position_embeddings - width
        new = min(int(max_new_tokens), room)
        if new < 1:
            return [[Completion("", 0, True, ())] * n for _ in prompts]
        eos = self.tokenizer.eos_id
        by_string = stop_at_step and self.separator_id is None
        if by_string and self.guides:
            raise ValueError(f"guided decoding stops on tokens only; step separator "
                             f"{self.step_separator!r} needs a stop string")
        # Generate up to a multiple of 16 and cut: a row's tokens do not depend on the limit,
        # and callers asking for many different limits (QAlign suffixes) compile few shapes.
        kwargs = dict(max_new_tokens=min(-(-new // 16) * 16, room), temperature=float(temperature),
                      top_k=self.top_k, top_p=self.top_p, num_samples=n,
                      stop_tokens=(eos, self.separator_id if stop_at_step and not by_string
                                   else eos),
                      rng=jax.random.key(int(rng.integers(2**31 - 1))), pad_id=self.tokenizer.pad_id,
                      mesh=self.mesh)
        if by_string:
            kwargs.update(stop_strings=(self.step_separator,), decode_fn=self._token_text)
        self.prefill_tokens += sum(len(p) for p in padded)
        if self.guides:
            out = guided_generate(self.config, self.params, self.guides, self.alphas, padded,
                                  **kwargs)
        else:
            out = generate(self.config, self.params, padded, **kwargs)
        generated = out.completions()
        cut = self.step_separator if by_string else None
        completions = []
        for p in range(len(prompts)):
            row = []
            for ids in generated[p * n:(p + 1) * n]:
                ids = ids[:new]
                stopped = bool(ids) and ids[-1] == eos
                cut_by_context = new < max_new_tokens and len(ids) == new
                row.append(self._decode(ids, stopped or cut_by_context, cut))
            completions.append(row)
        return completions
