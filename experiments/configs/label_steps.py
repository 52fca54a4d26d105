"""Step labels without humans: Monte-Carlo (Math-Shepherd) and OmegaPRM on synthetic problems.

Run:      python experiments/label_steps.py --config experiments/configs/label_steps.py \
              --config.policy_dir runs/sft/policy --workdir runs/label_steps
          (--config.completer scripted labels with a scripted completer, no policy needed)
          Math files, e.g. GSM8K-format word problems with their per-step results, labelled by
          a local Hugging Face policy prompted through its chat template:
            python -m rewardlab.tasks.word_problems --out data/wp --num_train 200
            python experiments/label_steps.py --config experiments/configs/label_steps.py \
              --config.policy_dir <SmolLM2 dir> --config.task.name=math \
              --config.task.train_files=data/wp/train.jsonl --workdir runs/label_steps_math
Runtime:  ~2-3 minutes on a shared 2-core CPU with the SFT policy (200 problems x 8 solutions,
          ~12.5k completions at ~100 completions/s, plus ~1 minute of sampler compiles on a
          cold compilation cache); seconds with the scripted completer.
Expected: (measured with the 2,000-step SFT policy, 80% of its T=1 samples right) agreement of
          the implied first wrong step with the true one: MC N=8 0.97 at 38 completions per
          problem (0.87 on wrong solutions); OmegaPRM 0.97 at 16 per problem (0.84 on wrong
          solutions); MC N=4 0.96 at 19. summary.json has the full quality-vs-compute curves.
"""

import ml_collections
from ml_collections import config_dict

from rewardlab.tasks import source


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.task = source.config()  # the problems (rewardlab/tasks/source.py): arithmetic, or math
                            # files (task.name=math, task.train_files=...; data.split "train" /
                            # "test" picks train_files / eval_files)
  c.compilation_cache_dir = "runs/jax_cache"  # persistent XLA cache ("" = off): reruns skip compiles
  c.completer = "policy"             # "policy" (SFT policy at policy_dir) or "scripted"
  c.policy_dir = "runs/sft/policy"  # an SFT policy or any local Hugging Face model directory
  # Device mesh (data, fsdp, tensor) for the policy completer, e.g. "(8,1,1)"; None runs on
  # one device. The completions are sharded over the data axes and equal the unsharded ones.
  c.mesh_shape = config_dict.placeholder(tuple)
  c.scripted_fail_probs = (0.1, 0.15, 0.2, 0.25)  # per-step slip probabilities ("scripted";
                                                  # math files need their intermediates)
  c.methods = ("mc", "omegaprm")
  c.num_solutions = 8                # policy samples labelled per problem (temperature 1)
  c.problems_per_batch = 16          # problems whose requests share completer calls

  c.data = ml_collections.ConfigDict()
  c.data.num_problems = 200          # math files: the first ones (0 = all)
  c.data.seed = 2000                 # arithmetic generation only
  c.data.split = "train"             # "train", "test" or "" for both (arithmetic only)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 1.0
  c.sampling.max_new_tokens = 64
  c.sampling.batch_size = 16         # prefixes per generate call (x n samples each)

  c.mc = ml_collections.ConfigDict()
  c.mc.num_completions = 8           # N
  c.mc.quality_levels = (1, 2, 4, 8)  # N' <= N evaluated from the same samples

  c.omegaprm = ml_collections.ConfigDict()
  c.omegaprm.c_puct = 0.125
  c.omegaprm.alpha = 0.5
  c.omegaprm.beta = 0.9
  c.omegaprm.length_scale = 500.0
  c.omegaprm.rollouts_per_state = 8  # k (SPECS default 16; 8 matches the paper and MC's N)
  c.omegaprm.max_searches = 20
  c.omegaprm.rollout_budget = 200
  c.omegaprm.quality_levels = (8, 16, 32, 48, 64, 96, 128)  # budgets replayed from the tree
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A seconds-long variant for tests (scripted completer, 4 problems)."""
  c = get_config().unlock()
  c.progress = False
  c.compilation_cache_dir = ""
  c.completer = "scripted"
  c.num_solutions = 4
  c.problems_per_batch = 1
  c.data.num_problems = 4
  c.task.num_ops = (3,)
  c.mc.num_completions = 4
  c.mc.quality_levels = (1, 2, 4)
  c.omegaprm.rollouts_per_state = 4
  c.omegaprm.max_searches = 4
  c.omegaprm.rollout_budget = 32
  c.omegaprm.quality_levels = (8, 16)
  c.sampling.max_new_tokens = 24
  c.sampling.batch_size = 8
  return c.lock()
