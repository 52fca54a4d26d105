import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import rl_summary  # noqa: E402


def _run(path, records):
    path.mkdir()
    with open(path / "eval_metrics.jsonl", "w") as f:
        for step, elapsed, correct in records:
            f.write(json.dumps({"step": step, "elapsed_s": elapsed, "greedy_correct": correct,
                                "pass1_greedy": sum(correct) / len(correct)}) + "\n")
    return str(path)


def test_gain_at_the_budget_is_paired_and_later_evaluations_are_ignored(tmp_path):
    start = [0] * 10
    a = _run(tmp_path / "a", [(0, 5, start), (25, 400, [1, 1] + [0] * 8),
                              (50, 800, [1] * 3 + [0] * 7), (75, 1000, [1] * 10)])
    b = _run(tmp_path / "b", [(0, 5, [1] * 5 + [0] * 5), (25, 600, [1] * 4 + [0] * 6)])
    out = rl_summary.main([a, b, "--out", str(tmp_path / "out"), "--budget_s", "900"])
    run_a, run_b = out["runs"]
    assert run_a["last_in_budget"]["step"] == 50  # the step-75 evaluation is past 900 s
    assert run_a["gain"] == pytest.approx(0.3) and run_a["meets_target"]
    # paired differences 1,1,1,0,...: mean 0.3, sd 0.483, half-width 1.96 * 0.483 / sqrt(10)
    assert run_a["gain_low"] == pytest.approx(0.3 - 1.959964 * 0.4830459 / 10 ** 0.5, abs=1e-5)
    assert run_b["gain"] == pytest.approx(-0.1) and not run_b["meets_target"]
    assert out["mean_gain"] == pytest.approx(0.1) and out["runs_meeting_target"] == 1
    assert Path(out["plot"]).stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "rl_summary.json").read_text())
    assert saved["runs_meeting_target"] == 1


def test_a_directory_without_evaluations_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an RL run directory"):
        rl_summary.summarize_run(str(tmp_path), 900, 0.1)
