"""Test-time scaling on the synthetic arithmetic task: every method, N = 1 ... N_max.

Needs an SFT policy (`experiments/sft.py`) and, for the reward-guided methods, reward
models (`experiments/train_rm.py` with rm_bt / rm_prm / rm_genarm), or the exact
oracle verifiers of the task (`--config.reward.oracle=True`, an upper bound).

Run:      python experiments/tts.py --config experiments/configs/tts.py --workdir runs/tts \
            --config.policy_dir=runs/sft/policy \
            --config.reward.outcome_dir=runs/rm_bt/reward_model \
            --config.reward.process_dir=runs/rm_prm/reward_model \
            --config.reward.guide_dirs="('runs/rm_genarm/reward_model',)"
          On GSM8K-format files with a local Hugging Face model (its own tokenizer and chat
          template): --config.policy_dir=<hf dir> --config.task.name=math
            --config.task.format=gsm8k --config.task.eval_files=test.jsonl
            --config.problems.num=200 --config.sampling.max_new_tokens=256
Runtime:  ~10-20 minutes on a 2-core CPU for 100 problems and N_max = 16 (beam search and
          DVTS run once per N and dominate; each new prompt width compiles once). Measured:
          16 problems, N_max = 8, 6 methods: 2 minutes on a busy 2-core machine.
Expected: accuracy rises with N for the reward-guided methods. With the oracle verifiers
          best-of-N nearly reaches pass@N (the ceiling; the oracle PRM rejects a right answer
          reached through a wrong step) while majority vote gains much less. Measured on 16
          problems with a 1,000-step SFT policy (N = 1 -> 8): majority 25 -> 44%, best-of-N
          25 -> 69% (pass@8: 75%), beam search 44 -> 56%, DVTS 25 -> 63%, QAlign 19 -> 31%
          (beta = 1 is a weak tilt for a 0/1 oracle reward; try 0.1).
          Methods whose reward model is missing are listed under "skipped" in
          tts_results.json.
"""

import ml_collections
from ml_collections import config_dict

from rewardlab.tasks import source


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.task = source.config()  # problems and prompts (rewardlab/tasks/source.py); the test split
  c.policy_dir = ""  # an SFT policy directory (<sft workdir>/policy) or any local HF model dir
  # Device mesh (data, fsdp, tensor), e.g. "(2,2,2)"; None runs on one device. The policy and
  # reward models are placed by the logical rules; sampling and scoring rows are sharded
  # over the data axes, and the results equal the single-device ones.
  c.mesh_shape = config_dict.placeholder(tuple)
  c.methods = ("majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts", "qalign",
               "genarm")
  c.n_max = 16
  c.batch_size = 64  # prompts per policy call when drawing N_max samples

  c.problems = ml_collections.ConfigDict()
  c.problems.num = 100  # held-out problems (task split "test"); files: 0 = all
  c.problems.seed = 4242  # arithmetic generation only

  c.reward = ml_collections.ConfigDict()
  c.reward.oracle = False  # exact verifiers of the task as ORM and PRM (math: the PRM needs
                           # per-step intermediates, as in word_problems files)
  c.reward.outcome_dir = ""
  c.reward.process_dir = ""
  c.reward.guide_dirs = ()  # GenARM reward LMs for guided decoding
  c.reward.alphas = ()  # one weight per guide (default 1.0 each)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 1.0
  c.sampling.max_new_tokens = 64

  c.bon = ml_collections.ConfigDict()  # best-of-N and weighted best-of-N
  c.bon.reward = "auto"  # prm if a process scorer is given, else orm
  c.bon.aggregation = "last"

  c.beam = ml_collections.ConfigDict()
  c.beam.width = 4
  c.beam.step_tokens = 24
  c.beam.max_steps = 8
  c.beam.lookahead = 0
  c.beam.aggregation = "last"
  c.beam.select = "best_of_n"  # or weighted_best_of_n / majority over the finished beams
  c.beam.dedupe = True

  c.dvts = ml_collections.ConfigDict()
  c.dvts.width = 4
  c.dvts.step_tokens = 24
  c.dvts.max_steps = 8
  c.dvts.lookahead = 0
  c.dvts.aggregation = "last"
  c.dvts.select = "weighted_best_of_n"

  c.qalign = ml_collections.ConfigDict()
  c.qalign.beta = 1.0
  c.qalign.burn_in = 0.2
  c.qalign.unit = "token"
  c.qalign.reward = "auto"
  c.qalign.aggregation = "last"

  c.genarm = ml_collections.ConfigDict()
  c.genarm.temperature = 0.5
  c.genarm.alphas = ()  # default: reward.alphas
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A seconds-long variant for tests (a random policy is passed in by the test)."""
  c = get_config().unlock()
  c.problems.num, c.task.num_ops = 2, (2,)
  c.n_max, c.batch_size = 2, 2
  c.sampling.max_new_tokens = 12
  c.genarm.temperature = 1.0  # the shapes of the plain draw: no extra compile
  for key in ("beam", "dvts"):
    c[key].width, c[key].step_tokens, c[key].max_steps = 2, 12, 2
  c.progress = False
  return c.lock()
