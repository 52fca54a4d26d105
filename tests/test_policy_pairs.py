"""rewardlab.train.policy_pairs (experiments/policy_pairs.py): a policy's samples checked by the task, (right, wrong)
pairs per problem, and files the reward-model reader accepts."""

import json
import os

import pytest

from experiments.configs import policy_pairs as pairs_config
from rewardlab.data import formats
from rewardlab.search.policy import Completion
from rewardlab.train import policy_pairs

GSM8K_ROWS = [
    {"question": "Ann has 3 apples and gets 4 more. How many apples?",
     "answer": "3+4 = 7\n#### 7"},
    {"question": "A box holds 2 pens. How many pens in 3 boxes?", "answer": "3*2 = 6\n#### 6"},
    {"question": "Tim had 9 cards and gave away 5. How many are left?",
     "answer": "9-5 = 4\n#### 4"},
]
# Per problem, the scripted policy's four samples (the answer after ####).
ANSWERS = [["7", "8", "7", "9"],     # 2 right, 2 wrong -> 2 pairs (pairs_per_problem=2)
           ["6", "6", "6", "6"],     # all right -> no pair
           ["1", "2", "4", "3"]]     # 1 right, 3 wrong -> 1 pair


class ScriptedPolicy:
  def __init__(self, *args, **kwargs):
    self.calls = []

  def sample(self, prompts, n, *, max_new_tokens, temperature, stop_at_step, rng):
    self.calls.append(len(prompts))
    out = []
    for prompt in prompts:
      index = next(i for i, r in enumerate(GSM8K_ROWS) if r["question"] in prompt)
      out.append([Completion(f"x = {a}\n#### {a}", 5, True) for a in ANSWERS[index][:n]])
    return out


def test_pairs_are_right_wrong_samples_of_one_problem_and_read_as_preference(tmp_path,
                                                                           monkeypatch):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
  monkeypatch.setattr(policy_pairs.sft, "load_policy", lambda d: (None, None, None))
  monkeypatch.setattr(policy_pairs, "LMPolicy", ScriptedPolicy)
  cfg = pairs_config.get_config()
  cfg.task.name, cfg.task.train_files = "math", str(path)
  cfg.policy_dir, cfg.samples, cfg.batch_problems, cfg.progress = "unused", 4, 2, False
  summary = policy_pairs.run(cfg, str(tmp_path / "out"))

  assert summary["problems"] == 3 and summary["pairs"] == 3
  assert summary["sample_accuracy"] == pytest.approx(7 / 12)
  assert summary["pass@4"] == 1.0
  assert (summary["problems_all_right"], summary["problems_all_wrong"]) == (1, 0)
  assert summary["generated_tokens"] == 12 * 5
  pairs, stats = formats.read_records(summary["files"]["preference"], "preference")
  assert len(pairs) == 3 and stats.kept == 3 and not stats.skipped
  rows = [json.loads(l) for l in open(summary["files"]["preference"])]
  assert [(r["chosen"][-1], r["rejected"][-1]) for r in rows] == [("7", "8"), ("7", "9"),
                                                                  ("4", "1")]
  assert rows[0]["problem"] == rows[1]["problem"] != rows[2]["problem"]
  samples = [json.loads(l) for l in open(summary["files"]["samples"])]
  assert [s["correct"] for s in samples] == [[True, False, True, False], [True] * 4,
                                             [False, False, True, False]]
  assert all(GSM8K_ROWS[i]["question"] in s["prompt"] for i, s in enumerate(samples))
  assert os.path.exists(tmp_path / "out" / "summary.json")


def test_fewer_than_two_samples_is_refused(tmp_path):
  cfg = pairs_config.get_config()
  cfg.samples = 1
  with pytest.raises(ValueError, match="samples \\(1\\) must be >= 2"):
    policy_pairs.run(cfg, str(tmp_path))
