"""Test-time search: selection and voting over samples, and accuracy-vs-N curves."""
from rewardlab.search.curves import (
    Curve,
    accuracy_vs_n,
    default_ns,
    mean_confidence_interval,
    pass_at_k,
    pass_at_k_curve,
    wilson_interval,
)
from rewardlab.search.selection import (
    SELECTORS,
    STEP_AGGREGATORS,
    Selection,
    aggregate_step_scores,
    best_of_n,
    majority_vote,
    register_aggregator,
    register_selector,
    select,
    select_batch,
    weighted_best_of_n,
)
from rewardlab.search.beam import Beam, SearchTrace, StepSearch, beam_search
from rewardlab.search.budget import Budget
from rewardlab.search.dvts import dvts
from rewardlab.search.methods import METHODS, Scorers, SearchResult, register_method, run_method
from rewardlab.search.policy import (
    Completion,
    LMPolicy,
    OutcomeScorer,
    Policy,
    ProcessScorer,
    split_steps,
)
from rewardlab.search.qalign import Chain, chain_vote, qalign_chain
