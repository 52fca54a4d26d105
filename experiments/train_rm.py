"""Train a reward model (bt, scaled_bt, regression, prm, genarm) and report held-out metrics."""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.train import console, reward  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/rm_bt.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/rm_bt", "Output directory (resumes if present).")


def main(argv):
  del argv
  console.setup_logging()  # --verbosity=0 shows the libraries' INFO lines
  results = reward.run(_CONFIG.value, _WORKDIR.value)
  summary = {k: v for k, v in results.items() if k != "eval"}
  summary["eval"] = {k: v for k, v in results.get("eval", {}).items()
                     if not isinstance(v, dict) or k == "splits"}
  print(json.dumps(summary, indent=2, default=float))
  print(f"results: {os.path.join(_WORKDIR.value, 'rm_results.json')}")


if __name__ == "__main__":
  app.run(main)
