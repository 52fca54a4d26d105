"""Test-time scaling curves: accuracy vs N and vs tokens for every search method.

`--config.mesh_shape="(2,2,2)"` samples and scores on a device mesh (the same results).
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.train import console, tts  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/tts.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/tts", "Output directory.")


def main(argv):
  del argv
  console.setup_logging()  # --verbosity=0 shows the libraries' INFO lines
  results = tts.run(_CONFIG.value, _WORKDIR.value)
  summary = {name: dict(zip(m["n"], (round(a, 3) for a in m["accuracy"])))
             for name, m in results["methods"].items()}
  print(json.dumps({"accuracy_by_n": summary, "skipped": results["skipped"]}, indent=2))
  print(f"results: {os.path.join(_WORKDIR.value, 'tts_results.json')}")


if __name__ == "__main__":
  app.run(main)
