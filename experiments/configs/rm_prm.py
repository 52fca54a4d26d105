"""Process reward model (classifier head) from scratch on the synthetic task (CPU).

Stepwise data in TRL's form (`prompt`, `completions`, `labels`): half the solutions are
correct, half corrupted at a uniform step; labels are 1 before the first wrong step and
0 from it on (the `A:` answer line is the last step). Held-out problems by hash split.
`--config.model.process_form=lm_token --config.model.plus_token=+ --config.model.minus_token=-`
trains the Math-Shepherd LM-token form instead.

Run:      python experiments/train_rm.py --config experiments/configs/rm_prm.py --workdir runs/rm_prm
Runtime:  ~8 minutes on a 2-core CPU shared with other work (1,500 steps of 64 solutions).
Expected: ProcessBench-style F1 >= 0.8 on held-out problems (rm_results.json: eval.processbench_f1).
"""

from experiments.configs import rm_bt


def _prm(c):
  c = rm_bt.from_scratch(c)  # LM regularizer on the steps before the first wrong one
  c.kind = "prm"
  c.train.batch_size = 64
  return c


def get_config():
  return _prm(rm_bt.base_config()).lock()


def tiny():
  return rm_bt.shrink(_prm(rm_bt.base_config()))
