"""PRM-shaped PPO: dense per-step rewards from a trained process reward model, with
Clip-Delta shaping, plus the verifier's success reward at the end.

Step k's reward `clip_delta(p, η)_k` (Clip: `min(p_k - η, 0)`; Delta: `r_k - r_{k+1}`,
last step 0) sits at the separator token that ends step k; `success_weight · 1[correct]`
is added at the last token. The shaped return telescopes to
`min(p_1 - η, 0) - min(p_K - η, 0) + success`, so no trajectory can farm PRM reward by
adding or repeating good-looking steps. PPO (GAE over the token rewards) does the
credit assignment.

Run:      python experiments/rl.py --config experiments/configs/rl_prm.py \
              --config.policy_dir=runs/sft/policy --config.reward.model_dir=runs/rm_prm/reward_model \
              --workdir runs/rl_prm
Runtime:  ~5 minutes on the shared 2-core CPU at load ~4 (100 steps; PRM scoring included).
Expected: no reward hacking: response length and step count stay at the SFT policy's,
          the return tracks rollout accuracy, held-out pass@1 does not fall. Measured with
          a PRM of ProcessBench F1 0.71 (1,000 steps of `rm_prm.py`): 85.7% -> 88.3% greedy
          pass@1 (+2.7 points), length ~35 tokens and ~4 steps throughout (rl_curves.png).
"""

from experiments.configs import rl_ppo


def _prm(c):
  c = c.unlock()
  c.reward.name = "prm_dense"
  c.reward.model_dir = "runs/rm_prm/reward_model"
  c.reward.eta = 0.5
  c.reward.success_weight = 1.0
  return c.lock()


def get_config():
  return _prm(rl_ppo.get_config())


def tiny():
  """For tests: pass a scripted `process_scorer` to `rewardlab.rl.run.run` (no model directory)."""
  c = _prm(rl_ppo.tiny()).unlock()
  c.reward.model_dir = ""
  return c.lock()
