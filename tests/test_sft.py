"""SFT end to end at a tiny size, including exact resume after an interruption."""

import json

import jax
import numpy as np

from experiments.configs import sft as sft_config
from rewardlab.tasks import arithmetic
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.train import sft


def test_encode_example_masks_the_solution_only():
  tok = CharTokenizer.for_arithmetic()
  problem = arithmetic.Problem(start=3, ops=(("+", 4), ("*", 2)))
  ex = sft.encode_example(tok, problem, 40)
  n_prompt = 1 + len(problem.prompt)
  n_total = n_prompt + len(problem.solution) + 1
  assert ex["loss_mask"][:n_prompt].sum() == 0
  assert ex["loss_mask"][n_prompt:n_total].all() and ex["loss_mask"][n_total:].sum() == 0
  assert tok.decode(ex["tokens"][n_prompt:n_total]) == problem.solution
  assert ex["tokens"][n_total - 1] == tok.eos_id


def test_interrupted_run_resumes_exactly(tmp_path):
  cfg = sft_config.tiny()
  full = sft.run(cfg, str(tmp_path / "full"))
  assert full["steps"] == cfg.train.steps
  partial = sft.run(cfg, str(tmp_path / "resumed"), stop_after=4)
  assert partial == {"stopped_at": 4}
  resumed = sft.run(cfg, str(tmp_path / "resumed"))
  _, p_full, _ = sft.load_policy(full["policy_dir"])
  _, p_resumed, _ = sft.load_policy(resumed["policy_dir"])
  for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The log of the resumed run continues where the interrupted one stopped.
  steps = [json.loads(l)["step"] for l in open(tmp_path / "resumed" / "train_metrics.jsonl")]
  assert steps == [2, 4, 6]
  report = json.loads((tmp_path / "full" / "sft_results.json").read_text())
  assert 0.0 <= report["accuracy"] <= 1.0 and "accuracy_k4" in report
