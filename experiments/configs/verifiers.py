"""Generative step verifiers on the synthetic arithmetic task (issue 16): checker-made
chain SFT, ThinkPRM-style filtered self-generated chains from few labels, GRPO of the
judge, a calculator tool; against PRMs from `experiments/pipeline.py` when `prm_dirs`
names them (the pipeline's PRM from Monte-Carlo labels); best-of-N, beam search,
step-error F1, calibration, the judge-compute curve and claims.

Run:      python experiments/verifiers.py --config experiments/configs/verifiers.py \\
              --workdir runs/verifiers \\
              --config.prm_dirs='{"mc": "runs/demo/rm_prm/reward_model"}'
          (`runs/demo` from `make demo`: its policy is the one shipped in
          experiments/assets/sft_policy, the `policy_dir` here, so the PRM was trained on
          this policy's samples)
Runtime:  see experiments/results/verifiers/README.md (2-core CPU); resumable: rerun the
          same command after an interruption.

What changed since the first measured run (experiments/results/verifiers/README.md,
"previous run"), where no trained verifier learned to verify (the `sft` verifier copied
the written value, so it said "Y" to wrong lines):

* Chain format (`verifier.style = "reveal"`, `judges/arithmetic.py`): the judge reads the
  problem only and, for each line, first writes the line as it should be (the policy's own
  `a*b=c` form), then `>`; only then does the framework write the value the solution's
  line states (read, not generated: `judges/steps.revealed_chains`), and the judge writes
  Y / N. The judge cannot copy the written value while it recomputes, because it has not
  seen it. A probe with the solution in the prompt and the judge copying the written
  value itself after its recomputation (`48+98=146>146Y`) still said Y to every wrong
  line: it copied its own recomputed value as "the written value".
* Balanced training data (`data.wrong_share = 0.5`): checker-corrupted solutions (mostly
  slips, as the policy's own errors are; `data.corrupt_kinds`) are added until half the
  training solutions are wrong (the policy's samples alone: ~20%). Chains end at the first
  wrong line, so ~16% of the judged lines are wrong.
* Verdict loss weights (`sft.verdict_weights = (2, 8)`): Y / N verdict tokens weigh 2 / 8
  in the SFT loss (the recomputed digits weigh 1), so the rare N verdicts carry about as
  much of the loss as the Y verdicts. Probe (150 steps, lr 2e-3, 16 held-out problems):
  step-error F1 0.39 (0.00 without the reveal format and weights).
* A shorter context (`verifier.max_positions = 160`; the longest tool chain with its
  problem is ~135 tokens), so SFT batches cost ~40% less than at 256.
* SFT: `sft.steps = 200` (the first run's loss was still falling at 200; the probes' too).
* Few labels (ThinkPRM): `few.labels = 32` checker chains, then `few.filter_labels = 96`
  labelled solutions whose self-generated chains (4 samples each) are kept when their
  verdicts match the labels; `few.steps` / `few.filter_steps` = 60.
* GRPO: `grpo.reward = "verdicts"`: the share of the label's per-line verdicts the chain
  got right (partial credit, `judges/training.verdict_reward`) instead of 1 only for an
  exact first-wrong-line match, whose groups were mostly all-0 (no advantage, no
  gradient); 20 steps (10 before); only the judge's own tokens get the policy gradient.
* The judge-compute curve uses the `sft` verifier (the first run's `sft_few` had no
  signal to scale).
* Beam search (`beam`): n = 4 beams of width 2 on the first 16 held-out problems, with the
  `sft` and `tool` verifiers and the PRMs as process scorers; the search budget counts
  every verifier token (read + generated), reported next to the accuracy.
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
  c.data.wrong_share = 0.5  # corrupted solutions are added until this share is wrong
  c.data.corrupt_kinds = ("slip", "slip", "slip", "copy", "skip")  # drawn uniformly
  c.data.eval_problems = 32

  c.verifier = ml_collections.ConfigDict()
  c.verifier.max_positions = 160
  c.verifier.style = "reveal"  # or "copy" (the first run's format)

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 200
  c.sft.batch_size = 16
  c.sft.learning_rate = 2e-3
  c.sft.verdict_weights = (2.0, 8.0)  # loss weight of the Y / N verdict tokens

  c.few = ml_collections.ConfigDict()
  c.few.labels = 32  # labelled solutions with checker chains (the cold start)
  c.few.filter_labels = 96  # labelled solutions whose self-generated chains are filtered
  c.few.filter_samples = 4
  c.few.steps = 60
  c.few.filter_steps = 60

  c.grpo = ml_collections.ConfigDict()
  c.grpo.steps = 20
  c.grpo.batch_size = 8
  c.grpo.group_size = 8
  c.grpo.learning_rate = 1e-4
  c.grpo.reward = "verdicts"  # or "exact" (1 only for the exact first wrong line)

  c.tool = ml_collections.ConfigDict()
  c.tool.enabled = True

  c.eval = ml_collections.ConfigDict()
  c.eval.n_max = 8
  c.eval.max_new_tokens = 96
  c.eval.aggregation = "min"
  c.eval.n_bins = 15

  c.compute_curve = ml_collections.ConfigDict()
  c.compute_curve.verifier = "sft"
  c.compute_curve.max_k = 4

  c.beam = ml_collections.ConfigDict()
  c.beam.problems = 16  # 0: no beam search
  c.beam.n = 4
  c.beam.width = 2
  c.beam.scorers = ("sft", "tool", "prm_mc", "prm_likelihood_untrained")  # absent ones skipped
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A test-sized run (seconds of training; numbers meaningless)."""
  c = get_config().unlock()
  c.progress = False
  c.num_ops = (2,)
  c.data.train_problems, c.data.train_samples, c.data.eval_problems = 8, 2, 3
  c.sft.steps, c.sft.batch_size = 3, 4
  c.few.labels, c.few.filter_labels, c.few.filter_samples = 4, 4, 2
  c.few.steps, c.few.filter_steps = 2, 2
  c.grpo.steps, c.grpo.batch_size, c.grpo.group_size = 2, 2, 2
  c.eval.n_max, c.eval.max_new_tokens = 2, 32
  c.compute_curve.max_k = 2
  c.beam.problems, c.beam.n, c.beam.width = 1, 2, 2
  c.beam.scorers = ("sft", "prm_likelihood_untrained")
  return c.lock()
