"""The end-to-end experiment on the synthetic arithmetic task (CPU), stage by stage.

sft -> rollouts -> labels (Monte-Carlo + OmegaPRM) -> rm_orm, rm_prm, rm_genarm -> tts
-> rl (GRPO) -> report. Every reward model starts from the SFT policy's weights (the
usual practice: the policy already reads the task) and trains on the policy's own
samples: the outcome RM and GenARM on (right, wrong) pairs from the rollouts, the PRM
on the Monte-Carlo step labels. Held-out evaluation sets come from problems of the
test split that no stage trains on.

The SFT stage copies the policy shipped in `experiments/assets/sft_policy` (made by
`experiments/sft.py` with `experiments/configs/sft.py` at 2,000 steps: 86% held-out greedy
accuracy, 91/83/83% at 2/3/4 operations) unless `sft.from_scratch` is set (`--from_scratch` on the command line),
which trains it here first.

Run:      python experiments/pipeline.py --workdir runs/demo
Runtime:  see README (measured on the 2-core CPU); `--from_scratch` adds the SFT run.

A given policy on problem files (GSM8K / MATH / prompt_answer; `rewardlab.tasks.source`):
    python experiments/pipeline.py --workdir runs/gsm8k --config.policy_dir=DIR \
        --config.task.name=math --config.task.format=gsm8k \
        --config.task.train_files=train.jsonl --config.task.eval_files=test.jsonl
DIR is any local Hugging Face directory with its tokenizer (its chat template wraps the
prompts unless `task.chat_template=False`); it replaces the SFT stage and every reward model
starts from it. The problem counts below take the first rows of the files (0 = all);
`rollouts.max_new_tokens` bounds every stage's samples; prompt widths and reward-model lengths
follow the longest prompt. The PRM's held-out step labels are exact where the rows carry
`intermediates` (`python -m rewardlab.tasks.word_problems`); otherwise it is tested on the
Monte-Carlo labels of the last quarter of the labelled problems, which it does not train on.
Not timed at real-model size.
"""

import ml_collections
from ml_collections import config_dict

from rewardlab.tasks import source


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.compilation_cache = True  # persistent XLA cache in <workdir>/jax_cache: reruns skip compiles
  # Device mesh (data, fsdp, tensor) for the labels and tts stages' sampling and scoring
  # (their `mesh_shape`); None runs them on one device. The results do not depend on it.
  c.mesh_shape = config_dict.placeholder(tuple)
  # The problems of every stage (rewardlab/tasks/source.py): the synthetic task, or problem
  # files (task.name=math) with a given policy_dir.
  c.task = source.config()
  c.policy_dir = ""  # a local HF directory: the policy of every stage instead of the SFT stage's

  c.sft = ml_collections.ConfigDict()
  c.sft.from_scratch = False
  c.sft.shipped_dir = "experiments/assets/sft_policy"
  c.sft.steps = 2000  # from_scratch only: experiments/configs/sft.py with these steps

  c.rollouts = ml_collections.ConfigDict()
  c.rollouts.num_train_problems = 768
  c.rollouts.num_eval_problems = 128
  c.rollouts.samples = 8
  c.rollouts.temperature = 1.0
  c.rollouts.max_new_tokens = 56  # the longest right K=4 solution is 51 tokens with EOS
  c.rollouts.pairs_per_problem = 2
  c.rollouts.batch_size = 64  # prompts per sampler call

  c.labels = ml_collections.ConfigDict()
  c.labels.num_problems = 96
  c.labels.num_solutions = 8
  c.labels.mc_completions = 8
  c.labels.omegaprm_budget = 96
  c.labels.omegaprm_rollouts_per_state = 8
  c.labels.train_on = ("mc",)  # label sets the PRM trains on: mc and/or omegaprm
  c.labels.target = "hard"  # Math-Shepherd's hard estimate 1[some completion succeeds], or "soft"

  c.rm = ml_collections.ConfigDict()
  c.rm.steps = 100
  c.rm.batch_size = 32
  c.rm.learning_rate = 3e-4
  c.rm.warmup_steps = 15
  c.rm.lm_coef = 0.0
  c.rm.genarm_learning_rate = 3e-5  # GenARM starts as the policy; faster rates overfit the pairs
  c.rm.genarm_beta = 0.05
  # The PRM's head: "genarm" reads step k as prm_beta x (the response's log-prob up to
  # step k) + a bias (starting at prm_bias), so it starts as the policy's own likelihood;
  # "classifier" is a linear head on the hidden state at the step's separator.
  c.rm.prm_form = "genarm"
  c.rm.prm_beta = 1.0
  c.rm.prm_bias = 2.0
  c.rm.prm_learning_rate = 3e-5  # the genarm form trains the LM itself, as GenARM does
  c.rm.prm_head_lr_multiplier = 300.0  # its bias learns at ~1e-2

  c.tts = ml_collections.ConfigDict()
  c.tts.num_problems = 128
  c.tts.problem_seed = 4242
  c.tts.n_max = 8
  c.tts.methods = ("majority", "best_of_n_orm", "best_of_n_prm", "weighted_best_of_n_orm",
                   "weighted_best_of_n_prm", "beam_search", "dvts", "qalign", "genarm")
  c.tts.beam_width = 4
  c.tts.qalign_beta = 0.5
  c.tts.genarm_temperature = 1.0

  c.rl = ml_collections.ConfigDict()
  c.rl.steps = 100
  c.rl.rollout_batch = 32
  c.rl.update_groups = 16
  c.rl.group_size = 8
  c.rl.learning_rate = 5e-5
  c.rl.eval_every = 25
  c.rl.eval_num_per_k = 100  # held-out greedy pass@1 on 3 x 100 problems (files: the first 100)
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A test-sized run: the shipped policy, a handful of problems and steps per stage."""
  c = get_config().unlock()
  c.progress = False
  c.compilation_cache = False
  c.task.num_ops = (2,)
  c.rollouts.num_train_problems, c.rollouts.num_eval_problems = 16, 8
  c.rollouts.samples, c.rollouts.max_new_tokens = 4, 40
  c.labels.num_problems, c.labels.num_solutions = 2, 2
  c.labels.mc_completions, c.labels.omegaprm_budget = 2, 8
  c.labels.omegaprm_rollouts_per_state = 2
  c.rm.steps, c.rm.batch_size, c.rm.warmup_steps = 2, 4, 1
  c.tts.num_problems, c.tts.n_max, c.tts.beam_width = 2, 2, 2
  c.rl.steps, c.rl.rollout_batch, c.rl.update_groups, c.rl.group_size = 2, 2, 1, 2
  c.rl.eval_every, c.rl.eval_num_per_k = 1, 2
  return c.lock()
