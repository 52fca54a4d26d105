"""Score local benchmark files with a saved reward model; write a JSON report and a PNG.

  python experiments/eval_rm.py --model runs/rm_bt/reward_model \
      --data pairs.jsonl --format preference --out runs/rm_bt/eval

Formats: preference, helpsteer2_preference, rewardbench (v1), rewardbench2,
processbench (one split per file), stepwise, math_shepherd.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.eval import reward_model as report_lib  # noqa: E402
from rewardlab.models import reward  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "Saved reward model directory.", required=True)
_DATA = flags.DEFINE_list("data", None, "Comma-separated .jsonl / .parquet files.", required=True)
_FORMAT = flags.DEFINE_enum("format", None, sorted(report_lib.FILE_EVALUATORS),
                            "Format of the files.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <model>/eval).")
_NAME = flags.DEFINE_string("name", "report", "Base name of the JSON and PNG files.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per scoring call.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "ProcessBench: step wrong if p < threshold.")
_LENIENT = flags.DEFINE_bool("skip_bad_rows", False, "Skip malformed rows (counted) instead of failing.")


def main(argv):
  del argv
  config, params, tokenizer = reward.load_reward_model(_MODEL.value)
  if tokenizer is None:
    raise app.UsageError(f"{_MODEL.value} holds no tokenizer; save the model with one")
  report = report_lib.evaluate_files(_DATA.value, _FORMAT.value, config, params, tokenizer,
                                     batch_size=_BATCH.value, threshold=_THRESHOLD.value,
                                     strict=not _LENIENT.value)
  out = _OUT.value or os.path.join(_MODEL.value, "eval")
  paths = report_lib.write_report(out, report, name=_NAME.value,
                                  title=f"{config.head} reward model: {_FORMAT.value}")
  print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict) or k == "splits"},
                   indent=2, default=float))
  print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
  app.run(main)
