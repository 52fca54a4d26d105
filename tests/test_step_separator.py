"""Step separators of several tokens, and prompts prefilled once per call.

A tiny random Llama (transformers, saved and loaded) with a byte-level BPE trained here on
arithmetic text, where "\\n\\n" is two tokens and an added token "\\n\\nA" runs past the
separator. The model is nudged towards newline tokens so that steps end often. Checked:
LMPolicy ends a step exactly where the first "\\n\\n" is completed (brute force over the
same draw without stops), shares each prompt's prefill among its samples with the same
draws as one row per sample, and beam search, DVTS and Monte-Carlo / OmegaPRM labels run
on the separator.
"""
import jax
import numpy as np
import pytest
import torch

import rewardlab
from experiments.configs import sft as sft_config
from rewardlab import models
from rewardlab.data import tokenizers as tk
from rewardlab.sampling.generate import generate
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels, methods, omegaprm
from rewardlab.search.methods import Scorers
from rewardlab.search.policy import LMPolicy, TokenText, cut_after, separator_token
from rewardlab.tasks import ArithmeticTask, arithmetic
from rewardlab.train import sft

from bpe import save_bpe
from hf_models import make_model, save_model

pytestmark = pytest.mark.torch

SEP = "\n\n"
PROBLEMS = arithmetic.generate_problems(40, seed=5, num_ops=(2, 3))
TRAIN_TEXT = [p.prompt + p.solution for p in PROBLEMS]


def _save_bpe(path, added=()):
  save_bpe(path, TRAIN_TEXT, added=added)
  return tk.load_tokenizer(path)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
  """(config, params, tokenizer): a random Llama favouring "\\n" and "\\n\\nA"."""
  root = tmp_path_factory.mktemp("bpe_policy")
  tok = _save_bpe(root / "tok", added=("\n\nA",))
  newline, merged = tok.encode("\n")[0], tok.token_to_id("\n\nA")
  model = make_model("llama", seed=1, vocab_size=tok.vocab_size + 3)  # + vocabulary padding
  with torch.no_grad():  # a constant residual direction whose unembedding is the newlines
    model.model.embed_tokens.weight[:, 0] += 5.0
    model.lm_head.weight[newline, 0] = 2.0
    model.lm_head.weight[merged, 0] = 1.2
  config, params = rewardlab.load_pretrained(save_model(model, root / "model"))
  return config, params, tok


def _prompts(k):
  return [p.prompt for p in PROBLEMS[:k]]


def test_the_fast_path_needs_a_one_character_token_no_other_token_contains(bpe, tmp_path):
  config, _, tok = bpe
  char = tk.CharTokenizer.for_arithmetic()
  assert separator_token(char, "\n", char.vocab_size) == char.encode("\n")[0]
  plain = _save_bpe(tmp_path / "plain")
  assert len(plain.encode(SEP)) == 2  # "\n\n" is two tokens of this BPE
  assert separator_token(plain, "\n", plain.vocab_size) == plain.encode("\n")[0]
  assert separator_token(plain, SEP, plain.vocab_size) is None  # several tokens
  assert separator_token(tok, "\n", config.vocab_size) is None  # inside "\n\nA"
  assert LMPolicy(config, bpe[1], tok, step_separator=SEP).separator_id is None
  with pytest.raises(ValueError, match="non-empty"):
    LMPolicy(config, bpe[1], tok, step_separator="")


def test_steps_end_where_the_first_separator_is_completed(bpe):
  config, params, tok = bpe
  policy = LMPolicy(config, params, tok, step_separator=SEP)
  kw = dict(max_new_tokens=24, temperature=1.0)
  stopped = policy.sample(_prompts(4), 8, stop_at_step=True, rng=np.random.default_rng(3), **kw)
  # The same draw without step stops: a stopped row is a prefix of it (per-row randomness).
  full = policy.sample(_prompts(4), 8, stop_at_step=False, rng=np.random.default_rng(3), **kw)
  across = overshoot = 0
  for s, f in zip(sum(stopped, []), sum(full, [])):
    ends = [k for k in range(1, f.num_tokens + 1) if SEP in f.prefix(k)]
    if not ends:
      assert (s.text, s.num_tokens, s.finished) == (f.text, f.num_tokens, f.finished)
      continue
    k = ends[0]
    assert s.num_tokens == k and not s.finished
    assert s.text == cut_after(f.prefix(k), SEP) and s.text.endswith(SEP)
    assert s.text.count(SEP) == 1 and s.token_ends[-1] == len(s.text)
    across += f.prefix(k - 1).endswith("\n")           # "\n" + "\n"
    overshoot += f.prefix(k) != s.text                  # "\n\nA" cut after the separator
  assert across >= 2 and overshoot >= 2, (across, overshoot)


def _one_row_per_sample(policy, prompts, n, key, stop_at_step, max_new_tokens):
  """The sampler call as made before prompts were shared: every sample its own row."""
  encoded = [policy.tokenizer.encode(p, add_bos=True) for p in prompts]
  rows = [ids for ids in encoded for _ in range(n)]
  rows += [rows[-1]] * (max(policy.min_rows, 1 << (len(rows) - 1).bit_length()) - len(rows))
  by_string = stop_at_step and policy.separator_id is None
  eos = policy.tokenizer.eos_id
  out = generate(policy.config, policy.params, rows, max_new_tokens=max_new_tokens,
                 temperature=1.0, rng=key, pad_id=policy.tokenizer.pad_id,
                 stop_tokens=(eos, policy.separator_id if stop_at_step and not by_string else eos),
                 stop_strings=(policy.step_separator,) if by_string else (),
                 decode_fn=TokenText(policy.tokenizer))
  return out.completions()[:len(prompts) * n], sum(len(r) for r in rows)


@pytest.mark.parametrize("setting", ["char", "bpe"])
def test_shared_prefill_gives_the_draws_of_one_row_per_sample(bpe, setting):
  if setting == "char":  # the synthetic task's policy: one-token separator, stop tokens
    tok = tk.CharTokenizer.for_arithmetic()
    config = sft.model_config(sft_config.tiny(), tok)
    policy = LMPolicy(config, models.init_params(config, jax.random.key(0)), tok)
    assert policy.separator_id is not None
  else:
    policy = LMPolicy(*bpe, step_separator=SEP)
  tok, n, prompts = policy.tokenizer, 4, _prompts(3)
  out = policy.sample(prompts, n, max_new_tokens=16, temperature=1.0, stop_at_step=True,
                      rng=np.random.default_rng(11))
  key = jax.random.key(int(np.random.default_rng(11).integers(2**31 - 1)))
  rows, unshared = _one_row_per_sample(policy, prompts, n, key, True, 16)
  cut = (lambda t: cut_after(t, SEP)) if setting == "bpe" else (lambda t: t)
  assert [(c.text, c.num_tokens) for c in sum(out, [])] == [
      (cut(tk.decode_sampled(tok, ids)), len(ids)) for ids in rows]
  assert len({c.text for c in sum(out, [])}) > n  # not one text repeated
  # 3 prompts padded to 4 are prefilled once, instead of 12 rows padded to 16.
  lengths = [len(tok.encode(p, add_bos=True)) for p in prompts]
  assert policy.prefill_tokens == sum(lengths) + lengths[-1]
  assert unshared == n * policy.prefill_tokens


class _RecordingPRM:
  """Scores each step by its length; records every step list it was shown."""

  def __init__(self):
    self.tokens_scored, self.seen = 0, []

  def score_steps(self, prompts, steps_lists):
    self.seen += steps_lists
    self.tokens_scored += sum(len(s) for steps in steps_lists for s in steps)
    return [np.asarray([1.0 / (1.0 + len(s)) for s in steps]) for steps in steps_lists]


class _RecordingPolicy:
  def __init__(self, inner):
    self.inner, self.step_separator, self.steps = inner, inner.step_separator, []

  def sample(self, prompts, n, **kw):
    out = self.inner.sample(prompts, n, **kw)
    if kw["stop_at_step"]:
      self.steps += [(c, kw["max_new_tokens"]) for row in out for c in row]
    return out


@pytest.mark.parametrize("method", ["beam_search", "dvts"])
def test_tree_search_steps_on_a_multi_token_separator(bpe, method):
  policy = _RecordingPolicy(LMPolicy(*bpe, step_separator=SEP))
  prm = _RecordingPRM()
  result = methods.run_method(method, PROBLEMS[0].prompt, policy=policy,
                              scorers=Scorers(process=prm), task=ArithmeticTask(), n=8, width=4,
                              rng=np.random.default_rng(0), step_tokens=16, max_new_tokens=16,
                              max_steps=2)
  assert result.extra["texts"] and result.budget.policy_calls == 2
  ended = 0
  for c, limit in policy.steps:  # a step ends at its separator, at EOS or at the token limit
    assert c.finished or c.text.endswith(SEP) or c.num_tokens == limit, c
    assert c.text.count(SEP) <= 1 and (SEP not in c.text or c.text.endswith(SEP))
    ended += c.text.endswith(SEP)
  assert ended >= 2
  steps = [s for seen in prm.seen for s in seen]
  assert steps and all(SEP not in s and s.strip() for s in steps)
  assert any("\n" in s for s in steps)  # split on "\n\n", not on every line break
  for text in result.extra["texts"]:  # every beam is a concatenation of whole steps
    pieces = text.split(SEP)
    assert all(SEP not in p for p in pieces)


def test_mc_and_omegaprm_labels_with_a_multi_token_separator_equal_the_line_labels():
  """The scripted completer draws the same numbers whatever the separator, so labels of
  "\\n\\n"-separated solutions equal those of "\\n"-separated ones, step for step."""
  problems = arithmetic.generate_problems(6, seed=9, num_ops=(3,))
  config = omegaprm.OmegaPRMConfig(rollouts_per_state=4, max_searches=4, rollout_budget=32)
  out = {}
  for sep in ("\n", SEP):
    completer = completer_lib.ScriptedCompleter((0.2, 0.3, 0.3), separator=sep)
    rng = np.random.default_rng(1)
    texts = completer.complete([p.prompt for p in problems], 4, rng)
    solutions = [[completer_lib.solution_steps(p.prompt + t, sep) for t in ts]
                 for p, ts in zip(problems, texts)]
    mc = mc_labels.label_solutions(problems, solutions, completer, num_completions=4, rng=rng,
                                   separator=sep)
    roots = [[completer_lib.prefix_text(p, s, sep)[len(p.prompt):] for s in sols]
             for p, sols in zip(problems, solutions)]
    trees = omegaprm.run_search(problems, completer, config, rng=rng, root_rollouts=roots,
                                separator=sep)
    asked = [prefix for prefix in completer.calls if prefix not in [p.prompt for p in problems]]
    assert asked and all(prefix.endswith(sep) for prefix in asked)
    out[sep] = (solutions, [[(l.steps, l.labels, l.outcomes) for l in ls] for ls in mc],
                [[tree.labels_for(s).labels for s in sols] for tree, sols in zip(trees, solutions)],
                [len(tree.nodes) for tree in trees])
  assert out["\n"] == out[SEP]
  assert any(0 < y < 1 for ls in out[SEP][1] for _, labels, _ in ls for y in labels)


def test_lm_completer_labels_with_a_bpe_separator_and_counts_prefill(bpe):
  config, params, tok = bpe
  lm = completer_lib.LMCompleter(config, params, tok, max_new_tokens=16, batch_size=4)
  problems = PROBLEMS[:1]
  solutions = [[list(p.steps) + [f"A:{p.answer}"]] for p in problems]  # the right solutions
  labels = mc_labels.label_solutions(problems, solutions, lm, num_completions=3,
                                     rng=np.random.default_rng(0), separator=SEP)
  prefixes = [completer_lib.prefix_text(p, s[0][:k + 1], SEP) for p, s in zip(problems, solutions)
              for k in range(len(s[0]) - 1)]
  assert all(len(l.outcomes[k]) == 3 for ls in labels for l in ls for k in range(len(l.steps) - 1))
  assert [l.labels[-1] for ls in labels for l in ls] == [1.0]  # the right answer line
  # Each prefix is prefilled once for its 3 samples (padding rows included in both counts).
  assert lm.unshared_prefill_tokens == 3 * lm.prefill_tokens
  assert lm.prefill_tokens >= sum(len(tok.encode(p)) + 1 for p in prefixes)


def test_qalign_step_starts_follow_a_separator_of_several_tokens():
  from rewardlab.search.policy import Completion
  from rewardlab.search.qalign import resample_starts
  # tokens: a b \n \n c d \n\n e f  (the first separator is two tokens, the second one)
  y = Completion("ab\n\ncd\n\nef", 9, True, (1, 2, 3, 4, 5, 6, 8, 9, 10))
  assert resample_starts(y, "step", SEP) == [0, 4, 7]
  assert resample_starts(y, "step", "\n") == [0, 3, 4, 7]
