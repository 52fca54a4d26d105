"""Scaled Bradley-Terry (HelpSteer2-Preference) reward model on the synthetic task (CPU).

Pairs carry a preference strength s in {1, 2, 3} (an error at the first step makes the
correct solution "much better", at the last step "slightly better"); the loss is
`-s log σ(r_c - r_r)`. The paper's recipe initializes from a regression model: pass
`--config.init_from=runs/rm_regression/reward_model` (its ranking head becomes the
scalar head).

Run:      python experiments/train_rm.py --config experiments/configs/rm_scaled_bt.py --workdir runs/rm_scaled_bt
Runtime:  ~8 minutes on a 2-core CPU shared with other work.
Expected: held-out pairwise accuracy >= 0.8.
"""

from experiments.configs import rm_bt


def _scaled_bt(c):
  c = rm_bt.lm_regularized(c)
  c.kind = "scaled_bt"
  return c


def get_config():
  return _scaled_bt(rm_bt.base_config()).lock()


def tiny():
  return rm_bt.shrink(_scaled_bt(rm_bt.base_config()))
