"""`experiments/eval_rm.py --judge`: benchmark files scored by a generative judge (a tiny
random causal LM with a byte-level BPE tokenizer and a chat template)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_tokenizers import CHAT_TEMPLATE, _save_bpe

import rewardlab
from rewardlab import judges, models
from rewardlab.eval import judge_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("judge")
  tok = _save_bpe(path, chat_template=CHAT_TEMPLATE)
  config = models.tiny_config(vocab_size=-(-len(tok) // 8) * 8, hidden_size=32, num_layers=1,
                              num_heads=2, num_kv_heads=2, intermediate_size=64,
                              max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                              pad_token_id=0)
  rewardlab.save_pretrained(str(path), config, models.init_params(config, jax.random.key(0)))
  return str(path)


@pytest.mark.slow  # ~35 s on the loaded 2-core CPU (a subprocess imports JAX and compiles)
def test_cli_pairwise_judge_writes_accuracy_and_position_consistency(judge_dir, tmp_path):
  data = os.path.join(FIXTURES, "preference_strings.jsonl")
  subprocess.run([sys.executable, os.path.join(REPO, "experiments", "eval_rm.py"),
                  f"--judge={judge_dir}", "--judge_mode=pairwise", "--format=preference",
                  f"--data={data}", f"--out={tmp_path}"], check=True, cwd=REPO,
                 env={**os.environ, "PYTHONPATH": REPO}, capture_output=True)
  report = json.load(open(tmp_path / "report.json"))
  assert report["judge_mode"] == "pairwise" and report["num_pairs"] == 4
  assert report["unparsed"] == 0 and report["tokens_generated"] == 0
  # the same numbers as the library call: chosen is A, judged in both orders
  judge = judges.JudgeModel.load(judge_dir)
  rows = [json.loads(line) for line in open(data)]
  prefs = judges.preferences(judge, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
                             [r["rejected"] for r in rows])
  assert report["pairwise_accuracy"] == pytest.approx(float(np.mean(prefs.p_a > 0.5)))
  assert report["position_consistency"] == pytest.approx(prefs.position_consistency)
  assert os.path.exists(tmp_path / "report_reliability.png")


def test_pointwise_critiques_that_never_parse_are_counted_not_scored(judge_dir):
  judge = judges.JudgeModel.load(judge_dir)
  report = judge_files.evaluate_files_with_judge(
      [os.path.join(FIXTURES, "rewardbench.jsonl")], "rewardbench", judge, mode="pointwise",
      num_samples=2, max_new_tokens=8, seed=0)
  # a random model does not write "Verdict: Yes/No": every critique is unparsed
  assert report["unparsed"] == 2 * 2 * report["num_pairs"]
  assert report["unscored_pairs"] == report["num_pairs"] and report["pairwise_accuracy"] == 0.0
  assert report["tokens_generated"] > 0 and "overall" in report


def test_rewardbench2_round_robin_and_direct_pointwise(judge_dir):
  judge = judges.JudgeModel.load(judge_dir)
  path = [os.path.join(FIXTURES, "rewardbench2.jsonl")]
  pair = judge_files.evaluate_files_with_judge(path, "rewardbench2", judge, mode="pairwise")
  point = judge_files.evaluate_files_with_judge(path, "rewardbench2", judge, mode="pointwise")
  for report in (pair, point):
    assert set(report["subsets"]) == {"Factuality", "Precise IF", "Ties"}  # overall: NaN,
    assert 0.0 <= report["subsets"]["Factuality"] <= 1.0  # the fixture lacks 3 subsets
  assert 0.0 <= pair["position_consistency"] <= 1.0 and "position_consistency" not in point


@pytest.mark.slow  # ~35 s on the loaded 2-core CPU
def test_cli_steps_mode_with_a_replaced_template(judge_dir, tmp_path):
  template = tmp_path / "template.json"
  template.write_text(json.dumps({"user": "{prompt}\n{steps}", "yes": ["Y"], "no": ["N"],
                                  "step_format": "{step}\n"}))
  subprocess.run([sys.executable, os.path.join(REPO, "experiments", "eval_rm.py"),
                  f"--judge={judge_dir}", "--judge_mode=steps", "--format=processbench",
                  f"--data={os.path.join(FIXTURES, 'processbench.jsonl')}", f"--out={tmp_path}",
                  f"--judge_template={template}", "--num_samples=2", "--max_new_tokens=16"],
                 check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True)
  report = json.load(open(tmp_path / "report.json"))
  assert report["num_solutions"] == 3 and "processbench_f1" in report
  assert report["tokens_generated"] > 0
  assert report["unparsed"] <= 2 * 3 and report["unjudged_steps"] >= 0


def test_mode_must_fit_the_format(judge_dir):
  judge = judges.JudgeModel.load(judge_dir)
  with pytest.raises(ValueError, match="does not fit format"):
    judge_files.evaluate_files_with_judge([os.path.join(FIXTURES, "processbench.jsonl")],
                                          "processbench", judge, mode="pairwise")
