"""Prompt tokens prefilled with and without sharing a prompt's cache among its samples.

Two runs on the shipped SFT policy (experiments/assets/sft_policy):

* labels: `rewardlab.train.label_steps.run` with the pipeline's `labels` settings (as
  `experiments/pipeline.py` sets them; `--label-problems` of the stage's 96 problems) and
  the LM completer, counting `LMCompleter.prefill_tokens` (each prefix once per call, its
  padding rows included), what one prefill per sample would read (n x that), and the
  real prefix tokens (padding rows left out);
* tts: `rewardlab.train.tts.run` (majority, best-of-N, beam search, DVTS; oracle
  verifiers; N_max 8) on `--tts-problems` problems, counting `LMPolicy.prefill_tokens`
  next to what one row per sample (the earlier scheme, rows padded to a power of two,
  at least `min_rows`) prefills for the same calls.

Run:      python benchmarks/prefill_sharing.py [--label-problems 32] [--tts-problems 16]
Output:   benchmarks/results/prefill_sharing_cpu.json (and the run directories in --workdir)
Runtime:  ~2 + ~1.5 minutes on the loaded 2-core CPU (32 + 16 problems).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.configs import label_steps as label_config  # noqa: E402
from experiments.configs import pipeline as pipeline_config  # noqa: E402
from experiments.configs import tts as tts_config  # noqa: E402
from rewardlab.search import completer as completer_lib  # noqa: E402
from rewardlab.search.policy import LMPolicy  # noqa: E402
from rewardlab.train import label_steps, sft, tts  # noqa: E402

POLICY = "experiments/assets/sft_policy"


def pipeline_label_config(num_problems: int):
  """The label_steps config of the pipeline's labels stage, with fewer problems."""
  p = pipeline_config.get_config()
  lab = p.labels
  levels = lambda top, base: tuple(sorted({v for v in base if v <= top} | {top}))
  c = label_config.get_config().unlock()
  c.seed, c.progress, c.compilation_cache_dir = p.seed, False, ""
  c.completer, c.policy_dir, c.methods = "policy", p.sft.shipped_dir, ("mc", "omegaprm")
  c.num_solutions = lab.num_solutions
  c.data.num_problems, c.data.num_ops = num_problems, tuple(p.num_ops)
  c.data.operand_max, c.data.seed = p.operand_max, p.seed + 13
  c.mc.num_completions = lab.mc_completions
  c.mc.quality_levels = levels(lab.mc_completions, (1, 2, 4, 8, 16))
  c.omegaprm.rollouts_per_state = lab.omegaprm_rollouts_per_state
  c.omegaprm.rollout_budget = lab.omegaprm_budget
  c.omegaprm.quality_levels = levels(lab.omegaprm_budget, (8, 16, 32, 48, 64, 96, 128))
  return c


class _CountingCompleter(completer_lib.LMCompleter):
  """Also counts the prompt tokens of the real prefixes (padding rows left out)."""

  real_prefix_tokens = 0

  def complete(self, prefixes, n, rng):
    self.real_prefix_tokens += sum(len(self.tokenizer.encode(x)) + 1 for x in prefixes)
    return super().complete(prefixes, n, rng)


class _OneRowPerSample:
  """Wraps a policy; counts what one row per sample would prefill for the same calls."""

  def __init__(self, inner: LMPolicy):
    self.inner, self.step_separator, self.tokens = inner, inner.step_separator, 0

  def sample(self, prompts, n, **kw):
    lengths = [len(self.inner.tokenizer.encode(p, add_bos=True)) for p in prompts]
    rows = len(prompts) * n
    pad = max(self.inner.min_rows, 1 << max(0, rows - 1).bit_length()) - rows
    self.tokens += n * sum(lengths) + pad * lengths[-1]
    return self.inner.sample(prompts, n, **kw)


def labels(num_problems: int, workdir: str) -> dict:
  c = pipeline_label_config(num_problems)
  config, params, tok = sft.load_policy(c.policy_dir)
  lm = _CountingCompleter(config, params, tok, max_new_tokens=c.sampling.max_new_tokens,
                          temperature=c.sampling.temperature, batch_size=c.sampling.batch_size)
  t0 = time.time()
  summary = label_steps.run(c, workdir, completer=lm)
  return {"num_problems": num_problems, "seconds": time.time() - t0,
          "completions": summary["throughput"]["completer"]["completions"],
          "prefixes": summary["throughput"]["completer"]["prefixes"],
          "prefill_tokens_shared": lm.prefill_tokens,
          "prefill_tokens_one_per_sample": lm.unshared_prefill_tokens,
          "real_prefix_tokens": lm.real_prefix_tokens, "generated_tokens": lm.generated_tokens}


def tts_draws(num_problems: int, workdir: str) -> dict:
  cfg = tts_config.get_config().unlock()
  cfg.progress, cfg.policy_dir, cfg.reward.oracle = False, POLICY, True
  cfg.methods = ("majority", "best_of_n", "beam_search", "dvts")
  cfg.n_max, cfg.problems.num = 8, num_problems
  policy = _OneRowPerSample(LMPolicy(*sft.load_policy(POLICY)))
  t0 = time.time()
  out = tts.run(cfg, workdir, policy=policy)
  return {"num_problems": num_problems, "seconds": time.time() - t0, "n_max": cfg.n_max,
          "methods": list(cfg.methods), "prefill_tokens_shared": policy.inner.prefill_tokens,
          "prefill_tokens_one_row_per_sample": policy.tokens,
          "accuracy": {m: v["accuracy"] for m, v in out["methods"].items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--label-problems", type=int, default=32)
  parser.add_argument("--tts-problems", type=int, default=16)
  parser.add_argument("--workdir", default="runs/prefill_sharing")
  parser.add_argument("--out", default="benchmarks/results/prefill_sharing_cpu.json")
  args = parser.parse_args()
  result = {"load_average_at_start": os.getloadavg(),
            "labels": labels(args.label_problems, os.path.join(args.workdir, "labels")),
            "tts": tts_draws(args.tts_problems, os.path.join(args.workdir, "tts"))}
  result["load_average_at_end"] = os.getloadavg()
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
