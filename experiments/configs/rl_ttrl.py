"""Test-time RL (TTRL): GRPO on the unlabeled held-out prompts with the majority vote of
each group as the pseudo-label, `r_i = 1[ans_i = majority answer]` (no ground truth used
for training; `ttrl_label_accuracy` logs how often the majority is right).

Run:      python experiments/rl.py --config experiments/configs/rl_ttrl.py \
              --config.policy_dir=runs/sft/policy --workdir runs/rl_ttrl
Runtime:  ~10-15 minutes on a 2-core CPU (100 steps of 16 prompts x 8 samples).
Expected: greedy pass@1 on those prompts moves towards the SFT policy's maj@8 (the
          policy learns to say its own consensus answer); it cannot exceed what the
          majority knows.
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
