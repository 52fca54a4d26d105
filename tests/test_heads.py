"""Reward heads and reward models: hand-computed heads, sharding, scorers, save/load."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rewardlab import models, sharding
from rewardlab.data import encode
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.models import heads, reward

TOK = CharTokenizer.for_arithmetic()
BACKBONE = models.tiny_config(vocab_size=24, hidden_size=32, num_layers=1, intermediate_size=64,
                              bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _hidden(b=2, t=5, d=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, d)), jnp.float32)


# ----------------------------------------------------------------------------- heads


def test_outcome_and_attribute_heads_read_the_score_index():
  hidden = _hidden()
  w = jnp.asarray([[1.0], [2.0], [0.0], [-1.0]])
  idx = jnp.asarray([4, 1])
  out = heads.outcome_head({"kernel": w}, hidden, idx)
  expected = [hidden[0, 4] @ w[:, 0], hidden[1, 1] @ w[:, 0]]
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  kernel = jnp.arange(12.0).reshape(4, 3)
  bias = jnp.asarray([0.5, -1.0, 2.0])
  attrs = heads.attribute_head({"kernel": kernel, "bias": bias}, hidden, idx)
  np.testing.assert_allclose(attrs[1], hidden[1, 1] @ kernel + bias, rtol=1e-5)
  np.testing.assert_allclose(heads.weighted_attributes(attrs, [1.0, 0.0, 2.0]),
                             attrs[:, 0] + 2 * attrs[:, 2], rtol=1e-6)


def test_step_heads_read_every_step_position():
  hidden = _hidden(t=6)
  positions = jnp.asarray([[1, 3, 5], [0, 2, 0]])
  params = {"kernel": jnp.asarray([[1.0], [0.0], [1.0], [0.0]]), "bias": jnp.asarray([0.25])}
  logits = heads.step_classifier_head(params, hidden, positions)
  for b in range(2):
    for s in range(3):
      h = hidden[b, positions[b, s]]
      np.testing.assert_allclose(logits[b, s], h[0] + h[2] + 0.25, rtol=1e-5)
  # LM-token form: σ(z+ - z-) equals softmax over the two designated tokens.
  unembed_matrix = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7)), jnp.float32)
  unembed = lambda h: h @ unembed_matrix
  z = heads.step_lm_token_head(unembed, hidden, positions, plus_id=3, minus_id=5)
  full = unembed(hidden)
  for b in range(2):
    for s in range(3):
      pair = full[b, positions[b, s], jnp.asarray([3, 5])]
      np.testing.assert_allclose(jax.nn.sigmoid(z[b, s]), jax.nn.softmax(pair)[0], rtol=1e-5)


def test_value_head_is_per_token():
  hidden = _hidden()
  params = {"kernel": jnp.ones((4, 1)), "bias": jnp.asarray([1.0])}
  np.testing.assert_allclose(heads.value_head(params, hidden), hidden.sum(-1) + 1.0, rtol=1e-5)


def test_token_logprobs_and_genarm_reward_by_brute_force():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 6, 5)) * 3, jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 5, size=(2, 6)), jnp.int32)
  logps = heads.token_logprobs(logits, tokens)
  for b in range(2):
    assert logps[b, 0] == 0.0
    for t in range(1, 6):
      expected = np.log(np.exp(logits[b, t - 1]) / np.exp(logits[b, t - 1]).sum())[tokens[b, t]]
      np.testing.assert_allclose(logps[b, t], expected, rtol=1e-5, atol=1e-6)
  mask = jnp.asarray([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
  prompt_length = jnp.asarray([2, 4])
  response = heads.response_mask(mask, prompt_length)
  np.testing.assert_array_equal(response, [[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1]])
  r = heads.genarm_head(logits, tokens, mask, prompt_length, beta=0.5)
  np.testing.assert_allclose(r, [0.5 * logps[0, 2:5].sum(), 0.5 * logps[1, 4:].sum()], rtol=1e-5)


def test_head_params_carry_logical_axes_and_shard_like_the_backbone():
  boxed = heads.init_linear_head(jax.random.key(0), 64, 5)
  assert sharding.logical_axes_of(boxed) == {"kernel": ("embed", "attributes"),
                                              "bias": ("attributes",)}
  mesh = sharding.make_mesh((2, 4, 1))
  config = reward.RewardModelConfig(backbone=BACKBONE, head="attributes")
  params = reward.init_reward_model(config, jax.random.key(0), mesh=mesh)
  assert params["head"]["kernel"].sharding.spec == P("fsdp", None)
  backbone_spec = params["backbone"]["layers_0"]["mlp"]["gate_proj"].sharding.spec
  assert backbone_spec[0] == "fsdp"  # 'embed' maps to the same mesh axis


# ----------------------------------------------------------------------------- reward model


@functools.lru_cache(maxsize=None)
def _backbone_params():
  return models.init_params(BACKBONE, jax.random.key(2))


@functools.lru_cache(maxsize=None)
def _model(head="outcome", **options):
  config = reward.RewardModelConfig(backbone=BACKBONE, head=head, **options)
  return config, reward.init_reward_model(config, jax.random.key(3),
                                          backbone_params=_backbone_params())


PROMPTS = ["Q:3+4\n", "Q:12*3-5\n", "Q:7-7\n"]
COMPLETIONS = ["3+4=7\nA:7\n", "12*3=36\n36-5=31\nA:31\n", "7-7=1\nA:1\n"]


def test_outcome_scores_do_not_depend_on_padding():
  config, params = _model()
  ex = encode.encode_pair(TOK, PROMPTS[1], COMPLETIONS[1], 32)
  scores = [reward.jit_outcome_scores(config, params, jnp.asarray(ex.tokens[None, :n]),
                                  jnp.asarray(ex.mask[None, :n]), jnp.asarray([ex.score_index]))
            for n in (ex.length, 32)]
  np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5)


def test_outcome_scorer_matches_the_pure_function_and_counts_tokens():
  config, params = _model()
  encoded = [encode.encode_pair(TOK, p, c, 32) for p, c in zip(PROMPTS, COMPLETIONS)]
  batch = encode.stack_examples([{"t": e.tokens, "m": e.mask, "i": np.int32(e.score_index)}
                                 for e in encoded])
  expected = reward.jit_outcome_scores(config, params, batch["t"], batch["m"], batch["i"])
  for batch_size in (1, 2, 8):
    scorer = reward.OutcomeScorer(config, params, TOK, batch_size=batch_size)
    np.testing.assert_allclose(scorer.score(PROMPTS, COMPLETIONS), expected, rtol=1e-5, atol=1e-6)
    assert scorer.tokens_scored == sum(e.length for e in encoded)  # BOS + text + EOS
  with pytest.raises(ValueError, match="3 prompts for 2 completions"):
    scorer.score(PROMPTS, COMPLETIONS[:2])


def test_process_scorer_reads_each_step_separator():
  for form, extra in (("classifier", {}), ("lm_token", {"plus_token_id": 13, "minus_token_id": 14})):
    config, params = _model("process", process_form=form, **extra)
    steps = [c.split("\n")[:-1] for c in COMPLETIONS]
    probs = reward.ProcessScorer(config, params, TOK).score_steps(PROMPTS + ["Q:1+1\n"],
                                                                   steps + [[]])
    assert [len(p) for p in probs] == [2, 3, 2, 0]
    ex = encode.encode_steps(TOK, PROMPTS[1], steps[1], [1.0] * 3, 40, 3)
    assert all(TOK.decode([ex["tokens"][p]]) == "\n" for p in ex["step_positions"])
    logits = reward.jit_step_logits(config, params, ex["tokens"][None], ex["mask"][None],
                                ex["step_positions"][None])
    if form == "lm_token":  # z+ - z- from the backbone's own logits at the separators
      full = models.logits(config.backbone, params["backbone"], ex["tokens"][None],
                           attention_mask=ex["mask"][None])[0, ex["step_positions"]]
      np.testing.assert_allclose(logits[0], full[:, 13] - full[:, 14], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs[1], jax.nn.sigmoid(logits[0]), rtol=1e-5, atol=1e-6)


def test_genarm_process_form_is_beta_times_the_partial_response_logprob_plus_bias():
  config, params = _model("process", process_form="genarm", beta=0.5, step_bias=1.5)
  assert set(params["head"]) == {"bias"} and float(params["head"]["bias"][0]) == 1.5
  steps = [c.split("\n")[:-1] for c in COMPLETIONS]
  probs = reward.ProcessScorer(config, params, TOK).score_steps(PROMPTS, steps)
  for prompt, row, p in zip(PROMPTS, steps, probs):
    prompt_ids = [TOK.bos_id] + TOK.encode(prompt)
    ids, ends = list(prompt_ids), []
    for step in row:
      ids += TOK.encode(step + "\n")
      ends.append(len(ids) - 1)
    logits = np.asarray(models.logits(config.backbone, params["backbone"], jnp.asarray([ids])))[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_logp = [logp[t - 1, ids[t]] for t in range(len(ids))]
    expected = [0.5 * sum(token_logp[len(prompt_ids):end + 1]) + 1.5 for end in ends]
    np.testing.assert_allclose(p, jax.nn.sigmoid(np.asarray(expected)), rtol=1e-4)
  # Log-probabilities only fall, so each step's value is at most the one before it.
  assert all(np.all(np.diff(p) <= 1e-6) for p in probs)
  ex = encode.encode_steps(TOK, PROMPTS[0], steps[0], [1.0] * len(steps[0]), 40, 3)
  with pytest.raises(ValueError, match="needs prompt_length"):
    reward.step_logits(config, params, ex["tokens"][None], ex["mask"][None],
                       ex["step_positions"][None])


def test_genarm_scorer_is_beta_times_the_completion_logprob():
  config, params = _model("genarm", beta=0.1)
  scores = reward.GenARMScorer(config, params, TOK).score(PROMPTS, COMPLETIONS)
  for prompt, completion, score in zip(PROMPTS, COMPLETIONS, scores):
    prompt_ids = [TOK.bos_id] + TOK.encode(prompt)
    ids = prompt_ids + TOK.encode(completion) + [TOK.eos_id]
    logits = np.asarray(models.logits(config.backbone, params["backbone"], jnp.asarray([ids])))[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = 0.1 * sum(logp[t - 1, ids[t]] for t in range(len(prompt_ids), len(ids)))
    np.testing.assert_allclose(score, expected, rtol=1e-4)


@pytest.mark.parametrize("head,options", [
    ("outcome", {}), ("attributes", {"attribute_weights": (0.5, 0.5, 0.0, 0.0, 0.0)}),
    ("process", {"process_form": "lm_token", "plus_token_id": 13, "minus_token_id": 14}),
    ("process", {"process_form": "genarm", "beta": 2.0, "step_bias": 0.5}),
    ("genarm", {"beta": 0.2}), ("value", {})])
def test_save_and_load_roundtrip(head, options, tmp_path):
  config, params = _model(head, **options)
  reward.save_reward_model(str(tmp_path), config, params, TOK)
  loaded, loaded_params, tokenizer = reward.load_reward_model(str(tmp_path))
  assert loaded.replace(backbone=config.backbone) == config and tokenizer == TOK
  assert loaded.backbone.replace(head_dim=None) == config.backbone  # HF writes head_dim
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_config_validation_names_the_field():
  backbone = models.tiny_config()
  with pytest.raises(ValueError, match="head='score'"):
    reward.RewardModelConfig(backbone=backbone, head="score")
  with pytest.raises(ValueError, match="plus_token_id"):
    reward.RewardModelConfig(backbone=backbone, head="process", process_form="lm_token")
  with pytest.raises(ValueError, match="3 attribute_weights for 5 attributes"):
    reward.RewardModelConfig(backbone=backbone, head="attributes", attribute_weights=(1, 0, 0))
  config, params = _model("genarm")
  with pytest.raises(ValueError, match="outcome_scores needs"):
    reward.outcome_scores(config, params, jnp.zeros((1, 4), jnp.int32), None, jnp.zeros(1, int))
