"""Compare finished or running RL runs: held-out greedy accuracy against wall-clock time.

For each run directory (`experiments/rl.py --workdir ...`) reads eval_metrics.jsonl and
reports, at the last evaluation within `--budget_s` seconds of the run's start, the greedy
pass@1 gain over step 0 with its paired 95% interval (the same held-out problems before
and after), and the best evaluation in the budget. Writes `<out>/rl_summary.json` and
`<out>/rl_summary.png` (accuracy against seconds, one line per run, the budget marked).

  python experiments/rl_summary.py runs/rl_weak_s0 runs/rl_weak_s1 --out runs/rl_summary
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from matplotlib.figure import Figure  # noqa: E402

from rewardlab.eval import compare  # noqa: E402
from rewardlab.train import metrics as metrics_lib  # noqa: E402


def summarize_run(workdir: str, budget_s: float, target: float) -> dict:
  """Gain of the last evaluation within `budget_s` over step 0, paired 95% CI."""
  path = os.path.join(workdir, "eval_metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not an RL run directory (no eval_metrics.jsonl)")
  evals = metrics_lib.read_jsonl(path)
  if not evals or evals[0]["step"] != 0:
    raise ValueError(f"{path}: the first record must be the step-0 evaluation")
  start = evals[0]
  within = [e for e in evals if e["elapsed_s"] <= budget_s]
  last = within[-1]
  diff = compare.paired_difference(last["greedy_correct"], start["greedy_correct"])
  best = max(within, key=lambda e: e["pass1_greedy"])
  return {"workdir": workdir, "start_pass1_greedy": start["pass1_greedy"],
          "num_problems": len(start["greedy_correct"]),
          "last_in_budget": {"step": last["step"], "elapsed_s": last["elapsed_s"],
                             "pass1_greedy": last["pass1_greedy"]},
          "gain": diff["diff"], "gain_low": diff["low"], "gain_high": diff["high"],
          "meets_target": diff["diff"] >= target,
          "best_in_budget": {"step": best["step"], "elapsed_s": best["elapsed_s"],
                             "gain": best["pass1_greedy"] - start["pass1_greedy"]},
          "curve": [(e["elapsed_s"], e["step"], e["pass1_greedy"]) for e in evals]}


def plot(summaries: list[dict], budget_s: float, target: float, path: str) -> str:
  fig = Figure(figsize=(7, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  for i, s in enumerate(summaries):
    x = [t / 60 for t, _, _ in s["curve"]]
    y = [100 * (a - s["start_pass1_greedy"]) for _, _, a in s["curve"]]
    ax.plot(x, y, "o-", color=f"C{i}", markersize=3,
            label=f"{os.path.basename(os.path.normpath(s['workdir']))}: "
                  f"{100 * s['gain']:+.1f} [{100 * s['gain_low']:+.1f}, "
                  f"{100 * s['gain_high']:+.1f}]")
  ax.axvline(budget_s / 60, color="gray", linestyle="--", linewidth=1)
  ax.axhline(100 * target, color="gray", linestyle=":", linewidth=1)
  ax.axhline(0, color="black", linewidth=0.5)
  ax.set(xlabel="wall-clock minutes (evaluations included)",
         ylabel="held-out greedy pass@1 gain (points)",
         title="RL runs: gain over the starting policy (paired 95% CI at the budget)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  return path


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="RL run directories")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--budget_s", type=float, default=900.0)
  parser.add_argument("--target", type=float, default=0.10, help="gain to reach (fraction)")
  args = parser.parse_args(argv)
  summaries = [summarize_run(r, args.budget_s, args.target) for r in args.runs]
  os.makedirs(args.out, exist_ok=True)
  gains = [s["gain"] for s in summaries]
  result = {"budget_s": args.budget_s, "target": args.target, "runs": summaries,
            "mean_gain": sum(gains) / len(gains),
            "runs_meeting_target": sum(s["meets_target"] for s in summaries),
            "plot": plot(summaries, args.budget_s, args.target,
                         os.path.join(args.out, "rl_summary.png"))}
  with open(os.path.join(args.out, "rl_summary.json"), "w") as f:
    json.dump(result, f, indent=2)
  for s in summaries:
    last = s["last_in_budget"]
    print(f"{s['workdir']}: step {last['step']} at {last['elapsed_s']:.0f} s: "
          f"{100 * s['start_pass1_greedy']:.1f}% -> {100 * last['pass1_greedy']:.1f}% "
          f"({100 * s['gain']:+.1f} [{100 * s['gain_low']:+.1f}, {100 * s['gain_high']:+.1f}])")
  print(f"mean gain {100 * result['mean_gain']:+.1f} points; "
        f"{result['runs_meeting_target']}/{len(summaries)} runs reach +{100 * args.target:.0f}")
  print(f"wrote {os.path.join(args.out, 'rl_summary.json')} and {result['plot']}")
  return result


if __name__ == "__main__":
  main()
