"""Samples of a policy on a task's problems, checked, and (right, wrong) preference pairs.

The training data of an outcome reward model made from the policy's own samples (the
setting of best-of-N with a learned verifier): for each problem of the `task` section's
`split`, `samples` completions at `temperature`, each checked by the task's checker
(math-verify for `task.name=math`), and up to `pairs_per_problem` pairs of one right and
one wrong completion of the same problem.

    python experiments/policy_pairs.py --config experiments/configs/policy_pairs.py \
        --config.policy_dir=DIR --config.task.name=math --config.task.format=gsm8k \
        --config.task.train_files=train.jsonl --workdir runs/pairs

Writes, in `workdir`: `samples.jsonl` (per problem: prompt, completions, correct),
`preference.jsonl` (prompt, chosen, rejected, problem: the `preference` format of
`train_rm.py --config.data.format=preference`), and `summary.json` (sample accuracy,
pass@samples, number of pairs, problems with no pair and why, tokens/s).
`train_rm.py --config.init_from=DIR --config.data.tokenizer=DIR` then trains the RM.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.train import console, policy_pairs  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/policy_pairs.py",
                                          "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/pairs", "Output directory.")


def main(argv):
  del argv
  console.setup_logging()
  summary = policy_pairs.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=2))
  print(f"pairs: {summary['files']['preference']}")


if __name__ == "__main__":
  app.run(main)
