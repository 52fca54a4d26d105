"""A tiny end-to-end run of experiments/verifiers.py (numbers meaningless): every
verifier is trained and evaluated, the claims and the PNG are written, and a rerun
resumes from the saved stages."""
import json
import os

import pytest

from experiments.configs import verifiers as verifiers_config
from rewardlab.judges import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # 18 min at load 13 on the shared 2-core CPU, 4-7 min before (six verifiers, beam search)
def test_tiny_verifiers_experiment_end_to_end_and_resumes(tmp_path):
  cfg = verifiers_config.tiny().unlock()
  cfg.policy_dir = os.path.join(REPO, cfg.policy_dir)
  cfg.lock()
  out = experiment.run(cfg, str(tmp_path))
  assert set(out["verifiers"]) == {"untrained", "sft", "sft_few", "filtered", "grpo", "tool",
                                   "prm_likelihood_untrained"}
  for r in out["verifiers"].values():
    assert len(r["bon_accuracy"]) == cfg.eval.n_max and r["tokens_per_solution"] > 0
  assert set(out["compute_curve"]) == {"1", "2"}
  assert set(out["beam_search"]) == {"sft", "prm_likelihood_untrained"}
  assert out["beam_search"]["sft"]["verifier_tokens_per_problem"] > 0
  assert out["train_data"]["wrong_solutions"] >= out["train_data"]["corrupted"]
  assert {c["verdict"] for c in out["claims"]} <= {"reproduced", "contradicted", "not resolved",
                                                   "not run"}
  assert os.path.exists(tmp_path / "verifiers.png")
  saved = json.load(open(tmp_path / "verifiers.json"))
  again = experiment.run(cfg, str(tmp_path))  # every stage reused
  assert json.dumps(again["verifiers"]) == json.dumps(saved["verifiers"])  # NaN-safe
