"""Evaluation: RewardBench v1/v2, ProcessBench, calibration metrics and plots."""
from rewardlab.eval.calibration import (
    ReliabilityBins,
    auroc,
    brier_score,
    calibration_report,
    expected_calibration_error,
    reliability_bins,
)
from rewardlab.eval.plots import plot_curves, plot_reliability
from rewardlab.eval.processbench import (
    ProcessBenchScores,
    ProcessBenchSplit,
    first_error_prediction,
    first_error_predictions,
    harmonic_f1,
    processbench_scores,
)
from rewardlab.eval.rewardbench import (
    LEADERBOARD_EXAMPLE_COUNTS,
    V1_SECTIONS,
    V2_SUBSETS,
    RewardBenchScores,
    TiesScore,
    score_v1,
    score_v2,
    ties_score,
    v1_subset_weights,
    v2_prompt_score,
)
