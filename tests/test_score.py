"""Scoring completions: per-token log-probs equal transformers' log-softmax, sums, padding
and batching invariance, temperature, consistency with the sampler, and a mesh."""

import jax
import numpy as np
import pytest
import torch

import rewardlab
from rewardlab import sharding
from rewardlab.sampling import completion_logprobs, generate, sequence_logprob, token_logprobs

from hf_models import make_model, save_model

pytestmark = pytest.mark.torch

PROMPTS = [[1, 5, 7], [1, 9, 9, 40, 41, 42, 43, 9, 2, 17, 3], [3, 60, 61, 62, 8, 11, 90]]
COMPLETIONS = [[11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [4], [50, 51, 52, 53, 54, 55]]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  model = make_model("llama", seed=3)
  config, params = rewardlab.load_pretrained(save_model(model, tmp_path_factory.mktemp("m")))
  return model, config, params


def _torch_reference(model, prompt, completion, temperature=1.0):
  ids = torch.tensor([prompt + completion], dtype=torch.long)
  with torch.no_grad():
    logits = model(input_ids=ids).logits[0].double() / temperature
  logp = torch.log_softmax(logits, dim=-1).numpy()
  positions = np.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
  return logp[positions, completion]


def test_completion_logprobs_equal_transformers(llama):
  model, config, params = llama
  # batch_size 2 over 3 rows: two batches, the second padded with a dummy row.
  ours = completion_logprobs(config, params, PROMPTS, COMPLETIONS, batch_size=2)
  assert [len(x) for x in ours] == [len(c) for c in COMPLETIONS]
  for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
    np.testing.assert_allclose(ours[i], _torch_reference(model, p, c), atol=1e-4,
                               err_msg=f"row {i}")
  sums = sequence_logprob(config, params, PROMPTS, COMPLETIONS, batch_size=2)
  np.testing.assert_allclose(sums, [x.sum() for x in ours], rtol=1e-6)


def test_temperature_divides_the_logits(llama):
  model, config, params = llama
  ours = completion_logprobs(config, params, PROMPTS[:1], COMPLETIONS[:1], temperature=2.0)
  expected = _torch_reference(model, PROMPTS[0], COMPLETIONS[0], temperature=2.0)
  np.testing.assert_allclose(ours[0], expected, atol=1e-4)
  untempered = completion_logprobs(config, params, PROMPTS[:1], COMPLETIONS[:1])
  assert np.abs(ours[0] - untempered[0]).max() > 1e-2  # the temperature did something


def test_scores_do_not_depend_on_the_batch_around_a_row(llama):
  _, config, params = llama
  together = completion_logprobs(config, params, PROMPTS, COMPLETIONS)
  for i in range(len(PROMPTS)):
    alone = completion_logprobs(config, params, [PROMPTS[i]], [COMPLETIONS[i]])
    np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def test_sampler_logprobs_equal_scored_logprobs(llama):
  _, config, params = llama
  out = generate(config, params, PROMPTS, max_new_tokens=12, temperature=1.0, num_samples=3,
                 rng=jax.random.key(7), stop_tokens=[5])
  prompts = [p for p in PROMPTS for _ in range(3)]
  scored = completion_logprobs(config, params, prompts, out.completions())
  for row, lp in enumerate(scored):
    np.testing.assert_allclose(lp, out.logprobs[row, :out.lengths[row]], atol=1e-4)


def test_token_logprobs_zero_at_the_first_and_padded_positions(llama):
  _, config, params = llama
  tokens = np.array([[1, 5, 7, 9, 0, 0], [1, 2, 3, 4, 5, 6]], np.int32)
  mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.int32)
  out = np.asarray(token_logprobs(config, params, tokens, mask))
  assert out.shape == (2, 6)
  assert (out[:, 0] == 0).all() and (out[0, 4:] == 0).all()
  assert (out[0, 1:4] < 0).all() and (out[1, 1:] < 0).all()


def test_empty_completion_and_bad_input(llama):
  _, config, params = llama
  out = completion_logprobs(config, params, [[1, 2], [1]], [[], [7]])
  assert out[0].shape == (0,) and out[1].shape == (1,)
  assert sequence_logprob(config, params, [[1, 2]], [[]])[0] == 0.0
  with pytest.raises(ValueError, match="2 prompts but 1 completions"):
    completion_logprobs(config, params, [[1], [2]], [[3]])
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    completion_logprobs(config, params, [[1], []], [[3], [4]])
  with pytest.raises(ValueError, match="temperature"):
    completion_logprobs(config, params, [[1]], [[3]], temperature=0.0)


def test_mesh_scores_equal_unsharded(llama):
  _, config, params = llama
  mesh = sharding.make_mesh((8, 1, 1))
  sharded = completion_logprobs(config, params, PROMPTS, COMPLETIONS, mesh=mesh)
  plain = completion_logprobs(config, params, PROMPTS, COMPLETIONS)
  for a, b in zip(sharded, plain):
    np.testing.assert_allclose(a, b, atol=1e-5)
