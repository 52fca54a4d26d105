"""The sampler: greedy equals transformers, log-probs equal a separate forward, truncation
draws from the right distribution (chi-square), stops end rows at the right token, the loop
exits early, randomness is reproducible and per row, and a mesh changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import rewardlab
from rewardlab import models, sharding
from rewardlab.sampling import SamplingParams, filter_logits, generate
from rewardlab.sampling import stops as stops_lib
from rewardlab.sampling.generate import segment_ends

from hf_models import make_model, save_model

pytestmark = pytest.mark.torch  # transformers models are the reference and the fixture

PROMPTS = [[1, 5, 7], [1, 9, 9, 40, 41, 42, 43, 9, 2, 17, 3], [3, 60, 61, 62, 8, 11, 90]]
MAX_NEW = 12
NUM_SAMPLES = 3


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
  model = make_model("llama", seed=3)
  config, params = rewardlab.load_pretrained(save_model(model, tmp_path_factory.mktemp("llama")))
  return model, config, params


@pytest.fixture(scope="module")
def sampled(hf_llama):
  """One temperature-1 draw without stops: the reference that later tests cut down."""
  _, config, params = hf_llama
  return generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                  num_samples=NUM_SAMPLES, rng=jax.random.key(7))


def _hf_greedy(model, prompt):
  ids = torch.tensor([prompt], dtype=torch.long)
  with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
  return out[0, len(prompt):].tolist()


# ------------------------------------------------------------------ against references


@pytest.mark.parametrize("variant", ["llama", "qwen2"])
def test_greedy_matches_transformers(variant, hf_llama, tmp_path):
  if variant == "llama":
    model, config, params = hf_llama
  else:
    model = make_model(variant, seed=3)
    config, params = rewardlab.load_pretrained(save_model(model, tmp_path / variant))
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=0.0)
  assert out.tokens.shape == (len(PROMPTS), MAX_NEW)
  for i, prompt in enumerate(PROMPTS):  # transformers per prompt, without padding
    assert out.tokens[i].tolist() == _hf_greedy(model, prompt), f"{variant} prompt {i}"
  assert (out.lengths == MAX_NEW).all() and not out.stopped.any()


def test_logprobs_equal_separate_forward_and_samples_are_adjacent(hf_llama, sampled):
  _, config, params = hf_llama
  out = sampled
  assert out.tokens.shape == (len(PROMPTS) * NUM_SAMPLES, MAX_NEW)
  # One right-padded forward over every prompt + completion; samples of one prompt are
  # adjacent, so row r continues prompt r // NUM_SAMPLES.
  rows = [PROMPTS[r // NUM_SAMPLES] + out.tokens[r].tolist() for r in range(len(out.tokens))]
  width = max(map(len, rows))
  full = np.array([row + [0] * (width - len(row)) for row in rows], np.int32)
  mask = np.array([[1] * len(row) + [0] * (width - len(row)) for row in rows], np.int32)
  logp = np.asarray(jax.nn.log_softmax(models.logits(config, params, full,
                                                     attention_mask=mask), axis=-1))
  for r in range(len(rows)):
    start = len(PROMPTS[r // NUM_SAMPLES]) - 1
    expected = logp[r, start + np.arange(MAX_NEW), out.tokens[r]]
    np.testing.assert_allclose(out.logprobs[r], expected, atol=1e-4, err_msg=f"row {r}")
  # Samples of one prompt differ from each other (they are not copies of one draw).
  assert len({tuple(r) for r in out.tokens[:NUM_SAMPLES].tolist()}) == NUM_SAMPLES


def test_same_rng_same_output_and_other_rng_differs(hf_llama, sampled):
  _, config, params = hf_llama
  again = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                   num_samples=NUM_SAMPLES, rng=jax.random.key(7))
  np.testing.assert_array_equal(again.tokens, sampled.tokens)
  np.testing.assert_array_equal(again.logprobs, sampled.logprobs)
  other = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                   num_samples=NUM_SAMPLES, rng=jax.random.key(8))
  assert (other.tokens != sampled.tokens).mean() > 0.5


# ------------------------------------------------------------------ stops


def _first_index(row, stops):
  hits = [t for t, tok in enumerate(row) if tok in stops]
  return hits[0] if hits else None


def test_per_row_stop_tokens_end_rows_at_the_first_stop(hf_llama, sampled):
  _, config, params = hf_llama
  # Prompt i stops on the token its sample 0 drew at step 4 (so every prompt has a hit).
  stops = [[int(sampled.tokens[i * NUM_SAMPLES, 4])] for i in range(len(PROMPTS))]
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                 num_samples=NUM_SAMPLES, rng=jax.random.key(7), stop_tokens=stops)
  for row, ref in enumerate(sampled.tokens.tolist()):
    first = _first_index(ref, stops[row // NUM_SAMPLES])
    n = MAX_NEW if first is None else first + 1
    assert out.lengths[row] == n and out.stopped[row] == (first is not None), f"row {row}"
    assert out.tokens[row, :n].tolist() == ref[:n]  # a prefix of the run without stops
    assert (out.tokens[row, n:] == 0).all() and (out.logprobs[row, n:] == 0).all()
    np.testing.assert_array_equal(out.logprobs[row, :n], sampled.logprobs[row, :n])
  assert out.stopped.sum() >= len(PROMPTS)


def test_loop_exits_once_every_row_has_stopped(hf_llama):
  _, config, params = hf_llama
  full = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=0.0)
  assert full.num_steps == MAX_NEW
  # Each prompt stops on its own first greedy token: one position, then the loop ends.
  stops = [[int(t)] for t in full.tokens[:, 0]]
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=0.0,
                 stop_tokens=stops)
  assert out.num_steps == 1
  assert (out.lengths == 1).all() and out.stopped.all()
  # One row that never stops keeps the loop running to the end.
  stops[1] = []
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=0.0,
                 stop_tokens=stops)
  assert out.num_steps == MAX_NEW and out.lengths.tolist() == [1, MAX_NEW, 1]


# Token texts for the stop-string tests: newlines at the start, middle and end of tokens.
_PIECES = ["\n", "ab", "q", "c\n", "\nd", "", "b", "x\n\ny"]


def _decode(ids):
  return "".join(_PIECES[i % len(_PIECES)] for i in ids)


STOP_STRINGS = [["\n\n"], ["b\nd", "\n\n"], ["ab\nd", "b\n"]]


def test_stop_strings_end_rows_at_the_token_that_completes_them(hf_llama, sampled):
  _, config, params = hf_llama
  # cache_chunk=5: the cache grows in three segments; the output must not change.
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                 num_samples=NUM_SAMPLES, rng=jax.random.key(7), stop_strings=STOP_STRINGS,
                 decode_fn=_decode, cache_chunk=5)
  spanning = 0
  for row, ref in enumerate(sampled.tokens.tolist()):
    strings = STOP_STRINGS[row // NUM_SAMPLES]
    first = stops_lib.first_stop([_decode([t]) for t in ref], strings)
    n = MAX_NEW if first is None else first + 1
    assert out.lengths[row] == n and out.stopped[row] == (first is not None), f"row {row}"
    assert out.tokens[row, :n].tolist() == ref[:n]
    np.testing.assert_allclose(out.logprobs[row, :n], sampled.logprobs[row, :n], atol=1e-5)
    if first is not None and not any(s in _decode([ref[first]]) for s in strings):
      spanning += 1  # the stop string crosses a token boundary
  assert out.stopped.sum() >= 3 and spanning >= 1, "test data must exercise stop strings"
  assert out.num_steps == out.lengths.max()


@pytest.mark.parametrize("seed", range(3))
def test_stop_string_automaton_equals_brute_force(seed):
  rng = np.random.default_rng(seed)
  texts = [_decode([v]) for v in range(len(_PIECES))]
  strings = ["\n\n", "b\nd", "ab\nab", "\n"]
  table = stops_lib.transition_table(strings, texts)
  for _ in range(200):
    seq = rng.integers(0, len(texts), size=12)
    for j, s in enumerate(strings):
      state, hit = 0, None
      for t, v in enumerate(seq):
        state = table[j, v, state]
        if state == stops_lib.MATCHED:
          hit = t
          break
      assert hit == stops_lib.first_stop([texts[v] for v in seq], [s]), (s, seq)


def test_stop_string_states_by_hand():
  assert stops_lib.next_state("\n\n", 0, "a\n") == 1
  assert stops_lib.next_state("\n\n", 1, "\nb") == stops_lib.MATCHED
  assert stops_lib.next_state("\n\n", 1, "b") == 0
  assert stops_lib.next_state("abab", 3, "b") == stops_lib.MATCHED
  assert stops_lib.next_state("abab", 3, "a") == 1  # "abaa" ends with "a"
  assert stops_lib.next_state("abab", 2, "ab") == stops_lib.MATCHED
  assert stops_lib.next_state("aab", 2, "a") == 2  # "aaa" ends with "aa"


def test_cache_segments():
  assert segment_ends(12, None) == (12,)
  assert segment_ends(12, 12) == (12,) == segment_ends(12, 40)
  assert segment_ends(12, 5) == (5, 10, 12)
  assert segment_ends(10, 5) == (5, 10)


def test_bad_arguments_raise(hf_llama):
  _, config, params = hf_llama
  kw = dict(max_new_tokens=4, temperature=0.0)
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    generate(config, params, [[1], []], **kw)
  with pytest.raises(ValueError, match="decode_fn"):
    generate(config, params, PROMPTS, stop_strings=["\n"], **kw)
  with pytest.raises(ValueError, match="stop_tokens has 2 entries"):
    generate(config, params, PROMPTS, stop_tokens=[[1], [2]], **kw)
  with pytest.raises(ValueError, match="outside"):
    generate(config, params, PROMPTS, stop_tokens=[config.vocab_size], **kw)
  with pytest.raises(ValueError, match="rng"):
    generate(config, params, PROMPTS, max_new_tokens=4, temperature=1.0)
  with pytest.raises(ValueError, match="top_p"):
    generate(config, params, PROMPTS, max_new_tokens=4, temperature=1.0, top_p=0.0,
             rng=jax.random.key(0))
  with pytest.raises(ValueError, match="cache_chunk"):
    generate(config, params, PROMPTS, cache_chunk=0, **kw)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    generate(config, params, PROMPTS, max_new_tokens=config.max_position_embeddings,
             temperature=0.0)


# ------------------------------------------------------------------ mesh


def test_mesh_sharded_generation_equals_unsharded(hf_llama, sampled, tmp_path):
  model, _, _ = hf_llama
  mesh = sharding.make_mesh((4, 1, 2))  # batch over 4 devices, weights over 2
  config, params = rewardlab.load_pretrained(save_model(model, tmp_path / "m"), mesh=mesh)
  out = generate(config, params, PROMPTS, max_new_tokens=MAX_NEW, temperature=1.0,
                 num_samples=NUM_SAMPLES, rng=jax.random.key(7), mesh=mesh)
  np.testing.assert_array_equal(out.tokens, sampled.tokens)
  np.testing.assert_allclose(out.logprobs, sampled.logprobs, atol=1e-5)


# ------------------------------------------------------------------ truncation (chi-square)

PROBS = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.03, 0.02])
# chi-square critical values at significance 0.001 for 1..7 degrees of freedom.
CHI2_CRIT = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def _truncated(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
  """The reference: the truncated, renormalized distribution, step by step in numpy."""
  p = PROBS ** (1.0 / temperature)
  p = p / p.sum()
  order = np.argsort(-p, kind="stable")
  keep = np.ones_like(p, bool)
  if top_k:
    keep[order[top_k:]] = False
  if top_p < 1.0:
    q = np.where(keep, p, 0.0) / p[keep].sum()
    mass_before = np.cumsum(q[order]) - q[order]
    keep[order[mass_before >= top_p]] = False
  if min_p:
    keep &= p >= min_p * p.max()
  q = np.where(keep, p, 0.0)
  return q / q.sum()


def _chi2(counts, expected_probs):
  kept = expected_probs > 0
  expected = counts.sum() * expected_probs[kept]
  return float(((counts[kept] - expected) ** 2 / expected).sum()), int(kept.sum()) - 1


CASES = [dict(top_k=3), dict(top_p=0.6), dict(min_p=0.3), dict(top_k=4, top_p=0.7),
         dict(temperature=2.0, top_k=5), dict(temperature=0.5, min_p=0.1, top_p=0.9)]
# For each case a wrong truncation the test must reject (one token more or fewer, or top-p
# measured before top-k's renormalization).
WRONG = [dict(top_k=4), dict(top_p=0.45), dict(min_p=0.5), dict(top_k=4, top_p=0.85),
         dict(temperature=2.0, top_k=4), dict(temperature=0.5, min_p=0.1)]


@pytest.mark.parametrize("case,wrong", list(zip(CASES, WRONG)), ids=[str(c) for c in CASES])
def test_filtered_draws_follow_the_truncated_distribution(case, wrong):
  num = 20000
  params = SamplingParams(**{"temperature": 1.0, **case})
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(PROBS, jnp.float32)), (num, len(PROBS)))
  draws = jax.random.categorical(jax.random.key(0), filter_logits(logits, params), axis=-1)
  counts = np.bincount(np.asarray(draws), minlength=len(PROBS))
  expected = _truncated(**case)
  assert not np.allclose(expected, _truncated(**wrong)), "the wrong case must differ"
  assert (counts[expected == 0] == 0).all(), f"removed tokens drawn: {counts}"
  stat, dof = _chi2(counts, expected)
  assert stat < CHI2_CRIT[dof], f"{case}: chi2 {stat:.1f} >= {CHI2_CRIT[dof]} ({counts})"
  # Power: the same draws reject the wrong truncation.
  wrong_probs = _truncated(**wrong)
  drawn_outside = (counts[wrong_probs == 0] > 0).any()
  wrong_stat, wrong_dof = _chi2(counts, wrong_probs)
  assert drawn_outside or wrong_stat > CHI2_CRIT[wrong_dof]


def _fixed_distribution_model(probs):
  """Params whose next-token logits are log(probs) whatever the context.

  Every token embeds to the same vector 10 e_0; attention and MLP outputs are zeroed, so
  the final RMSNorm sees 10 e_0 and returns sqrt(D) e_0; lm_head row 0 maps it to log p.
  """
  config = models.tiny_config(vocab_size=len(probs), hidden_size=16, num_layers=1,
                              num_heads=2, num_kv_heads=1, intermediate_size=16)
  params = jax.tree.map(np.array, models.init_params(config, jax.random.key(0)))
  d = config.hidden_size
  params["embed_tokens"] = np.zeros_like(params["embed_tokens"])
  params["embed_tokens"][:, 0] = 10.0
  params["layers_0"]["self_attn"]["o_proj"][:] = 0.0
  params["layers_0"]["mlp"]["down_proj"][:] = 0.0
  params["norm"]["scale"][:] = 1.0
  params["lm_head"] = np.zeros_like(params["lm_head"])
  params["lm_head"][0] = np.log(probs) / np.sqrt(d)
  return config, jax.tree.map(jnp.asarray, params)


def test_generate_draws_follow_the_truncated_distribution():
  config, params = _fixed_distribution_model(PROBS)
  case = dict(top_k=4, top_p=0.7)
  out = generate(config, params, [[1]], max_new_tokens=8, temperature=1.0, num_samples=512,
                 rng=jax.random.key(3), **case)
  counts = np.bincount(out.tokens.ravel(), minlength=len(PROBS))
  expected = _truncated(**case)
  assert (counts[expected == 0] == 0).all(), f"removed tokens drawn: {counts}"
  stat, dof = _chi2(counts, expected)
  assert stat < CHI2_CRIT[dof], f"chi2 {stat:.1f} ({counts})"
  wrong = _truncated(top_k=4)  # top-p ignored
  assert (counts[wrong > 0] == 0).any() or _chi2(counts, wrong)[0] > CHI2_CRIT[3]
  # Log-probs are the model's: untempered, untruncated.
  np.testing.assert_allclose(out.logprobs, np.log(PROBS)[out.tokens], atol=1e-5)
