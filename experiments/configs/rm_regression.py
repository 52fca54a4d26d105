"""HelpSteer2-style regression reward model (five 0..4 attributes) on the synthetic task.

Ratings follow fixed rules (`rewardlab.tasks.rm_data.ratings`): correctness is the share
of leading right steps, helpfulness whether the answer is right, complexity the number
of operations, verbosity the number of lines. Loss: MSE per attribute, averaged.

Run:      python experiments/train_rm.py --config experiments/configs/rm_regression.py --workdir runs/rm_regression
Runtime:  ~5 minutes on a 2-core CPU shared with other work.
Expected: held-out MSE well below the variance of the ratings (complexity and verbosity
          near 0; correctness and helpfulness are the hard ones).
"""

from experiments.configs import rm_bt


def _regression(c):
  c.kind = "regression"
  c.data.num_train_problems = 40000
  c.train.steps = 1000
  return c


def get_config():
  return _regression(rm_bt.base_config()).lock()


def tiny():
  return rm_bt.shrink(_regression(rm_bt.base_config()))
