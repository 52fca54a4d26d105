"""Verification chains made by the checker, the SFT example masks (tool values are inputs),
the judges' RL rewards, and the vocabulary extension that turns the policy into a judge."""
import jax
import numpy as np
import pytest

from rewardlab import models
from rewardlab.judges import arithmetic as judge_task
from rewardlab.judges import training
from rewardlab.judges.model import JudgeModel
from rewardlab.tasks import arithmetic

PROBLEM = arithmetic.Problem(37, (("+", 45), ("*", 3)))  # 37+45=82, 82*3=246


def test_chains_follow_the_checker():
  # reveal style (default): the line as it should be, `>`, the value the solution wrote
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "82*3=246", "A:246"]) == \
      "37+45=82>82Y\n82*3=246>246Y\nA:246>246Y\n"
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "82*3=264", "A:264"]) == \
      "37+45=82>82Y\n82*3=246>264N\n"
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "A:82"], tool=True) == \
      "<calc>37+45</calc>=82>82Y\n<calc>82*3</calc>=246>82N\n"  # a skipped step
  assert judge_task.chain_for(PROBLEM, ["37+45=82"]) == "37+45=82>82Y\n"  # partial (beam search)
  assert judge_task.chain_for(PROBLEM, ["37+45=80", "80*3=240", "A:240"]) == "37+45=82>80N\n"
  # copy style (the first format): the written line, `>`, the value it should have
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "82*3=264", "A:264"], style="copy") == \
      "37+45=82>82Y\n82*3=264>246N\n"
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "A:82"], tool=True, style="copy") == \
      "37+45=82><calc>37+45</calc>=82Y\nA:82><calc>82*3</calc>=246N\n"
  assert judge_task.chain_for(PROBLEM, ["37+45=82", "82*3=246", "A:246", "1+1=2"],
                              style="copy") == "37+45=82>82Y\n82*3=246>246Y\nA:246>246Y\n1+1=2>N\n"
  with pytest.raises(ValueError, match="unknown chain style"):
    judge_task.chain_for(PROBLEM, ["37+45=82"], style="guess")


def test_value_errors_count_the_verifiers_own_slips():
  assert judge_task.value_errors(PROBLEM, "37+45=82>82Y\n82*3=246>264N\n") == 0
  assert judge_task.value_errors(PROBLEM, "37+45=83>82N\n") == 1
  assert judge_task.value_errors(PROBLEM, "37+45=82>82Y\n82*3=256>246N\nA:246>246Y\n") == 1
  assert judge_task.value_errors(PROBLEM, "<calc>37+45</calc>=82>82Y\nA:245>246N\n") == 1
  assert judge_task.value_errors(PROBLEM, "<calc>37+46</calc>=83>82N\n") == 1  # wrong call
  copy = "copy"
  assert judge_task.value_errors(PROBLEM, "37+45=82>82Y\n82*3=264>246N\n", copy) == 0
  assert judge_task.value_errors(PROBLEM, "37+45=82>83N\n", copy) == 1
  assert judge_task.value_errors(PROBLEM, "37+45=82><calc>37+45</calc>=82Y\nA:246>245N\n",
                                 copy) == 1


def test_first_wrong_line_agrees_with_the_task_checker():
  rng = np.random.default_rng(0)
  for problem in arithmetic.generate_problems(40, seed=3):
    for text in [problem.solution] + [arithmetic.corrupt_solution(problem, rng)[0]
                                      for _ in range(3)]:
      steps = judge_task.solution_steps(text)
      assert judge_task.first_wrong_line(problem, steps) == \
          arithmetic.first_wrong_step(text, problem)


def test_chain_verdicts_and_rewards():
  assert judge_task.first_error_of_chain("aY\nbY\ncN\ndY", 4) == 2
  assert judge_task.first_error_of_chain("aY\nbY\ncY\n", 3) == -1
  assert judge_task.first_error_of_chain("aY\n", 3) is None  # judged too few lines
  assert training.chain_reward("aY\nbN\n", 3, 1) == 1.0
  assert training.chain_reward("aY\nbY\ncY\n", 3, 1) == 0.0
  assert training.chain_reward("aY\n", 3, -1) == 0.0
  # partial credit: the share of the label's verdicts (Y before the first wrong line, N at it)
  assert training.verdict_reward("aY\nbN\n", 3, 1) == 1.0
  assert training.verdict_reward("aY\nbY\ncY\n", 3, 1) == 0.5
  assert training.verdict_reward("aN\n", 3, 1) == 0.0
  assert training.verdict_reward("aY\nbY\n", 3, -1) == pytest.approx(2 / 3)
  assert training.verdict_reward("aY\nbY\ncY\n", 3, -1) == 1.0
  # pairwise: paid only when both orders name the better response
  assert training.pairwise_reward(True, False, a_is_better=True) == 1.0
  assert training.pairwise_reward(True, True, a_is_better=True) == 0.0  # always "first"
  assert training.pairwise_reward(False, True, a_is_better=False) == 1.0
  assert training.pairwise_reward(None, False, a_is_better=True) == 0.0


def test_sft_examples_mask_the_prompt_the_revealed_values_and_the_tool_values():
  assert training.chain_pieces("<calc>3+4</calc>=7Y\n") == [("<calc>3+4</calc>", True),
                                                           ("=7", False), ("Y\n", True)]
  assert training.chain_pieces("3+4=7>7Y\n", reveal=True) == [("3+4=7>", True), ("7", False),
                                                               ("Y\n", True)]
  assert training.chain_pieces("3+4=7>7Y\n") == [("3+4=7>7Y\n", True)]  # copy style: all written
  tok = judge_task.tokenizer()
  config = models.tiny_config(vocab_size=32, max_position_embeddings=128)
  judge = JudgeModel(config, None, tok)
  steps = ["37+45=82", "82*3=264", "A:264"]
  chain = judge_task.chain_for(PROBLEM, steps, tool=True)
  ex = training.chain_example(judge, PROBLEM.prompt, steps, chain, 128, verdict_weights=(2, 5))
  n = int(ex["attention_mask"].sum())
  text = tok.decode(ex["tokens"][:n])
  assert text == PROBLEM.prompt + chain  # the judge reads the problem only
  targets = tok.decode([t for t, m in zip(ex["tokens"][:n], ex["loss_mask"][:n]) if m],
                       skip_special=False)
  assert targets == "<calc>37+45</calc>>Y\n<calc>82*3</calc>>N\n<eos>"
  weights = {tok.decode([t]): float(m) for t, m in zip(ex["tokens"][:n], ex["loss_mask"][:n]) if m}
  assert weights["Y"] == 2.0 and weights["N"] == 5.0 and weights["<"] == 1.0
  copy = judge_task.chain_for(PROBLEM, steps, tool=True, style="copy")
  ex = training.chain_example(judge, PROBLEM.prompt, steps, copy, 128,
                              template=judge_task.COPY_TEMPLATE)
  n = int(ex["attention_mask"].sum())
  assert tok.decode(ex["tokens"][:n]) == PROBLEM.prompt + "".join(s + "\n" for s in steps) + copy
  targets = tok.decode([t for t, m in zip(ex["tokens"][:n], ex["loss_mask"][:n]) if m],
                       skip_special=False)
  assert targets == copy.replace("</calc>=82Y", "</calc>Y").replace("</calc>=246N", "</calc>N") \
      + "<eos>"
  assert training.chain_example(judge, PROBLEM.prompt, steps, chain, 30) is None


def test_extending_the_vocabulary_keeps_the_policys_logits():
  config = models.tiny_config(vocab_size=24, hidden_size=32, num_layers=1, num_heads=2,
                              num_kv_heads=2, intermediate_size=64, max_position_embeddings=64)
  params = models.init_params(config, jax.random.key(0))
  big_config, big = judge_task.extend_vocabulary(config, params, 32, jax.random.key(1),
                                                 max_positions=128)
  assert big_config.vocab_size == 32 and big_config.max_position_embeddings == 128
  tokens = np.array([[1, 5, 9, 12, 3]], np.int32)
  old = models.logits(config, params, tokens)
  new = models.logits(big_config, big, tokens)
  np.testing.assert_allclose(new[..., :24], old, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="cannot shrink"):
    judge_task.extend_vocabulary(config, params, 16, jax.random.key(1))
