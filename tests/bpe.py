"""Tiny byte-level BPE tokenizers saved as local transformers directories (test helper).

Specials are trained first, so their ids are ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2.
``adds_bos=True`` gives the tokenizer a post-processor that prepends ``<s>`` (as Llama's
does); ``adds_bos=False`` names ``<s>`` as bos but never prepends it (as GPT-2, SmolLM2
and Qwen2 do).
"""


def save_bpe(path, texts, *, chat_template=None, pad=True, added=(), adds_bos=True):
  """Train a BPE of 300 ids on ``texts``, save it to ``path`` and return the
  ``PreTrainedTokenizerFast``. ``added``: extra tokens (not normalized)."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
  from tokenizers import trainers
  from transformers import PreTrainedTokenizerFast

  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  bpe.train_from_iterator(texts, trainer=trainer)
  if adds_bos:
    bos = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
  specials = dict(bos_token="<s>", eos_token="</s>") | (dict(pad_token="<pad>") if pad else {})
  fast = PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)
  if added:
    fast.add_tokens([AddedToken(t, normalized=False) for t in added])
  if chat_template is not None:
    fast.chat_template = chat_template
  fast.save_pretrained(path)
  return fast
