"""Samples of a policy and (right, wrong) pairs from them: see experiments/policy_pairs.py.

Runtime: SmolLM2-135M-Instruct, 300 GSM8K-format problems x 8 samples of <= 64 tokens:
see experiments/results/smollm2/README.md (the outcome-RM section).
"""

import ml_collections

from rewardlab.tasks import source


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.policy_dir = ""          # an SFT policy directory or a local Hugging Face directory
  c.task = source.config()   # problems and prompts (rewardlab.tasks.source)
  c.split = "train"          # the task split sampled ("train" | "test")
  c.num_problems = 300       # the first problems of the split (files: 0 = all)
  c.samples = 8              # completions per problem
  c.temperature = 0.7
  c.max_new_tokens = 64
  c.pairs_per_problem = 2    # (right, wrong) pairs kept per problem, in sample order
  c.batch_problems = 32      # problems per sampler call (x samples rows)
  return c
