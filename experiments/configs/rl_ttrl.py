"""Test-time RL (TTRL): GRPO on the unlabeled held-out prompts with the majority vote of
each group as the pseudo-label, `r_i = 1[ans_i = majority answer]` (no ground truth used
for training; `ttrl_label_accuracy` logs how often the majority is right).

Run:      python experiments/rl.py --config experiments/configs/rl_ttrl.py \
              --config.policy_dir=runs/sft/policy --workdir runs/rl_ttrl
Runtime:  ~6 minutes on the shared 2-core CPU at load ~4 (100 steps).
Expected: the pseudo-reward (agreement with the group's majority) rises; accuracy can only
          move towards what the majority knows. Measured from the SFT policy: agreement
          0.84 -> 0.94 over 100 steps, greedy pass@1 on the prompts unchanged (85.7%).
"""

from experiments.configs import rl_grpo


def _ttrl(c):
  c = c.unlock()
  c.reward.name = "ttrl"
  c.data.prompts = "eval"
  return c.lock()


def get_config():
  return _ttrl(rl_grpo.get_config())


def tiny():
  return _ttrl(rl_grpo.tiny())
