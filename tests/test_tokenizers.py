"""Char tokenizer and local Hugging Face tokenizers behind the Tokenizer protocol."""
import json

import numpy as np
import pytest

from rewardlab.data import tokenizers as tk
from rewardlab.tasks import arithmetic as ar

from bpe import save_bpe

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
TRAIN_TEXT = ["the quick brown fox jumps over the lazy dog", "37+45=82\n82*3=246\nA:246",
              "reward models score solutions step by step"] * 10


# ----------------------------------------------------------------------------- char tokenizer


def test_char_tokenizer_ids_follow_the_alphabet():
  tok = tk.CharTokenizer("ab\n")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 6)
  assert tok.encode("ba\n") == [4, 3, 5]
  assert tok.encode("ab", add_bos=True) == [1, 3, 4]
  assert tok.decode([1, 3, 4, 2, 0, 0]) == "ab"
  assert tok.decode([1, 3, 4, 2, 0], skip_special=False) == "<bos>ab<eos><pad>"
  assert tok.decode([3, 2, 4]) == "ab"  # decode does not stop at eos
  assert tok.decode(np.array([3, 4], np.int32)) == "ab"
  assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "a", "\n")] == [0, 1, 2, 3, 5]
  assert isinstance(tok, tk.Tokenizer)
  assert not tok.has_chat_template


def test_arithmetic_tokenizer_round_trips_every_problem():
  tok = tk.CharTokenizer.for_arithmetic()
  assert tok.vocab_size == 3 + len(ar.ALPHABET) == 21
  rng = np.random.default_rng(0)
  for problem in ar.generate_problems(300, seed=0):
    text = problem.prompt + problem.solution
    ids = tok.encode(text, add_bos=True)
    assert len(ids) == len(text) + 1 and min(ids[1:]) >= 3
    assert tok.decode(ids + [tok.eos_id]) == text
    bad, _ = ar.corrupt_solution(problem, rng)
    assert tok.decode(tok.encode(bad)) == bad


def test_char_tokenizer_errors_name_the_culprit():
  tok = tk.CharTokenizer.for_arithmetic()
  with pytest.raises(ValueError, match=r"'x' at position 3"):
    tok.encode("Q:1x")
  with pytest.raises(ValueError, match="position 1"):
    tok.decode([3, 99])
  with pytest.raises(KeyError, match="'x'"):
    tok.token_to_id("x")
  with pytest.raises(ValueError, match="duplicate"):
    tk.CharTokenizer("abca")
  with pytest.raises(ValueError, match="empty"):
    tk.CharTokenizer("")


def test_char_tokenizer_save_and_load(tmp_path):
  tok = tk.CharTokenizer.for_arithmetic()
  file = tok.save(tmp_path / "tok")
  assert file.endswith(tk.CHAR_TOKENIZER_FILE)
  assert json.loads(open(file).read())["alphabet"] == ar.ALPHABET
  for path in (tmp_path / "tok", file):
    loaded = tk.load_tokenizer(path)
    assert isinstance(loaded, tk.CharTokenizer) and loaded == tok
    assert loaded.encode("Q:1+2\n") == tok.encode("Q:1+2\n")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / tk.CHAR_TOKENIZER_FILE).write_text('{"type": "bpe"}')
  with pytest.raises(ValueError, match="not a char tokenizer"):
    tk.load_tokenizer(tmp_path / "bad")
  with pytest.raises(FileNotFoundError):
    tk.load_tokenizer(tmp_path / "missing")


def test_plain_chat_prompt_fallback():
  tok = tk.CharTokenizer.for_arithmetic()
  assert tok.chat_prompt([{"role": "user", "content": "Q:37+45\n"}]) == "Q:37+45\n"
  messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi\n"}]
  assert tk.plain_chat_prompt(messages) == "be brief\nhi\n"
  with pytest.raises(ValueError, match=r"messages\[1\]"):
    tok.chat_prompt([{"role": "user", "content": "Q:1\n"}, {"content": "no role"}])


# ----------------------------------------------------------------------------- HF tokenizers


def _save_bpe(path, *, chat_template=None, pad=True, texts=None, adds_bos=True):
  """A tiny byte-level BPE trained on `texts` (default TRAIN_TEXT), saved as a transformers
  tokenizer directory (`bpe.save_bpe`)."""
  return save_bpe(path, TRAIN_TEXT if texts is None else texts, chat_template=chat_template,
                  pad=pad, adds_bos=adds_bos)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf_tok")
  reference = _save_bpe(root / "chat", chat_template=CHAT_TEMPLATE)
  _save_bpe(root / "plain")
  _save_bpe(root / "nopad", pad=False)
  _save_bpe(root / "nobos", adds_bos=False)
  return root, reference


def test_hf_tokenizer_special_ids_and_round_trip(hf_dirs):
  root, reference = hf_dirs
  tok = tk.load_tokenizer(root / "plain")
  assert isinstance(tok, tk.HFTokenizer) and isinstance(tok, tk.Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)  # trainer order of the specials
  assert tok.vocab_size == len(reference) > 256
  for text in ["the quick brown fox", "37+45=82\n82*3=246\nA:246\n", "h\u00e9llo w\u00f6rld \u2713 ~"]:
    ids = tok.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    with_bos = tok.encode(text, add_bos=True)
    assert with_bos == [1] + ids
    assert tok.decode(with_bos + [tok.eos_id, tok.pad_id]) == text
    assert tok.decode(with_bos, skip_special=False) == "<s>" + text
  # A bos already in the text (e.g. from a chat template) is not doubled.
  assert tok.encode("<s>hi", add_bos=True) == tok.encode("<s>hi") == [1] + tok.encode("hi")
  assert tok.token_to_id("</s>") == 2
  assert tok.token_to_id("the") == reference.convert_tokens_to_ids("the")
  with pytest.raises(KeyError, match="not-a-token"):
    tok.token_to_id("not-a-token")


def test_one_bos_only_where_the_tokenizer_prepends_one(hf_dirs):
  """`encode(add_bos=True)` follows the tokenizer's own rule: a tokenizer that names a bos
  but never prepends it (GPT-2, SmolLM2) gets none on a plain prompt."""
  root, reference = hf_dirs
  llama_like, gpt2_like = tk.load_tokenizer(root / "plain"), tk.load_tokenizer(root / "nobos")
  text = "37+45=82\n"
  assert reference.encode(text)[0] == 1  # the tokenizer itself prepends <s>
  assert llama_like.adds_bos and llama_like.encode(text, add_bos=True) == reference.encode(text)
  plain = gpt2_like.encode(text)
  assert gpt2_like.bos_id == 1 and not gpt2_like.adds_bos
  assert gpt2_like.tokenizer.encode(text) == plain  # its own encoding has no bos
  assert gpt2_like.encode(text, add_bos=True) == plain
  assert gpt2_like.encode("<s>hi", add_bos=True) == [1] + gpt2_like.encode("hi")  # kept as written
  assert tk.CharTokenizer.for_arithmetic().encode("Q:1", add_bos=True)[0] == 1  # always a bos


def test_hf_tokenizer_chat_template(hf_dirs):
  root, _ = hf_dirs
  messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
  chat = tk.load_tokenizer(root / "chat")
  assert chat.has_chat_template
  assert chat.chat_prompt(messages) == "<|system|>be brief\n<|user|>2+2?\n<|assistant|>"
  assert chat.chat_prompt(messages, add_generation_prompt=False) == "<|system|>be brief\n<|user|>2+2?\n"
  plain = tk.load_tokenizer(root / "plain")
  assert not plain.has_chat_template
  assert plain.chat_prompt(messages) == "be brief\n2+2?\n"


def test_hf_tokenizer_pad_falls_back_to_eos(hf_dirs):
  root, _ = hf_dirs
  tok = tk.load_tokenizer(root / "nopad")
  assert tok.pad_id == tok.eos_id == 2


def test_decode_sampled_drops_ids_past_the_vocabulary():
  tok = tk.CharTokenizer.for_arithmetic()
  ids = tok.encode("12+3") + [tok.vocab_size, tok.vocab_size + 2] + tok.encode("=15")
  assert tk.decode_sampled(tok, ids) == "12+3=15"
  with pytest.raises(ValueError):
    tok.decode(ids)
