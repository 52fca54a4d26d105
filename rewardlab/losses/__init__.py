"""Losses, advantage estimators and reward shaping as pure JAX array functions.

- `preference`: Bradley-Terry, scaled BT, regression, GenARM, DPO.
- `process`: PRM binary cross-entropy (classifier or LM-token head).
- `advantages`: group/RLOO advantages, GAE, whitening, masked statistics.
- `policy`: clipped surrogate (GRPO, DAPO, Dr. GRPO, BNPO, GSPO), PPO pieces, KL.
- `shaping`: Clip / Delta / Clip-Delta, DLER, TTRL majority reward.
- `registry`: policy losses and advantage estimators by name.
"""
from rewardlab.losses.advantages import (
    gae, group_advantages, last_valid_index, last_valid_one_hot, masked_mean,
    masked_sum, masked_var, rloo_advantages, whiten)
from rewardlab.losses.policy import (
    clipped_surrogate_loss, entropy_from_logits, kl_penalty, ppo_loss, ppo_token_rewards,
    value_loss)
from rewardlab.losses.preference import (
    bradley_terry_loss, dpo_implicit_reward, dpo_loss, genarm_loss, genarm_reward,
    regression_loss, scaled_bt_loss, sequence_logp_score)
from rewardlab.losses.process import (
    binary_cross_entropy_with_logits, lm_token_step_logits, prm_loss)
from rewardlab.losses.registry import (
    get_advantage_estimator, get_policy_loss, register_advantage_estimator,
    register_policy_loss)
from rewardlab.losses.shaping import (
    add_success_reward, clip_delta, clip_reward, delta_reward, dense_returns, dler_reward,
    group_majority, ttrl_majority_reward)
