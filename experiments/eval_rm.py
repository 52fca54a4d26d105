"""Score local benchmark files with a saved reward model; write a JSON report and a PNG.

  python experiments/eval_rm.py --model runs/rm_bt/reward_model \
      --data pairs.jsonl --format preference --out runs/rm_bt/eval

Formats: preference, helpsteer2_preference, rewardbench (v1), rewardbench2,
processbench (one split per file), stepwise, math_shepherd.

With a generative judge (any causal LM directory) instead of a trained reward model:

  python experiments/eval_rm.py --judge /path/to/SmolLM2-135M-Instruct --judge_mode pairwise \
      --format preference --data pairs.jsonl --out runs/judge_eval

`--judge_mode pointwise|pairwise` for pair formats, `steps` for ProcessBench-style ones;
`--num_samples K` samples K critiques (or chains) per item and aggregates them (0: read
the verdict probability directly); `--judge_template file.json` replaces the prompt
template (fields of `rewardlab.judges.JudgeTemplate`). The report adds position
consistency (pairwise), the unparseable count and the judge's generated tokens.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewardlab.eval import judge_files  # noqa: E402
from rewardlab.eval import reward_model as report_lib  # noqa: E402
from rewardlab.models import reward  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "Saved reward model directory (or give --judge).")
_DATA = flags.DEFINE_list("data", None, "Comma-separated .jsonl / .parquet files.", required=True)
_FORMAT = flags.DEFINE_enum("format", None, sorted(report_lib.FILE_EVALUATORS),
                            "Format of the files.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <model>/eval).")
_NAME = flags.DEFINE_string("name", "report", "Base name of the JSON and PNG files.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per scoring call.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "ProcessBench: step wrong if p < threshold.")
_LENIENT = flags.DEFINE_bool("skip_bad_rows", False, "Skip malformed rows (counted) instead of failing.")
_JUDGE = flags.DEFINE_string("judge", None, "A causal LM directory to use as a generative judge.")
_JUDGE_MODE = flags.DEFINE_enum("judge_mode", None, list(judge_files.MODES),
                                "How the judge scores.")
_SAMPLES = flags.DEFINE_integer("num_samples", 0, "Judge: sampled critiques per item "
                                "(0: the verdict probability, no sampling).")
_AGGREGATION = flags.DEFINE_enum("aggregation", "mean_probability",
                                 ["mean_probability", "majority", "score_vote"],
                                 "Judge, pointwise with K >= 1: how critiques are combined.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Judge: tokens per critique or chain.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Judge: sampling temperature.")
_SEED = flags.DEFINE_integer("seed", 0, "Judge: sampling seed.")
_TEMPLATE = flags.DEFINE_string("judge_template", None, "Judge: JSON file of JudgeTemplate fields.")


def _judge_main():
  from rewardlab import judges

  if _JUDGE_MODE.value is None:
    raise app.UsageError("--judge needs --judge_mode pointwise|pairwise|steps")
  template = None
  if _TEMPLATE.value:
    with open(_TEMPLATE.value) as f:
      template = judges.JudgeTemplate(**json.load(f))
  judge = judges.JudgeModel.load(_JUDGE.value)
  report = judge_files.evaluate_files_with_judge(
      _DATA.value, _FORMAT.value, judge, mode=_JUDGE_MODE.value, template=template,
      num_samples=_SAMPLES.value, aggregation=_AGGREGATION.value,
      max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value, seed=_SEED.value,
      batch_size=_BATCH.value, threshold=_THRESHOLD.value, strict=not _LENIENT.value)
  out = _OUT.value or os.path.join(_JUDGE.value, "eval")
  paths = report_lib.write_report(out, report, name=_NAME.value,
                                  title=f"{_JUDGE_MODE.value} judge: {_FORMAT.value}")
  return report, paths


def main(argv):
  del argv
  if _JUDGE.value:
    if _MODEL.value:
      raise app.UsageError("give --model or --judge, not both")
    report, paths = _judge_main()
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict) or k == "splits"},
                     indent=2, default=float))
    print("wrote", ", ".join(paths.values()))
    return
  if not _MODEL.value:
    raise app.UsageError("give --model (a saved reward model) or --judge (a causal LM)")
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
