"""The pairwise judge on a real model: SmolLM2-135M-Instruct (issue 8), both orders, through
`experiments/eval_rm.py`'s library path. Uses the SmolLM2 tests' own fixture (one shared
conversion); skipped until `rewardlab/assets/smollm2.py` and `tests/test_smollm2.py` (branch
smollm2) are merged, and by that fixture when the packages it needs are missing."""
import os

import numpy as np
import pytest

test_smollm2 = pytest.importorskip(
    "test_smollm2", reason="needs tests/test_smollm2.py and rewardlab/assets/smollm2.py "
    "(branch smollm2); lifted when that branch is merged")
smollm2_dir = test_smollm2.smollm2_dir

from rewardlab import judges  # noqa: E402
from rewardlab.eval import judge_files  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.slow
def test_pairwise_judge_on_smollm2(smollm2_dir):
  judge = judges.JudgeModel.load(smollm2_dir)
  assert judge.tokenizer.has_chat_template
  report = judge_files.evaluate_files_with_judge(
      [os.path.join(FIXTURES, "preference_strings.jsonl")], "preference", judge, mode="pairwise")
  assert report["num_pairs"] == 4 and report["unparsed"] == 0
  assert 0.0 <= report["pairwise_accuracy"] <= 1.0
  assert 0.0 <= report["position_consistency"] <= 1.0
  prefs = judges.preferences(judge, ["2 + 2 ="], [" 4"], [" 5"])
  assert 0.0 < prefs.q1[0] < 1.0 and 0.0 < prefs.q2[0] < 1.0
  np.testing.assert_allclose(prefs.p_a, (prefs.q1 + 1 - prefs.q2) / 2)
