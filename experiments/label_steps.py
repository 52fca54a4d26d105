"""Label solution steps with Monte-Carlo rollouts and OmegaPRM; write stepwise PRM data.

`--config.mesh_shape="(8,1,1)"` runs the policy completer on a device mesh (the same labels).
"""

import json
import os
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.train import console, label_steps  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/label_steps.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/label_steps",
                               "Output directory (resumes if present).")


def main(argv):
  del argv
  console.setup_logging()  # --verbosity=0 shows the libraries' INFO lines
  if _CONFIG.value.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", _CONFIG.value.compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  summary = label_steps.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=2))
  print(f"labels: {os.path.join(_WORKDIR.value, 'labels_<method>.jsonl')}")


if __name__ == "__main__":
  app.run(main)
