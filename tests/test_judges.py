"""Generative judges: verdict probabilities against the model's own logits, the
aggregation and position-debiasing formulas on hand-computed cases, parse failures
counted, and step verification by a scripted judge (chains read token by token)."""
import string

import jax
import numpy as np
import pytest

from rewardlab import models
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.judges import aggregate, model as lm, pairwise, pointwise, steps as steps_lib
from rewardlab.judges import templates as tmpl
from rewardlab.judges.model import JudgeModel

ALPHABET = string.ascii_letters + string.digits + " :\n.?'-<>/=+*()[],!'\""
ALPHABET = "".join(dict.fromkeys(ALPHABET))


@pytest.fixture(scope="module")
def judge():
  tok = CharTokenizer(ALPHABET)
  config = models.tiny_config(vocab_size=-(-tok.vocab_size // 8) * 8, hidden_size=32,
                              num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                              max_position_embeddings=512)
  return JudgeModel(config, models.init_params(config, jax.random.key(0)), tok)


def test_aggregators_on_hand_computed_cases():
  nan = np.nan
  np.testing.assert_allclose(aggregate.mean_probability([[0.2, nan, 0.8], [0.9, 0.6, 0.3]]),
                             [0.5, 0.6])
  assert np.isnan(aggregate.mean_probability([[nan, nan]]))[0]
  np.testing.assert_allclose(aggregate.majority_verdict([[1, 0, 1, nan], [0, 0, 1, 1]]),
                             [2 / 3, 0.5])
  np.testing.assert_allclose(aggregate.score_vote([[7, nan, 3], [1, 2, 3]]), [10, 6])
  assert np.isnan(aggregate.score_vote([[nan, nan]]))[0]
  with pytest.raises(ValueError, match="0, 1 or NaN"):
    aggregate.majority_verdict([[0.5]])


def test_position_debiasing_formula_and_consistency():
  q1, q2 = np.array([0.8, 0.8, 0.3, 0.5]), np.array([0.3, 0.9, 0.6, 0.2])
  # p(A > B) = (q1 + 1 - q2) / 2: 0.75, 0.45, 0.35, 0.65
  np.testing.assert_allclose(aggregate.debiased_preference(q1, q2), [0.75, 0.45, 0.35, 0.65])
  # A wins both orders; "first" wins both (inconsistent); B wins both; no preference in order 1
  np.testing.assert_array_equal(aggregate.position_consistent(q1, q2),
                                [True, False, True, False])


def test_verdict_probability_sums_surface_forms():
  z = np.log(np.array([1.0, 2.0, 3.0, 4.0, 10.0]))
  # yes forms {1, 2}: e^z = 2 + 3; no forms {3}: 4  ->  5 / 9
  assert float(lm.verdict_probability_from_logits(z, (1, 2), (3,))) == pytest.approx(5 / 9, 1e-6)
  assert float(lm.verdict_probability_from_logits(z, (1,), (3,))) == pytest.approx(2 / 6, 1e-6)
  with pytest.raises(ValueError, match="both a yes and a no"):
    lm.verdict_probability_from_logits(z, (1, 2), (2,))


def test_verdict_token_ids_are_first_tokens_of_the_forms(judge):
  tok = judge.tokenizer
  assert lm.verdict_token_ids(tok, ("Yes", "Y", "yes", "\u00e9")) == (tok.token_to_id("Y"),
                                                                    tok.token_to_id("y"))
  with pytest.raises(ValueError, match="no yes form"):
    lm.verdict_token_ids(tok, ("\u00e9",), "yes")
  # " Yes" / " No" start with the same character: that token is dropped from both sides
  yes, no = lm.verdict_sets(tok, (" Yes", "Yes"), (" No", "No"))
  assert yes == (tok.token_to_id("Y"),) and no == (tok.token_to_id("N"),)
  with pytest.raises(ValueError, match="share their first tokens"):
    lm.verdict_sets(tok, (" Yes",), (" No",))


def _reference_p(judge, text, yes, no):
  ids = [judge.tokenizer.bos_id] + judge.tokenizer.encode(text)
  z = np.asarray(models.logits(judge.config, judge.params, np.asarray([ids], np.int32)))[0, -1]
  e = np.exp(z - z.max())
  return sum(e[i] for i in yes) / (sum(e[i] for i in yes) + sum(e[i] for i in no))


def test_pointwise_probability_matches_the_models_logits(judge):
  tok = judge.tokenizer
  prompts, responses = ["What is 2+2?", "Name a colour."], ["4", "blue, I think"]
  probs, usage = pointwise.verdict_probabilities(judge, prompts, responses, tmpl.POINTWISE)
  yes, no = lm.verdict_sets(tok, tmpl.POINTWISE.yes, tmpl.POINTWISE.no)
  for p, (q, r) in zip(probs, zip(prompts, responses)):
    text = tmpl.POINTWISE.user.format(prompt=q, response=r) + "Verdict:"
    assert p == pytest.approx(_reference_p(judge, text, yes, no), abs=1e-5)
  assert usage.tokens_generated == 0 and usage.tokens_read > 2 * 100


def test_pairwise_judges_both_orders(judge):
  tok = judge.tokenizer
  out = pairwise.preferences(judge, ["Pick one."] * 2, ["apples", "x"], ["pears", "a longer one"])
  a, b = lm.verdict_sets(tok, tmpl.PAIRWISE.yes, tmpl.PAIRWISE.no)
  for i, (x, y) in enumerate([("apples", "pears"), ("x", "a longer one")]):
    fmt = lambda u, v: tmpl.PAIRWISE.user.format(prompt="Pick one.", response_a=u,
                                                 response_b=v) + "Verdict:"
    q1, q2 = _reference_p(judge, fmt(x, y), a, b), _reference_p(judge, fmt(y, x), a, b)
    assert out.q1[i] == pytest.approx(q1, abs=1e-5) and out.q2[i] == pytest.approx(q2, abs=1e-5)
    assert out.p_a[i] == pytest.approx((q1 + 1 - q2) / 2, abs=1e-5)
    assert out.consistent[i] == ((q1 > 0.5) != (q2 > 0.5))


def test_principle_rewards_are_weighted_sums(judge):
  rewards, probs, _ = pointwise.principle_rewards(
      judge, ["Say hi."] * 2, ["hi", "no"], ["It is polite.", "It is short."], [0.25, 0.75])
  assert probs.shape == (2, 2)
  np.testing.assert_allclose(rewards, probs @ np.array([0.25, 0.75]), rtol=1e-6)


def _scripted_sample(texts_by_call):
  """Replace `model.sample` with one returning given texts (ids) in order."""
  def fake(judge, prompts, num_samples, **kwargs):
    texts = texts_by_call.pop(0)
    assert len(texts) == len(prompts) * num_samples
    ids = [judge.tokenizer.encode(t) for t in texts]
    return ids, lm.Usage(sum(map(len, prompts)), sum(map(len, ids)))
  return fake


def test_sampled_critiques_count_parse_failures(judge, monkeypatch):
  texts = ["Fine. Verdict: Yes", "hmm", "Verdict: No", "Verdict: maybe", "Verdict:Yes", "Score: 7"]
  monkeypatch.setattr(lm, "sample", _scripted_sample([texts]))
  crit = pointwise.sample_critiques(judge, ["q1", "q2"], ["r1", "r2"], tmpl.POINTWISE,
                                    num_samples=3, rng=jax.random.key(0))
  np.testing.assert_array_equal(crit.verdicts, [[1, np.nan, 0], [np.nan, 1, np.nan]])
  assert crit.unparsed == 3  # "hmm", "maybe" and a score under a verdict template
  assert np.isnan(crit.probs[0, 1]) and 0 < crit.probs[0, 0] < 1
  # the probability is read where the verdict word starts, after "Fine. Verdict:"
  ctx = tmpl.POINTWISE.user.format(prompt="q1", response="r1") + "Fine. Verdict:"
  yes, no = lm.verdict_sets(judge.tokenizer, tmpl.POINTWISE.yes, tmpl.POINTWISE.no)
  assert crit.probs[0, 0] == pytest.approx(_reference_p(judge, ctx, yes, no), abs=1e-5)
  np.testing.assert_allclose(aggregate.majority_verdict(crit.verdicts), [0.5, 1.0])


def test_score_critiques_are_parsed_in_range(judge, monkeypatch):
  texts = ["Score: 7", "Score: 11", "Score: 3 then Score: 9", "none"]
  monkeypatch.setattr(lm, "sample", _scripted_sample([texts]))
  crit = pointwise.sample_critiques(judge, ["q"], ["r"], tmpl.POINTWISE_SCORE, num_samples=4,
                                    rng=jax.random.key(0))
  np.testing.assert_array_equal(crit.scores, [[7, np.nan, 9, np.nan]])
  assert crit.unparsed == 2
  assert aggregate.score_vote(crit.scores)[0] == 16


def test_read_chain_stops_at_the_first_incorrect_verdict():
  Y, N, x = 5, 6, 1
  assert steps_lib.read_chain([x, Y, x, Y, x, N, Y], [True] * 7, 5, (Y,), (N,)) == ([1, 3, 5], True)
  assert steps_lib.read_chain([x, Y, x, Y, Y], [True] * 5, 2, (Y,), (N,)) == ([1, 3], False)
  # tool tokens (not generated) are never verdicts
  assert steps_lib.read_chain([Y, N, Y], [True, False, True], 3, (Y,), (N,)) == ([0, 2], False)


def test_step_verification_probabilities_unjudged_and_samples(judge, monkeypatch):
  tpl = tmpl.JudgeTemplate(user="{prompt}\n{steps}", yes=("Y",), no=("N",),
                           step_format="{step}\n")
  chains = ["aY\nbN\n", "aY\nbY\ncY\n", "aY\n"]  # ends on N; judges all; stops early
  monkeypatch.setattr(lm, "sample", _scripted_sample([chains]))
  out = steps_lib.verify_steps(judge, ["p"], [["s1", "s2", "s3"]], tpl, num_samples=3,
                               rng=jax.random.key(0))
  rows = out.samples[0]
  assert out.unparsed == 1
  assert rows[0, 2] == 0.0 and np.isnan(rows[2, 1:]).all() and not np.isnan(rows[:, 0]).any()
  # step 1's probability of chain 0 is P(Y) read just before its Y, from the model itself
  ids = steps_lib.step_prompt_ids(judge, tpl, "p", ["s1", "s2", "s3"]) + judge.tokenizer.encode("a")
  z = np.asarray(models.logits(judge.config, judge.params, np.asarray([ids], np.int32)))[0, -1]
  y, n = judge.tokenizer.token_to_id("Y"), judge.tokenizer.token_to_id("N")
  assert rows[0, 0] == pytest.approx(1 / (1 + np.exp(z[n] - z[y])), abs=1e-5)
  np.testing.assert_allclose(out.probs[0], [rows[:, 0].mean(), rows[:2, 1].mean(), rows[:2, 2].mean()])
  assert out.chains[0] == chains


def test_evaluate_expression_is_left_to_right():
  assert lm.evaluate_expression("246-12") == 234
  assert lm.evaluate_expression("3+4*2") == 14  # the task's left-to-right order
  assert lm.evaluate_expression("2/3") is None and lm.evaluate_expression("") is None


def test_tool_calls_append_exact_values_as_read_tokens(judge, monkeypatch):
  tok = judge.tokenizer
  calls = [["<calc>3+4</calc>", "ok"], ["Y <calc>7*2</calc>"], ["N"]]
  seen = []

  def fake(judge_, prompts, num_samples, *, stop_strings=(), **kwargs):
    assert num_samples == 1
    seen.append([tok.decode(p) for p in prompts])
    texts = calls.pop(0)
    ids = [tok.encode(t) for t in texts]
    ids = [i + ([tok.eos_id] if not t.endswith("</calc>") else []) for i, t in zip(ids, texts)]
    return ids, lm.Usage(sum(map(len, prompts)), sum(map(len, ids)))

  monkeypatch.setattr(lm, "sample", fake)
  p1, p2 = tok.encode("a"), tok.encode("b")
  conts, generated, usage = lm.sample_with_tool(judge, [p1, p2], 1, max_new_tokens=64,
                                                temperature=1.0, rng=jax.random.key(0))
  assert tok.decode(conts[0]) == "<calc>3+4</calc>=7Y <calc>7*2</calc>=14N"
  assert tok.decode(conts[1]) == "ok"
  # the tool's "=7" and "=14" are inputs: not generated, and counted as read
  gen_text = tok.decode([t for t, g in zip(conts[0], generated[0]) if g])
  assert gen_text == "<calc>3+4</calc>Y <calc>7*2</calc>N"
  assert usage.tokens_generated == len(gen_text) + 1 + len("ok") + 1  # with their EOS tokens
  assert seen[1] == ["a<calc>3+4</calc>=7"]  # resumed after the tool's answer


def test_scaffolded_chains_get_each_steps_prefix_from_the_framework(judge, monkeypatch):
  tok = judge.tokenizer
  tpl = tmpl.JudgeTemplate(user="{prompt}\n{steps}", yes=("Y",), no=("N",),
                           step_format="{step}\n", check_prefix="{step}>")
  replies = [["1Y", "2N"], ["3Y"], ["4Y"]]
  seen = []

  def fake(judge_, prompts, num_samples, *, stop_tokens=(), **kwargs):
    assert set(stop_tokens) == {tok.token_to_id("Y"), tok.token_to_id("N")}
    seen.append([tok.decode(p).split("\n")[-1] for p in prompts])
    ids = [tok.encode(t) for t in replies.pop(0)]
    return ids, lm.Usage(sum(map(len, prompts)), sum(map(len, ids)))

  monkeypatch.setattr(lm, "sample", fake)
  out = steps_lib.verify_steps(judge, ["p", "q"], [["aa", "bb", "cc"], ["dd", "ee"]], tpl,
                               scaffold=True, rng=jax.random.key(0))
  assert out.chains == [["aa>1Y\nbb>3Y\ncc>4Y"], ["dd>2N"]]  # given prefixes and checks
  assert seen == [["aa>", "dd>"], ["bb>"], ["cc>"]]  # each step's prefix, after a newline
  assert out.unparsed == 0 and np.isfinite(out.probs[0]).all()
  assert out.probs[1][1] == 0.0  # after the incorrect verdict
  assert out.usage.tokens_generated == 8


def test_revealed_chains_show_each_step_only_after_the_judge_asks(judge, monkeypatch):
  """The judge writes what step k should be and `>`; only then is step k's value written
  (read, not generated); tool calls and the reveal share the `>` stop; a no verdict or a
  request past the last step ends the chain."""
  tok = judge.tokenizer
  tpl = tmpl.JudgeTemplate(user="{prompt}\n", yes=("Y",), no=("N",), check_reveal="{value}")
  replies = [["3+4=7>", "<calc>"],  # row 0 recomputes; row 1 calls the tool
             ["Y\n7*2=14>", "3+4</calc>"],
             ["Y\n>", "=8>"],  # row 0 asks past its last step; row 1 reads the value 7
             ["N\n1+1=2>"]]  # after N no step is revealed
  seen = []

  def fake(judge_, prompts, num_samples, *, stop_tokens=(), stop_strings=(), **kwargs):
    assert tuple(stop_tokens) == (tok.token_to_id(">"),) and not stop_strings
    seen.append([tok.decode(p) for p in prompts])
    ids = [tok.encode(t) for t in replies.pop(0)][:len(prompts)]
    return ids, lm.Usage(sum(map(len, prompts)), sum(map(len, ids)))

  monkeypatch.setattr(lm, "sample", fake)
  ids = [tok.encode("p\n"), tok.encode("q\n")]
  conts, generated, usage = steps_lib.revealed_chains(
      judge, tpl, ids, [["3+4=7", "7*2=15"], ["3+4=7", "A:8"]], 1, max_new_tokens=64,
      temperature=0.0, rng=jax.random.key(0), tool=True)
  assert tok.decode(conts[0]) == "3+4=7>7Y\n7*2=14>15Y\n>"
  assert tok.decode([t for t, g in zip(conts[0], generated[0]) if g]) == "3+4=7>Y\n7*2=14>Y\n>"
  assert tok.decode(conts[1]) == "<calc>3+4</calc>=7=8>7N\n1+1=2>"
  assert tok.decode([t for t, g in zip(conts[1], generated[1]) if g]) == \
      "<calc>3+4</calc>=8>N\n1+1=2>"
  assert seen[1] == ["p\n3+4=7>7", "q\n<calc>"]  # step 1's value only after the first `>`
  assert usage.tokens_read == sum(len(p) for call in seen for p in call) + len("7" "15" "=7" "7")
  assert usage.tokens_generated == sum(map(sum, generated))
  out_rows = [steps_lib.read_chain(c, g, 2, [tok.token_to_id("Y")], [tok.token_to_id("N")])
              for c, g in zip(conts, generated)]
  assert [len(w) for w, _ in out_rows] == [2, 1] and [e for _, e in out_rows] == [False, True]
  assert steps_lib.step_value(" 7*2=15 ") == "15" and steps_lib.step_value("A:8") == "8"
