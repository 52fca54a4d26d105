"""Process reward model (classifier head) on the synthetic task (CPU).

Stepwise data in TRL's form (`prompt`, `completions`, `labels`): half the solutions are
correct, half corrupted at a uniform step; labels are 1 before the first wrong step and
0 from it on (the `A:` answer line is the last step). Held-out problems by hash split.
The LM regularizer (`loss.lm_coef`) trains on the steps before the first wrong one.
`--config.model.process_form=lm_token --config.model.plus_token=+ --config.model.minus_token=-`
trains the Math-Shepherd LM-token form instead. `--config.model.process_form=genarm` reads
step k as `model.step_beta` x (the response's log-likelihood up to step k) + a bias starting
at `model.step_bias`: from a policy (`init_from`), the PRM starts as the policy's own
likelihood and training moves the LM itself (use a GenARM-like learning rate, ~3e-5, and
`train.head_lr_multiplier` of a few hundred so that the bias learns). The end-to-end
pipeline (`experiments/configs/pipeline.py`) uses that form on its Monte-Carlo labels.

Two variants (`--config experiments/configs/rm_prm.py:<variant>`):
- `from_bt` (default): the backbone of the Bradley-Terry model of `rm_bt.py` (train it
  first), a fresh step head, 600 steps. The BT backbone already checks copies and part of
  the arithmetic, so the PRM only learns to localize.
- `scratch`: a random backbone, 2,000 steps.

Run:      python experiments/train_rm.py --config experiments/configs/rm_bt.py --workdir runs/rm_bt
          python experiments/train_rm.py --config experiments/configs/rm_prm.py --workdir runs/rm_prm
Runtime:  from_bt: 182 s of training, 3 minutes in all, on a quiet 2-core CPU (600 steps of
          64 solutions; measured), after the 463 s of rm_bt; scratch ~19 minutes at a load
          average of ~4.
Expected: ProcessBench-style F1 on held-out problems (rm_results.json: eval.processbench_f1):
          from_bt 0.815 (acc_correct 0.998, acc_error 0.689; step ECE 0.073, AUROC 0.864;
          measured); scratch ~0.75 (0.72 at 1,000 steps). Corrupted operands and skipped steps are found; arithmetic slips are the
          misses (~20% found): a tiny model must learn the arithmetic itself to see them.
"""

from experiments.configs import rm_bt

VARIANTS = ("from_bt", "scratch")


def _prm(c, variant: str):
  if variant not in VARIANTS:
    raise ValueError(f"rm_prm variant {variant!r}; expected one of {VARIANTS}")
  c = rm_bt.lm_regularized(c)  # on the steps before the first wrong one
  c.kind = "prm"
  c.train.batch_size = 64
  c.train.steps = 2000
  if variant == "from_bt":
    c.init_from = "runs/rm_bt/reward_model"
    c.train.steps, c.train.warmup_steps = 600, 50
  return c


def get_config(variant: str = "from_bt"):
  return _prm(rm_bt.base_config(), variant or "from_bt").lock()


def tiny():
  return rm_bt.shrink(_prm(rm_bt.base_config(), "scratch"))
