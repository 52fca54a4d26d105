"""GRPO with the verifier reward, from the SFT policy, on the synthetic arithmetic task (CPU).

Run:      python experiments/rl.py --config experiments/configs/rl_grpo.py \
              --config.policy_dir=runs/sft/policy --workdir runs/rl_grpo
Runtime:  ~11 minutes on the shared 2-core CPU at load average ~7.5 (100 steps; each
          samples 32 prompts x 8 and updates on 16 groups, informative ones first).
Expected: held-out greedy pass@1 rises over the SFT policy's; measured from the 2,000-step
          SFT policy (85.7%): 89.7% after 100 steps (+4.0 points, 651 s) and 90.7% after
          200 steps (+5.0, ~21 min). See rl_results.json `gain_pass1_greedy` and rl_curves.png.
          Learning rates of 1e-4 and above made the policy worse within 10-30 steps here.
Variant `weak` (`--config experiments/configs/rl_grpo.py:weak`): the 1,000-step SFT policy of
`experiments/configs/sft.py` (its default, written to runs/sft/policy; ~44% held-out greedy),
300 steps of 64 prompts x 8 samples, the update on 48 groups (informative first), old
log-probs from the sampler, the logged KL on every 8th completion, lr 1.5e-4 with a cosine
decay to 1.5e-5 (~2.8 s per step, ~14 minutes). Measured on the 2-core CPU, 300 held-out
problems (the seed also draws them), paired 95% CIs, gain at step 300: seed 0 44.0% -> 57.3%
(+13.3 [7.5, 19.2], 858 s), seed 1 45.3% -> 57.0% (+11.7 [5.9, 17.4], 825 s), seed 2
47.0% -> 60.7% (+13.7 [8.2, 19.1], 837 s), seed 3 42.3% -> 54.3% (+12.0 [6.0, 18.0], 830 s),
seed 4 42.3% -> 51.7% (+9.3 [3.7, 15.0], 840 s); mean +12.0. experiments/results/rl_weak/
holds the logs and curves. The previous 150-step variant (all groups, log-probs recomputed,
4.4 s per step) gained +6.3 to +11.0 (mean +8.7). Tried on seed 1 with a constant lr 1e-4
before that, all no better than +5: rollouts at temperature 0.7 (`algo.temperature`),
128 prompts per step updating on the 64 most informative groups, lr 2e-4 with rollouts at
0.7 (below the start after 75 steps).
Other variants by config (`--config.algo.loss=dapo`, `--config.algo.loss=gspo`,
`--config.algo.advantage=dr_grpo --config.algo.loss=dr_grpo`, `bnpo`, `rloo`, ...):
`algo.advantage` names the estimator (grpo = group std scale, grpo_batch, dr_grpo =
no scale, rloo) and `algo.loss` the normalization (grpo, bnpo, dr_grpo, dapo, gspo); clip
settings left unset take the chosen loss's own defaults.
Real checkpoints and problem files (the `task` section, rewardlab.tasks.source):
    python experiments/rl.py --config experiments/configs/rl_grpo.py --config.policy_dir=DIR \
        --config.task.name=math --config.task.format=gsm8k \
        --config.task.train_files=train.jsonl --config.task.eval_files=test.jsonl \
        --config.eval.num_problems=200 --config.rollout.max_prompt_length=256 \
        --config.rollout.max_new_tokens=128 --config.eval.max_new_tokens=128 --workdir runs/rl_math
LoRA: `--config.lora.rank=16` trains adapters only (π_ref = the base, no copy; merged export).
Mesh: `--config.mesh_shape="(2,2,2)"` (data, fsdp, tensor); the update's rows
(update_groups x group_size) must split over data x fsdp. It ends with the single-device
parameters (tests/test_mesh_scripts.py runs this command line on 8 fake CPU devices).
Variant `tiny` (`rl_grpo.py:tiny`): the seconds-long random policy of the tests (`shrink`).
DIR is any local Hugging Face directory with its tokenizer (its chat template wraps the
prompts unless `task.chat_template=False`); `data.num_train` / `eval.num_problems` take the
first rows of the files (0 = all). Not timed here at that size: see the SmolLM2 evidence.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import sft
from rewardlab.tasks import source


VARIANTS = ("", "weak", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant == "tiny":
    return tiny()
  if variant not in VARIANTS:
    raise ValueError(f"rl_grpo variant {variant!r}; expected one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.policy_dir = "runs/sft/policy"  # "" = a random policy of shape `model` (tests)

  # Used only when policy_dir is empty: the SFT config's model.
  c.model = ml_collections.ConfigDict(sft.get_config().model.to_dict())

  # Problems and prompts (rewardlab.tasks.source): the synthetic arithmetic task by default;
  # `task.name=math` with `task.format` / `task.train_files` / `task.eval_files` for files.
  c.task = source.config()

  c.data = ml_collections.ConfigDict()
  c.data.num_train = 20000       # training problems (files: the first ones, 0 = all)
  c.data.prompts = "train"       # "eval": the held-out prompts themselves, unlabeled (TTRL)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.batch_size = 32      # prompts sampled per step
  c.rollout.update_groups = 16   # groups per update, informative first (0: all sampled)
  c.rollout.group_size = 8       # G samples per prompt
  c.rollout.max_new_tokens = 52  # the longest correct K=4 solution is 51 tokens with EOS
  c.rollout.max_prompt_length = 20

  c.reward = ml_collections.ConfigDict()
  c.reward.name = "verifier"     # verifier | outcome_rm | prm_dense | ttrl
  c.reward.model_dir = ""        # reward model for outcome_rm / prm_dense
  c.reward.eta = 0.5             # Clip threshold η (prm_dense)
  c.reward.success_weight = 1.0  # outcome reward added at the end (prm_dense)

  c.algo = ml_collections.ConfigDict()
  c.algo.advantage = "grpo"
  c.algo.loss = "grpo"
  # Unset (None): the chosen loss's own default (grpo ε = 0.2; dapo ε_high = 0.28;
  # gspo ε = 3e-4, ε_high = 4e-4; no dual clip). A value overrides it for any loss.
  c.algo.epsilon = config_dict.placeholder(float)
  c.algo.epsilon_high = config_dict.placeholder(float)
  c.algo.dual_clip = config_dict.placeholder(float)
  c.algo.kl_coef = 0.0
  c.algo.kl_estimator = "k3"
  c.algo.entropy_coef = 0.0
  c.algo.num_epochs = 1          # μ
  c.algo.num_minibatches = 2
  c.algo.gamma = 1.0
  c.algo.lam = 0.95
  c.algo.vf_coef = 0.1
  c.algo.value_clip = 0.2
  c.algo.whiten_advantages = True
  c.algo.missing_eos_penalty = 0.0
  c.algo.temperature = 1.0       # rollout temperature; log-probs use logits / temperature
  c.algo.old_logprobs = "recompute"  # or "sampler": π_old from the rollouts, one forward fewer
  c.algo.kl_monitor_every = 1    # with kl_coef 0, the logged KL to π_ref on every k-th row

  # LoRA (rank > 0): only the adapters (and a value head) are trained; the reference is
  # the base without them; the saved policy holds the merged weights (rewardlab.models.lora).
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.alpha = 16.0  # updates scaled by alpha / rank
  c.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
  c.lora.base_dtype = ""  # "" keeps the policy's dtype; "bfloat16" halves its memory

  # Device mesh (data, fsdp, tensor); None runs on one device. Placement by the logical rules
  # of rewardlab.sharding; rollouts are sharded over the data axes. Across jax.distributed
  # processes each samples and scores its share of the prompts (batch_size a multiple of
  # the process count); the parameters equal the single-device run's.
  c.mesh_shape = config_dict.placeholder(tuple)

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 5e-5
  c.optim.warmup_steps = 5         # RL steps
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 1.0
  c.optim.b2 = 0.999             # Adam β2: slow second moments for noisy policy gradients
  c.optim.decay = "constant"     # or "cosine": to final_lr_fraction · lr at train.steps
  c.optim.final_lr_fraction = 0.1

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100
  c.train.log_every = 1
  c.train.checkpoint_every = 20
  c.train.eval_every = 10

  c.eval = ml_collections.ConfigDict()
  c.eval.num_per_k = 100         # arithmetic: held-out problems per number of operations
  c.eval.num_problems = 0        # files: the first held-out problems of task.eval_files (0 = all)
  c.eval.max_new_tokens = 52
  c.eval.maj_k = 8
  c.eval.maj_problems = 60
  if variant == "weak":
    c.policy_dir = "runs/sft/policy"  # experiments/configs/sft.py as is: 1,000 steps
    # 64 prompts sampled, the update on 48 groups, informative ones first: ~41 of 64 groups
    # were informative at the median step of the previous all-groups runs (more than 48 in
    # 3% of steps), and groups with equal returns have zero advantage, so this takes the
    # all-groups gradient direction (Adam absorbs the 64/48 scale) at 3/4 the cost.
    c.rollout.batch_size, c.rollout.update_groups = 64, 48
    c.algo.old_logprobs, c.algo.kl_monitor_every = "sampler", 8
    c.optim.learning_rate, c.optim.decay, c.optim.final_lr_fraction = 1.5e-4, "cosine", 0.1
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 300, 50, 50
  return c.lock()


def shrink(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A seconds-long variant of any RL config: random tiny policy, few short steps."""
  c = c.unlock()
  c.policy_dir = ""
  c.model.hidden_size, c.model.num_layers, c.model.intermediate_size = 32, 1, 64
  c.model.num_heads = c.model.num_kv_heads = 2
  c.data.num_train = 64
  c.task.num_ops = (2,)  # prompts <= 16 tokens: one padded prompt shape, fewer compiles
  c.rollout.batch_size, c.rollout.group_size, c.rollout.max_new_tokens = 2, 4, 12
  c.rollout.update_groups = 1
  c.train.steps, c.train.checkpoint_every, c.train.eval_every = 4, 2, 2
  c.optim.warmup_steps = 1
  # maj@k sampling has the rollouts' shape (2 prompts x 4 samples): no extra compile.
  c.eval.num_per_k, c.eval.max_new_tokens, c.eval.maj_k, c.eval.maj_problems = 2, 12, 4, 2
  c.progress = False
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  return shrink(get_config())
