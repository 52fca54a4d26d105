"""Generative verifiers: a causal LM used as a judge (pointwise, pairwise, principles,
step verification, judge test-time scaling), see SPECS §6."""

from rewardlab.judges.aggregate import (AGGREGATORS, debiased_preference, majority_verdict,
                                        mean_probability, position_consistent, score_vote)
from rewardlab.judges.model import JudgeModel, Usage
from rewardlab.judges.pairwise import Preferences, preferences, sampled_preferences
from rewardlab.judges.pointwise import (Critiques, principle_rewards, sample_critiques,
                                        verdict_probabilities)
from rewardlab.judges.scorers import PointwiseJudgeScorer, StepJudgeScorer
from rewardlab.judges.steps import StepVerification, revealed_chains, verify_steps
from rewardlab.judges.templates import (PAIRWISE, POINTWISE, POINTWISE_SCORE, PRINCIPLE, STEPS,
                                        JudgeTemplate)
