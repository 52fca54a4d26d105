"""Generative step verifiers on the synthetic arithmetic task (issue 16): checker-made
chain SFT, ThinkPRM-style filtered self-generated chains from few labels, GRPO of the
judge, a calculator tool; against PRMs from `experiments/pipeline.py` when `prm_dirs`
names them; best-of-N, step-error F1, calibration, the judge-compute curve and claims.

Run:      python experiments/verifiers.py --config experiments/configs/verifiers.py \
              --workdir runs/verifiers
          (add --config.prm_dirs='{"mc": "runs/demo/rm_prm/reward_model"}' to compare a PRM)
Runtime:  2,420 s measured on the 2-core CPU shared with other jobs (load average 10-19);
          resumable: rerun the same command after an interruption.
Expected: (measured, experiments/results/verifiers/) step-error F1 0.29 and step AUROC 0.72
          for the tool verifier, ~0 for the verifiers without the tool, 0.52 / 0.97 for the
          untrained GenARM-form PRM; best-of-8 78% (untrained judge) down to 53% (filtered).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.policy_dir = "experiments/assets/sft_policy"
  c.num_ops = (2, 3, 4)
  c.prm_dirs = ml_collections.ConfigDict()  # name -> saved PRM directory (optional)
  c.policy_likelihood_prm = True  # also the untrained GenARM-form PRM (the policy's likelihood)

  c.data = ml_collections.ConfigDict()
  c.data.train_problems = 256
  c.data.train_samples = 4  # policy samples per training problem (temperature 1)
  c.data.corrupt_fraction = 1.0  # plus one checker-corrupted solution for this share of problems
  c.data.eval_problems = 32

  c.verifier = ml_collections.ConfigDict()
  c.verifier.max_positions = 256  # tool chains of 4-operation problems need ~230

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 200
  c.sft.batch_size = 16
  c.sft.learning_rate = 2e-3

  c.few = ml_collections.ConfigDict()
  c.few.labels = 32  # labelled solutions with checker chains (the cold start)
  c.few.filter_labels = 96  # labelled solutions whose self-generated chains are filtered
  c.few.filter_samples = 4
  c.few.steps = 50

  c.grpo = ml_collections.ConfigDict()
  c.grpo.steps = 10
  c.grpo.batch_size = 8
  c.grpo.group_size = 8
  c.grpo.learning_rate = 1e-4

  c.tool = ml_collections.ConfigDict()
  c.tool.enabled = True

  c.eval = ml_collections.ConfigDict()
  c.eval.n_max = 8
  c.eval.max_new_tokens = 96
  c.eval.aggregation = "min"
  c.eval.n_bins = 15

  c.compute_curve = ml_collections.ConfigDict()
  c.compute_curve.verifier = "sft_few"
  c.compute_curve.max_k = 4
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A test-sized run (seconds of training; numbers meaningless)."""
  c = get_config().unlock()
  c.progress = False
  c.num_ops = (2,)
  c.data.train_problems, c.data.train_samples, c.data.eval_problems = 8, 2, 3
  c.sft.steps, c.sft.batch_size = 3, 4
  c.few.labels, c.few.filter_labels, c.few.filter_samples, c.few.steps = 4, 4, 2, 2
  c.grpo.steps, c.grpo.batch_size, c.grpo.group_size = 2, 2, 2
  c.eval.n_max, c.eval.max_new_tokens = 2, 32
  c.compute_curve.max_k = 2
  return c.lock()
