"""Monte-Carlo step labels and completers, against closed-form success probabilities."""

import json
import math

import jax
import numpy as np
import pytest

from experiments.configs import sft as sft_config
from rewardlab import models
from rewardlab.data import formats
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.sampling.generate import generate as real_generate
from rewardlab.search import completer as completer_lib
from rewardlab.search import mc_labels
from rewardlab.tasks import arithmetic
from rewardlab.train import sft

FAIL_PROBS = (0.1, 0.3, 0.2, 0.4)


def _binomial_acceptance(n: int, p: float, alpha: float = 0.01) -> tuple[int, int]:
  """Smallest [lo, hi] with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2, X ~ Bin(n, p)."""
  pmf = [math.comb(n, x) * p**x * (1 - p)**(n - x) for x in range(n + 1)]
  cdf = np.cumsum(pmf)
  lo = next(x for x in range(n + 1) if cdf[x] > alpha / 2)
  hi = next(x for x in range(n + 1) if 1.0 - cdf[x] <= alpha / 2)
  return lo, hi


def _sample_solutions(problems, completer, n, rng):
  texts = completer.complete([p.prompt for p in problems], n, rng)
  return [[completer_lib.solution_steps(p.prompt + t) for t in ts]
          for p, ts in zip(problems, texts)]


def test_binomial_acceptance_region_by_hand():
  # Bin(4, 0.5): P(X=0) = 1/16 > 0.005, so the region is all of [0, 4].
  assert _binomial_acceptance(4, 0.5) == (0, 4)
  # Bin(16, 0.5): P(X <= 2) = 137/65536 = 0.0021 <= 0.005 < P(X <= 3) = 0.0106.
  assert _binomial_acceptance(16, 0.5) == (3, 13)


def test_soft_labels_fall_in_binomial_intervals_of_the_true_success_probability():
  problems = arithmetic.generate_problems(40, seed=3, num_ops=(4,))
  completer = completer_lib.ScriptedCompleter(FAIL_PROBS)
  rng = np.random.default_rng(0)
  solutions = _sample_solutions(problems, completer, 6, rng)
  n = 16
  labelled = mc_labels.label_solutions(problems, solutions, completer, num_completions=n, rng=rng)
  seen, outside, false_failures, expected_false_failures = set(), 0, 0, 0.0
  for problem, labels in zip(problems, labelled):
    for item in labels:
      for k, step in enumerate(item.steps):
        key = (problem.key, item.steps[:k + 1])
        if mc_labels.is_answer_step(step) or key in seen:
          continue
        seen.add(key)
        p = completer.success_probability(problem, item.steps[:k + 1])
        c = item.successes[k]
        assert item.totals[k] == n and item.labels[k] == c / n
        assert item.hard_labels[k] == float(c > 0)
        if p == 0.0:
          assert c == 0, f"a prefix with a wrong step succeeded: {key}"
          continue
        lo, hi = _binomial_acceptance(n, p)
        outside += not lo <= c <= hi
        false_failures += c == 0
        expected_false_failures += (1 - p)**n
  positive = sum(completer.success_probability(arithmetic.parse_prompt(k), s) > 0 for k, s in seen)
  assert positive >= 150, "too few prefixes to test the intervals"
  assert outside <= 0.03 * positive, f"{outside} of {positive} counts outside the 99% intervals"
  assert false_failures <= 3 + 3 * expected_false_failures


def test_each_distinct_prefix_is_sampled_once_and_answer_steps_are_exact():
  problem = arithmetic.Problem(3, (("+", 4), ("*", 2)))
  right = ["3+4=7", "7*2=14", "A:14"]
  wrong = ["3+4=8", "8*2=16", "A:16"]
  completer = completer_lib.ScriptedCompleter((0.0,))
  metered = completer_lib.MeteredCompleter(completer)
  (labels,) = mc_labels.label_solutions([problem], [[right, wrong, right]], metered,
                                        num_completions=3, rng=np.random.default_rng(0))
  assert [l.labels for l in labels] == [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
  assert labels[0].successes == (3, 3, 1) and labels[0].totals == (3, 3, 1)
  assert labels[1].outcomes == ("000", "000", "0")
  assert sorted(completer.calls.values()) == [1, 1, 1, 1]   # 4 distinct step prefixes
  assert metered.stats.calls == 1 and metered.stats.completions == 12
  assert mc_labels.num_sampled_prefixes(labels) == 4


def test_many_problems_share_one_completer_call():
  problems = arithmetic.generate_problems(5, seed=1, num_ops=(2, 3))
  metered = completer_lib.MeteredCompleter(completer_lib.ScriptedCompleter(FAIL_PROBS))
  rng = np.random.default_rng(1)
  solutions = _sample_solutions(problems, metered, 2, rng)
  mc_labels.label_solutions(problems, solutions, metered, num_completions=2, rng=rng)
  assert metered.stats.calls == 2  # one for the solutions, one for every prefix of every problem


def test_labels_from_outcomes_and_implied_first_wrong_step():
  outcomes = ("1010", "0100", "0000", "1")
  assert mc_labels.labels_from_outcomes(outcomes, 4) == [0.5, 0.25, 0.0, 1.0]
  assert mc_labels.labels_from_outcomes(outcomes, 1) == [1.0, 0.0, 0.0, 1.0]
  assert mc_labels.labels_from_outcomes(outcomes, 2) == [0.5, 0.5, 0.0, 1.0]
  assert mc_labels.implied_first_wrong_step([0.5, 0.25, 0.0, 1.0]) == 2
  assert mc_labels.implied_first_wrong_step([0.5, 1.0]) == -1
  with pytest.raises(ValueError, match="n must be positive"):
    mc_labels.labels_from_outcomes(outcomes, 0)


def test_step_labels_reject_bad_input():
  with pytest.raises(ValueError, match="StepLabels.labels: 1 values for 2 steps"):
    mc_labels.StepLabels("Q:1+1\n", ("1+1=2", "A:2"), (1.0,), (1, 1), (1, 1), ("1", "1"), "mc")
  with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
    mc_labels.StepLabels("Q:1+1\n", ("A:2",), (1.5,), (1,), (1,), ("1",), "mc")
  with pytest.raises(ValueError, match="1 problems but 2 solution lists"):
    mc_labels.label_solutions([arithmetic.Problem(1, (("+", 1),))], [[], []],
                              completer_lib.ScriptedCompleter((0.0,)), rng=np.random.default_rng(0))


def test_records_are_read_by_the_stepwise_reader(tmp_path):
  problems = arithmetic.generate_problems(3, seed=2, num_ops=(3,))
  completer = completer_lib.ScriptedCompleter(FAIL_PROBS)
  rng = np.random.default_rng(2)
  solutions = _sample_solutions(problems, completer, 2, rng)
  labelled = mc_labels.label_solutions(problems, solutions, completer, num_completions=4, rng=rng)
  rows = [l.to_record(problem=p.key) for p, ls in zip(problems, labelled) for l in ls]
  path = tmp_path / "labels.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  records, stats = formats.read_records(path, "stepwise")
  assert stats.kept == len(rows) == 6
  for record, row in zip(records, rows):
    assert record.prompt == row["prompt"] and list(record.steps) == row["completions"]
    assert list(record.labels) == row["labels"] and row["method"] == "mc"
    assert [c[0] / c[1] for c in row["counts"]] == row["labels"]


def test_scripted_completer_success_probability_by_hand():
  problem = arithmetic.Problem(5, (("+", 1), ("*", 2), ("-", 3)))
  completer = completer_lib.ScriptedCompleter((0.1, 0.3, 0.2))
  assert completer.success_probability(problem, []) == pytest.approx(0.9 * 0.7 * 0.8)
  assert completer.success_probability(problem, ["5+1=6"]) == pytest.approx(0.7 * 0.8)
  assert completer.success_probability(problem, ["5+1=7"]) == 0.0
  assert completer.success_probability(problem, ["5+1=6", "6*2=12", "12-3=9"]) == 1.0
  # A wrong prefix is continued consistently and never reaches the answer.
  texts = completer.complete(["Q:5+1*2-3\n5+1=7\n"], 20, np.random.default_rng(0))[0]
  assert all(t.startswith("7*2=14\n14-3=11\nA:11") for t in texts)


def _tiny_lm(path):
  """A tiny random policy saved and loaded like the SFT policy (test_label_steps compiles the
  sampler for the same shapes, so the suite compiles it once)."""
  tok = CharTokenizer.for_arithmetic()
  config = sft.model_config(sft_config.tiny(), tok)
  sft.save_policy(str(path), config, models.init_params(config, jax.random.key(0)), tok)
  return sft.load_policy(str(path))


def _cut_at_unknown_id(ids, vocab_size):
  return ids[:next((j for j, t in enumerate(ids) if t >= vocab_size), len(ids))]


def test_lm_completer_batches_prefixes_by_length_and_matches_the_sampler(monkeypatch, tmp_path):
  config, params, tok = _tiny_lm(tmp_path / "policy")
  calls = []

  def counting(*args, **kwargs):
    calls.append(len(args[2]))
    return real_generate(*args, **kwargs)

  monkeypatch.setattr(completer_lib, "generate", counting)
  lm = completer_lib.LMCompleter(config, params, tok, max_new_tokens=16, batch_size=2)
  short = ["Q:1+2\n", "Q:1+2\n1+2=3\n"]                     # 7 and 13 tokens: one width
  long = ["Q:12+34*2\n12+34=46\n", "Q:12+34*2\n12+34=46\n46*2=92\n"]  # 20, 28: another
  out = lm.complete(short + long, 2, np.random.default_rng(0))
  assert [len(o) for o in out] == [2, 2, 2, 2]
  assert calls == [2, 2]                                      # one generate call per width
  assert lm.generated_tokens > 0
  # The short group is exactly what the sampler gives for the same key.
  key = jax.random.key(int(np.random.default_rng(0).integers(2**31)))
  direct = real_generate(config, params, [[tok.bos_id] + tok.encode(p) for p in short],
                         max_new_tokens=16, temperature=1.0, stop_tokens=(tok.eos_id,),
                         num_samples=2, rng=key, pad_id=tok.pad_id)
  texts = [tok.decode(_cut_at_unknown_id(ids, tok.vocab_size)) for ids in direct.completions()]
  assert out[0] + out[1] == texts
