"""Train a tiny policy on the synthetic arithmetic task and report held-out accuracy."""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.train import console, sft  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/sft.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/sft", "Output directory (resumes if present).")


def main(argv):
  del argv
  console.setup_logging()  # --verbosity=0 shows the libraries' INFO lines
  results = sft.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(results, indent=2))
  print(f"results: {os.path.join(_WORKDIR.value, 'sft_results.json')}")


if __name__ == "__main__":
  app.run(main)
