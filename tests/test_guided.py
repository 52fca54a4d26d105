"""GenARM reward-guided decoding and the LM policy, on tiny random models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import sft as sft_config
from rewardlab import models
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.sampling import generate
from rewardlab.sampling.guided import combine_logits, guided_generate
from rewardlab.search.policy import LMPolicy
from rewardlab.train import sft

TOK = CharTokenizer.for_arithmetic()
# The tiny SFT policy shape (as in test_tts: compiled functions are shared).
CONFIG = sft.model_config(sft_config.tiny(), TOK)
PARAMS = models.init_params(CONFIG, jax.random.key(0))
GUIDE = jax.tree.map(lambda x: -1.5 * x, PARAMS)  # another model (init compiles once per call)
PROMPTS = [[1, 5, 6, 7], [1, 8, 9, 10, 11, 12, 13]]  # different lengths in one batch
STOPS = (TOK.eos_id, TOK.encode("\n")[0])


def _peaked(params, scale):
    """A copy of params whose logits are `scale` times larger (a far-from-uniform p)."""
    return {**params, "lm_head": params["lm_head"] * scale}


def test_combine_logits_matches_the_formula():
    rng = np.random.default_rng(0)
    base, g1, g2 = (rng.normal(size=(3, 5)) for _ in range(3))
    lsm = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
    want = lsm(base) + 0.5 * lsm(g1) - 2.0 * lsm(g2)
    got = combine_logits(jnp.asarray(base), [jnp.asarray(g1), jnp.asarray(g2)],
                         jnp.asarray([0.5, -2.0]))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_alpha_zero_equals_plain_greedy_generate():
    kwargs = dict(max_new_tokens=16, temperature=0.0, stop_tokens=(TOK.eos_id,), pad_id=0)
    plain = generate(CONFIG, PARAMS, PROMPTS, **kwargs)
    guided = guided_generate(CONFIG, PARAMS, [(CONFIG, GUIDE)], [0.0], PROMPTS, **kwargs)
    np.testing.assert_array_equal(guided.tokens, plain.tokens)
    np.testing.assert_array_equal(guided.lengths, plain.lengths)
    np.testing.assert_allclose(guided.logprobs, plain.logprobs, atol=1e-5)
    # With alpha = 0 the guided distribution is the base one.
    np.testing.assert_allclose(guided.guided_logprobs, plain.logprobs, atol=1e-5)
    # Randomness is drawn per row as in generate: sampled rows agree too (8 rows of one
    # sample: the shapes LMPolicy uses below, so its test compiles nothing new).
    kwargs.update(temperature=1.0, rng=jax.random.key(7), stop_tokens=STOPS)
    plain = generate(CONFIG, PARAMS, PROMPTS * 4, **kwargs)
    guided = guided_generate(CONFIG, PARAMS, [(CONFIG, GUIDE)], [0.0], PROMPTS * 4, **kwargs)
    np.testing.assert_array_equal(guided.tokens, plain.tokens)


def test_self_guidance_squares_the_distribution():
    """guide = base, alpha = 1, tau = 1: y ~ softmax(2 log p) = p^2 / sum p^2."""
    params = _peaked(PARAMS, 12.0)
    prompt = [PROMPTS[0]]
    logits = models.logits(CONFIG, params, jnp.asarray(prompt))[0, -1]
    logp = np.asarray(jax.nn.log_softmax(logits))
    target = np.exp(2 * logp) / np.exp(2 * logp).sum()
    n = 3000
    out = guided_generate(CONFIG, params, [(CONFIG, params)], [1.0], prompt, max_new_tokens=1,
                          temperature=1.0, num_samples=n, rng=jax.random.key(3))
    first = out.tokens[:, 0]
    # Exact per-token check of the reported log-probabilities at the first step.
    np.testing.assert_allclose(out.logprobs[:, 0], logp[first], atol=1e-4)
    np.testing.assert_allclose(out.guided_logprobs[:, 0], np.log(target[first]), atol=1e-4)
    # Empirical check of the sampling distribution (TV to p^2 small, to p large).
    freq = np.bincount(first, minlength=CONFIG.vocab_size) / n
    tv = lambda a, b: 0.5 * np.abs(a - b).sum()
    assert tv(freq, target) < 0.04
    assert tv(np.exp(logp), target) > 0.1  # the test tells p from p^2


def test_mismatched_vocabularies_and_alpha_counts_raise():
    other = CONFIG.replace(vocab_size=32)
    with pytest.raises(ValueError, match="vocab_size 32"):
        guided_generate(CONFIG, PARAMS, [(other, GUIDE)], [1.0], PROMPTS, max_new_tokens=2,
                        temperature=0.0)
    with pytest.raises(ValueError, match="1 guide models but 2 alphas"):
        guided_generate(CONFIG, PARAMS, [(CONFIG, GUIDE)], [1.0, 1.0], PROMPTS, max_new_tokens=2,
                        temperature=0.0)


def test_lm_policy_stops_at_steps_and_reports_tokens():
    policy = LMPolicy(CONFIG, _peaked(PARAMS, 3.0), TOK)
    kwargs = dict(max_new_tokens=12, temperature=1.0, stop_at_step=True)
    prompts = ["Q:1+2\n", "Q:3*4-5\n"]
    out = policy.sample(prompts, 3, rng=np.random.default_rng(0), **kwargs)
    assert [len(row) for row in out] == [3, 3]
    for row in out:
        for c in row:
            assert 1 <= c.num_tokens <= 12
            # a step ends at the separator, at EOS, or at the token limit
            assert c.text.count("\n") <= 1 and (c.text.endswith("\n") or c.finished
                                                or c.num_tokens == 12)
            assert len(c.token_ends) == c.num_tokens and c.prefix(c.num_tokens) == c.text
    assert any(c.text.endswith("\n") for row in out for c in row)
    # Same rng state, same completions; alpha = 0 guidance equals the plain policy.
    again = policy.sample(prompts, 3, rng=np.random.default_rng(0), **kwargs)
    guided = policy.with_guides([(CONFIG, GUIDE)], [0.0]).sample(
        prompts, 3, rng=np.random.default_rng(0), **kwargs)
    assert again == out and guided == out
