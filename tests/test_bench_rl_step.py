"""The RL-step benchmark's FLOP count and variants, and the GPU summary's peak lookup."""

import numpy as np

from benchmarks import gpu_summary, rl_step
from rewardlab import models
from rewardlab.models import logprobs as logprobs_lib
from rewardlab.rl import update as update_lib


def test_step_flops_counts_by_hand():
  config = models.TransformerConfig(vocab_size=10, hidden_size=4, num_layers=2, num_heads=2,
                                    num_kv_heads=1, head_dim=2, intermediate_size=6,
                                    max_position_embeddings=32)
  algo = update_lib.Algorithm(group_size=2, kl_monitor_every=2)
  # per layer: q 4x4, k 4x2, v 4x2, o 4x4 = 48; MLP 3 x 4 x 6 = 72 -> 120 weights
  # body per token: 2 x 2 layers x 120 = 480, attention 2 x 2 x 2 heads x 2 dims x W(5) = 80
  # head per completion token: 2 x 10 x 4 = 80; 4 rows, prompt 2 + 3 new tokens
  forward = 4 * 5 * (480 + 80) + 4 * 3 * 80
  flops = rl_step.step_flops(config, algo, rows=4, prompt_len=2, new_tokens=3)
  assert flops["forward"] == forward
  assert flops["forward_equivalents"] == 3 + 1 + 0.5  # fwd+bwd, π_old, π_ref on every 2nd row
  assert flops["step"] == forward * 4.5


def test_unchunked_variant_is_one_chunk_and_the_batch_is_well_formed():
  args = rl_step.parse_args(["--variant", "unchunked", "--cpu-smoke"])
  config = models.TransformerConfig(**rl_step.SMOLLM2_SHAPE)
  rows = 64
  # the benchmark's "before": one chunk over all 256 positions, i.e. full [N, T, V] logits
  assert logprobs_lib.sequence_chunk(config.replace(logprob_chunk=256), rows, 256) == 256
  assert logprobs_lib.sequence_chunk(config, rows, 256) < 256 // 4
  batch = rl_step.make_batch(models.TransformerConfig(**rl_step.SMOKE_SHAPE), args)
  n, t = args.prompts * args.group, args.new_tokens
  assert batch["tokens"].shape == (n, args.prompt_len + t)
  np.testing.assert_array_equal(batch["completion_tokens"], batch["tokens"][:, args.prompt_len:])
  # completion_index[:, t] predicts completion token t from the position before it
  assert (batch["completion_index"][:, 0] == args.prompt_len - 1).all()
  groups = batch["scores"].reshape(args.prompts, args.group)
  assert (groups.min(axis=1) == 0).all() and (groups.max(axis=1) == 1).all()


def test_nominal_peak_lookup():
  assert gpu_summary.nominal_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert gpu_summary.nominal_peak("NVIDIA H200", "float32") == 494.7e12
  assert gpu_summary.nominal_peak("Some CPU", "bfloat16") is None
