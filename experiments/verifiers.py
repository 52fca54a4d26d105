"""Generative verifiers on the synthetic task: train, evaluate, write JSON + PNG.

  python experiments/verifiers.py --config experiments/configs/verifiers.py --workdir runs/verifiers

Resumable: every stage's output in the workdir is reused on a rerun.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from rewardlab.judges import experiment  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(REPO, "experiments", "configs",
                                                                 "verifiers.py"))
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  cfg = _CONFIG.value
  if not os.path.isabs(cfg.policy_dir) and not os.path.exists(cfg.policy_dir):
    cfg = cfg.unlock()
    cfg.policy_dir = os.path.join(REPO, cfg.policy_dir)
    cfg.lock()
  out = experiment.run(cfg, _WORKDIR.value)
  summary = {name: {"F1": round(r["processbench_f1"], 3),
                    f"BoN@{len(r['bon_accuracy'])}": round(r["bon_accuracy"][-1], 3),
                    "BoN@1": round(r["bon_accuracy"][0], 3)}
             for name, r in out["verifiers"].items()}
  print(json.dumps({"verifiers": summary, "claims": [(c["claim"], c["verdict"])
                                                     for c in out["claims"]]}, indent=1))


if __name__ == "__main__":
  app.run(main)
