"""RL fine-tuning of a policy (GRPO family, PPO, TTRL, PRM-shaped) on the config's task: the
synthetic arithmetic task, or GSM8K / MATH / prompt-answer files with any local Hugging Face
policy directory (`--config.policy_dir=DIR --config.task.name=math --config.task.train_files=...
--config.task.eval_files=...`).

`--config.mesh_shape="(2,2,2)"` runs on a device mesh (also across `jax.distributed`
processes: each samples and scores its share of the prompts), `--config.lora.rank=16` trains
LoRA adapters only.

Writes train_metrics.jsonl, eval_metrics.jsonl, rl_curves.png and rl_results.json to
--workdir (and resumes from it).
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.rl import run as rl_run  # noqa: E402
from rewardlab.train import console  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/rl_grpo.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/rl_grpo", "Output directory (resumes if present).")


def main(argv):
  del argv
  console.setup_logging()  # --verbosity=0 shows the libraries' INFO lines
  results = rl_run.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(results, indent=2))
  print(f"results: {os.path.join(_WORKDIR.value, 'rl_results.json')}")


if __name__ == "__main__":
  app.run(main)
