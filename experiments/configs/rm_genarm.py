"""GenARM token-level reward model (a causal LM as the reward) on the synthetic task.

`r(x, y) = β Σ_t log π_r(y_t | x, y_<t)`, trained on preference pairs with
`-log σ(β (log π_r(y_w) - log π_r(y_l)) - γ)`. Paper defaults: β = 0.05, lr 5e-4,
cosine, warmup 100, weight decay 0.05.

Run:      python experiments/train_rm.py --config experiments/configs/rm_genarm.py --workdir runs/rm_genarm
Runtime:  ~8 minutes on a 2-core CPU shared with other work.
Expected: held-out pairwise accuracy >= 0.8.
"""

from experiments.configs import rm_bt


def _genarm(c):
  c.kind = "genarm"
  c.train.learning_rate = 5e-4
  c.train.weight_decay = 0.05
  return c


def get_config():
  return _genarm(rm_bt.base_config()).lock()


def tiny():
  return rm_bt.shrink(_genarm(rm_bt.base_config()))
