"""Test session setup.

Eight fake CPU devices let the sharding tests build real meshes; the flag must be
set before JAX is imported anywhere, so it lives here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402  (after the flags above)

# The parity tests compare float32 against float32 references. GPUs run float32 matmuls
# in TF32 by default (measured on an H100: logits 3.5e-3 to 5.7e-3 away from transformers'
# float32), so on accelerators the tests ask for full float32 matmuls; on CPU this changes
# nothing.
if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")
