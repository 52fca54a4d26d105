"""SFT of a tiny policy from scratch on the synthetic arithmetic task (CPU).

Run:      python experiments/sft.py --config experiments/configs/sft.py --workdir runs/sft
Runtime:  ~5 minutes on an idle 2-core CPU (1,000 steps of batch 32; measured 24 minutes
          on a machine loaded by 10 other jobs).
Expected: held-out greedy accuracy ~44% overall: 62% / 42% / 27% at K = 2 / 3 / 4
          operations (measured). The policy is right often but makes step errors, which
          the reward-model, step-label and search experiments need. 2,000 steps give
          91% / 83% / 83%.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.mesh_shape = ()  # e.g. (-1, 1, 1) to shard the batch over all devices

  c.model = ml_collections.ConfigDict()
  c.model.hidden_size = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 4
  c.model.intermediate_size = 384
  c.model.max_length = 80
  c.model.rope_theta = 10000.0
  c.model.dtype = "float32"
  c.model.remat = False

  c.data = ml_collections.ConfigDict()
  c.data.num_ops = (2, 3, 4)
  c.data.operand_max = 99
  c.data.num_train = 60000

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.schedule_steps = 0  # the cosine schedule's length; 0 = train.steps (set it to extend a run)
  c.train.max_bad_steps = 0   # non-finite steps skipped (update dropped) before the run stops
  c.train.batch_size = 32
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 100
  c.train.weight_decay = 0.01
  c.train.clip_norm = 1.0
  c.train.log_every = 50
  c.train.checkpoint_every = 500

  c.eval = ml_collections.ConfigDict()
  c.eval.num_per_k = 100
  c.eval.max_new_tokens = 60
  return c.lock()


def tiny() -> ml_collections.ConfigDict:
  """A seconds-long variant for tests."""
  c = get_config().unlock()
  c.model.hidden_size, c.model.num_layers, c.model.intermediate_size = 32, 1, 64
  c.model.num_heads = c.model.num_kv_heads = 2
  c.data.num_train = 256
  c.train.steps, c.train.batch_size, c.train.log_every = 6, 8, 2
  c.train.warmup_steps, c.train.checkpoint_every = 2, 3
  c.eval.num_per_k, c.eval.max_new_tokens = 3, 40
  c.progress = False
  return c.lock()
