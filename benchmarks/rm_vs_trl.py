"""Bradley-Terry reward-model training throughput: rewardlab vs TRL's `RewardTrainer`.

Same model, same pairs, same optimizer settings, one run:
- the model: a tiny Llama (d_model 256, MLP 688, 4 layers, 8 heads / 4 kv heads,
  vocab 512, ~3.2M parameters) with a scalar head; TRL trains the very same weights,
  exported by `rewardlab.models.export` and loaded as `LlamaForSequenceClassification`;
- the pairs: synthetic arithmetic solutions, correct vs corrupted (`rewardlab.tasks.rm_data`),
  character tokens, ~65 tokens per sequence; batches of 16 pairs;
- rewardlab: the `bt` loss of `rewardlab.train.reward` in the jitted step of
  `rewardlab.train.step` (AdamW, global-norm clipping), on the batches its trainer makes
  (`reward.train_batches`, seed 0): each batch padded to its own longest sequence rounded
  up to a length bucket (multiples of 8, at most 16 buckets: one compile each, all done
  before timing), pairs length-sorted in windows of `--sort-window` batches (0 = off;
  `--padding dataset` pads every batch to the data set's longest pair, as before);
- TRL: `RewardTrainer` on PyTorch CPU, `--torch-threads` threads, no gradient
  checkpointing, dropout off, each batch padded to its own longest sequence; its sampler
  is `--trl-sampling` (`random`, TRL's default; `group_by_length` is transformers'
  length-grouped sampler, TRL's counterpart of the sorted windows). A list runs each.

Each trainer runs alone in its own process (a fresh Python per trainer and dtype), so
neither shares the cores' thread pools with the other; `--rounds` rounds run both, the
order alternating between rounds, and each run records the load average before and
after it and its process CPU share (CPU seconds over wall seconds x cores). Tokens/s
counts real (non-pad) tokens of both sequences of every pair, for both trainers, over
the timed steps after warmup (median of per-step rates). The rewardlab worker also
times the forward loss, the loss and gradient, and the step at its most common bucket,
measures the matmul peak of its dtype in the same process, and reports the model FLOP
utilization (see `breakdown`). f32 is compared with f32
(`bf16=False` for TRL); `--dtypes float32,bfloat16` adds bf16 matmul inputs with f32
accumulation for both (TRL: `bf16=True`, CPU autocast).

    python benchmarks/rm_vs_trl.py                 # f32 vs f32, CPU, 2 rounds
    python benchmarks/rm_vs_trl.py --dtypes float32,bfloat16 --steps 25 --rounds 2 \
        --trl-sampling random,group_by_length

Needs `trl` (tested: 1.16.0, with datasets 5.2.0) importable, e.g. on PYTHONPATH; it is
not a rewardlab dependency.
Writes benchmarks/results/rm_vs_trl_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import transformers  # noqa: E402

from benchmarks import common  # noqa: E402
from experiments.configs import rm_bt  # noqa: E402
from rewardlab.data import encode  # noqa: E402
from rewardlab.data.formats import PreferencePair  # noqa: E402
from rewardlab.data.tokenizers import CharTokenizer  # noqa: E402
from rewardlab.models import reward as reward_lib  # noqa: E402
from rewardlab.models.config import TransformerConfig  # noqa: E402
from rewardlab.models.export import export_sequence_classification  # noqa: E402
from rewardlab.tasks import arithmetic, rm_data  # noqa: E402
from rewardlab.train import reward as reward_train  # noqa: E402
from rewardlab.train import state as state_lib  # noqa: E402
from rewardlab.train import step as step_lib  # noqa: E402

LR, WEIGHT_DECAY, CLIP = 1e-4, 0.0, 1.0
CORES = os.cpu_count() or 1


def model_config(dtype: str, tokenizer) -> TransformerConfig:
  return TransformerConfig(vocab_size=512, hidden_size=256, num_layers=4, num_heads=8,
                           num_kv_heads=4, intermediate_size=688, max_position_embeddings=256,
                           dtype=dtype, bos_token_id=tokenizer.bos_id,
                           eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)


def make_pairs(num_pairs: int, tokenizer, seed: int = 0) -> list[dict]:
  """Encoded pairs (BOS prompt solution EOS), trimmed to the longest sequence."""
  problems = arithmetic.generate_problems(num_pairs, seed=seed, num_ops=(3, 4))
  rows = rm_data.preference_rows(problems, np.random.default_rng(seed))
  pairs = [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
  return reward_train.trim_length([encode.encode_preference(tokenizer, p, 128) for p in pairs])


def real_tokens(batch: dict) -> int:
  return int(batch["chosen_mask"].sum() + batch["rejected_mask"].sum())


def rates(tokens: list[int], seconds: list[float]) -> dict:
  per_step = [t / s for t, s in zip(tokens, seconds)]
  return {"tokens_per_s": statistics.median(per_step),
          "tokens_per_s_total": sum(tokens) / sum(seconds),
          "step_s_median": statistics.median(seconds), "steps": len(seconds),
          "tokens_per_step_mean": float(np.mean(tokens))}


# ----------------------------------------------------------------------------- rewardlab


class OurTrainer:
  """rewardlab's BT step on fixed batches; `step()` runs and times one optimizer step."""

  def __init__(self, rm, params, batches: list[dict]):
    cfg = rm_bt.base_config().lock()  # plain BT (no LM regularizer): TRL's objective
    tx = state_lib.adamw(lambda _: LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP)
    self.state = state_lib.TrainState.create(jax.tree.map(lambda x: x.copy(), params), tx)
    self.batches, self.next, self.seconds, self.tokens = batches, 0, [], []
    self.shapes = {b["chosen_tokens"].shape[1]: b for b in batches}  # one compile each
    self.train_step = step_lib.make_train_step(reward_train.OBJECTIVES.get("bt").loss(rm, cfg),
                                               tx, max_traces=len(self.shapes))
    start = time.perf_counter()
    for batch in self.shapes.values():
      self._run(batch)
    self.compile_s = time.perf_counter() - start

  def _run(self, batch):
    self.state, self.metrics = self.train_step(self.state, batch)
    jax.block_until_ready(self.metrics)

  def step(self) -> None:
    batch = self.batches[self.next]
    self.next = (self.next + 1) % len(self.batches)
    start = time.perf_counter()
    self._run(batch)
    self.seconds.append(time.perf_counter() - start)
    self.tokens.append(real_tokens(batch))


# ----------------------------------------------------------------------------- TRL


def hf_tokenizer(tokenizer: CharTokenizer, path: str):
  """A `PreTrainedTokenizerFast` with the char tokenizer's ids (TRL needs one)."""
  from tokenizers import Tokenizer, models as tok_models  # pylint: disable=import-outside-toplevel

  vocab = {tokenizer.decode([i], skip_special=False): i for i in range(tokenizer.vocab_size)}
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=Tokenizer(tok_models.WordLevel(vocab, "<pad>")),
      pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
  fast.save_pretrained(path)
  return fast


class StepTimer(transformers.TrainerCallback):
  """Times every TRL optimizer step (wall time, TRL's own real-token count)."""

  def __init__(self):
    self.trainer, self.seconds, self.tokens = None, [], []
    self._start, self._tokens = 0.0, 0

  def on_step_begin(self, args, state, control, **kwargs):
    self._start, self._tokens = time.perf_counter(), self.trainer._total_train_tokens

  def on_step_end(self, args, state, control, **kwargs):
    self.seconds.append(time.perf_counter() - self._start)
    self.tokens.append(self.trainer._total_train_tokens - self._tokens)


def run_trl(model_dir: str, tokenizer_dir: str, pairs: list[dict], args, bf16: bool,
            workdir: str, sampling: str) -> dict:
  """TRL's RewardTrainer alone for `args.steps` steps, with the `sampling` sampler."""
  import datasets  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import trl  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(args.torch_threads)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      model_dir, dtype=torch.float32, attn_implementation="sdpa")
  tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  strip = lambda ex, side: ex[f"{side}_tokens"][:int(ex[f"{side}_mask"].sum())].tolist()
  chosen, rejected = [strip(p, "chosen") for p in pairs], [strip(p, "rejected") for p in pairs]
  columns = {"chosen_ids": chosen, "rejected_ids": rejected}
  grouped = sampling == "group_by_length"
  if grouped:  # the length the sampler groups by: the pair's longer side
    columns["length"] = [max(len(c), len(r)) for c, r in zip(chosen, rejected)]
  config = trl.RewardConfig(
      output_dir=workdir, per_device_train_batch_size=args.batch, max_steps=args.steps,
      learning_rate=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP,
      lr_scheduler_type="constant", warmup_steps=0, bf16=bf16, gradient_checkpointing=False,
      disable_dropout=True, use_cpu=True, save_strategy="no", report_to=[],
      logging_steps=10**6, dataloader_num_workers=0, seed=0, max_length=None,
      train_sampling_strategy=sampling, length_column_name="length",
      remove_unused_columns=not grouped)
  timer = StepTimer()
  trainer = trl.RewardTrainer(model=model, args=config,
                              train_dataset=datasets.Dataset.from_dict(columns),
                              processing_class=tok, callbacks=[timer])
  timer.trainer = trainer
  cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
  out = trainer.train()
  cpu_share = (_cpu_seconds() - cpu_start) / ((time.perf_counter() - wall_start) * CORES)
  skip = args.warmup + 1
  return {**rates(timer.tokens[skip:], timer.seconds[skip:]), "first_step_s": timer.seconds[0],
          "train_loss": float(out.training_loss), "torch_threads": args.torch_threads,
          "sampling": sampling, "cpu_share": cpu_share,
          "versions": {"trl": trl.__version__, "torch": torch.__version__,
                       "transformers": transformers.__version__}}


def step_flops(config: TransformerConfig, tokens: int, length: int) -> float:
  """Model FLOPs of one training step (forward + backward = 3 forwards) over `tokens`
  tokens in rows of `length`: per token and layer, 2 x the layer's matrix parameters, plus
  4 x length x hidden for the query-key and attention-value products (computed densely,
  causal half included, as the step does). The scalar head and embedding gather are
  negligible; the LM head is not run by the plain BT loss."""
  d, f, e = config.hidden_size, config.intermediate_size, config.head_size
  matrices = d * e * (2 * config.num_heads + 2 * config.num_kv_heads) + 3 * d * f
  per_token = config.num_layers * (2 * matrices + 4 * length * config.num_heads * e)
  return 3.0 * per_token * tokens


def breakdown(rm, params, ours: OurTrainer, repeats: int) -> dict:
  """Where a step goes at the most common bucket: seconds of the jitted forward loss, of
  its value and gradient, and of the whole train step (gradient + AdamW), and the step's
  model FLOP/s against this process's measured matmul peak for the model's dtype."""
  loss_fn = reward_train.OBJECTIVES.get("bt").loss(rm, rm_bt.base_config().lock())
  widths = [b["chosen_tokens"].shape[1] for b in ours.batches]
  width = max(set(widths), key=widths.count)
  batch = ours.shapes[width]
  fns = {"forward": jax.jit(lambda p, b: loss_fn(p, b)[0]),
         "forward_backward": jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b)[0]))}
  compiled = {name: common.compile_jitted(fn, params, batch)[0] for name, fn in fns.items()}

  def train_step():  # the timed trainer's own step (compiled for this bucket already)
    ours.state, metrics = ours.train_step(ours.state, batch)
    return metrics

  timings = common.time_interleaved(
      {"forward": lambda: compiled["forward"](params, batch),
       "forward_backward": lambda: compiled["forward_backward"](params, batch),
       "step": train_step}, warmup=1, repeats=repeats)
  seconds = {name: t.median for name, t in timings.items()}
  computed = 2 * batch["chosen_tokens"].size
  real = real_tokens(batch)
  peak = common.matmul_peak(rm.backbone.compute_dtype, n=1024)
  flops = step_flops(rm.backbone, computed, width)
  return {"bucket": int(width), "computed_tokens": int(computed), "real_tokens": real,
          "seconds": seconds, "backward_s": seconds["forward_backward"] - seconds["forward"],
          "optimizer_s": seconds["step"] - seconds["forward_backward"],
          "step_flops": flops, "step_flops_per_s": flops / seconds["step"],
          "matmul_peak_flops_per_s": peak["flops_per_s"],
          "mfu_computed": flops / seconds["step"] / peak["flops_per_s"],
          "mfu_real": flops * real / computed / seconds["step"] / peak["flops_per_s"]}


def run_ours(rm, params, batches: list[dict], args) -> dict:
  """rewardlab's BT step alone: a compile step per bucket, then `args.steps - 1` timed
  steps, then (unless `--no-breakdown`) the per-part timing of `breakdown`."""
  ours = OurTrainer(rm, params, batches)
  cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
  for _ in range(args.steps - 1):
    ours.step()
  cpu_share = (_cpu_seconds() - cpu_start) / ((time.perf_counter() - wall_start) * CORES)
  skip = args.warmup
  widths = [b["chosen_tokens"].shape[1] for b in batches]
  result = {**rates(ours.tokens[skip:], ours.seconds[skip:]),
            "compile_steps_s": ours.compile_s, "compiled_lengths": sorted(ours.shapes),
            "final_loss": float(ours.metrics["loss"]), "padding": args.padding,
            "sort_window": args.sort_window,
            "padded_length_mean": float(np.mean(widths)),
            "computed_tokens_per_step_mean": float(np.mean([2 * args.batch * w for w in widths])),
            "cpu_share": cpu_share}
  if args.breakdown:
    result["breakdown"] = breakdown(rm, params, ours, repeats=max(3, args.steps // 4))
  return result


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def reward_model(dtype: str, tokenizer):
  rm = reward_lib.RewardModelConfig(backbone=model_config(dtype, tokenizer), head="outcome")
  return rm, reward_lib.init_reward_model(rm, jax.random.key(0))


def data(args, tokenizer):
  """The pairs and rewardlab's batches, as its trainer makes them (`reward.train_batches`:
  seeded, the same in every process)."""
  pairs = make_pairs(args.steps * args.batch + args.batch, tokenizer)
  cfg = rm_bt.base_config()
  cfg.train.batch_size = args.batch
  cfg.data.batch_padding, cfg.data.sort_window = args.padding, args.sort_window
  iterator, _ = reward_train.train_batches(pairs, cfg, shard_index=0, shard_count=1)
  return pairs, [next(iterator) for _ in range(args.steps + 1)]


def worker(args) -> None:
  """One trainer, one dtype, alone in this process; writes its result JSON."""
  tokenizer = CharTokenizer.for_arithmetic()
  pairs, batches = data(args, tokenizer)
  if args.worker == "rewardlab":
    rm, params = reward_model(args.dtype, tokenizer)
    result = run_ours(rm, params, batches, args)
  else:
    result = run_trl(f"{args.workdir}/model", f"{args.workdir}/tok", pairs, args,
                     args.dtype == "bfloat16", f"{args.workdir}/trl", args.worker.split(":")[1])
  common.write_json(args.result, result)


# ----------------------------------------------------------------------------- main


def run_worker(args, side: str, dtype: str, workdir: str) -> dict:
  """`side` alone in a fresh process; returns its result with the load around it."""
  result_path = f"{workdir}/{side.replace(':', '_')}_{dtype}.json"
  command = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--dtype", dtype,
             "--workdir", workdir, "--result", result_path, "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--batch", str(args.batch),
             "--torch-threads", str(args.torch_threads), "--padding", args.padding,
             "--sort-window", str(args.sort_window)]
  if not args.breakdown:
    command.append("--no-breakdown")
  load_before = os.getloadavg()
  subprocess.run(command, check=True)
  result = json.loads(Path(result_path).read_text())
  result["load_before"] = [round(x, 2) for x in load_before]
  result["load_after"] = [round(x, 2) for x in os.getloadavg()]
  return result


def run(args) -> dict:
  """Rounds of (rewardlab alone, TRL alone per sampler) per dtype, the order alternating."""
  tokenizer = CharTokenizer.for_arithmetic()
  results = {"command": "python benchmarks/rm_vs_trl.py " + " ".join(sys.argv[1:]),
             "machine": common.describe_machine(), "batch_pairs": args.batch,
             "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
             "padding": args.padding, "sort_window": args.sort_window,
             "trl_sampling": args.trl_sampling, "rows": []}
  trl_sides = [f"trl:{s}" for s in args.trl_sampling]
  with tempfile.TemporaryDirectory() as tmp:
    hf_tokenizer(tokenizer, f"{tmp}/tok")
    rm, params = reward_model("float32", tokenizer)  # the bf16 runs start from these too
    export_sequence_classification(f"{tmp}/model", rm, params)
    num_params = rm.backbone.num_params()
    for round_index in range(args.rounds):
      sides = ["rewardlab", *trl_sides]
      sides = sides if round_index % 2 == 0 else sides[::-1]
      for dtype in args.dtypes:
        row = {"round": round_index, "dtype": dtype, "num_params": num_params, "order": sides}
        for side in sides:
          row[side] = run_worker(args, side, dtype, tmp)
        row["speedup"] = {s: row["rewardlab"]["tokens_per_s"] / row[s]["tokens_per_s"]
                          for s in trl_sides}
        print(f"round {round_index} {dtype}: rewardlab {row['rewardlab']['tokens_per_s']:,.0f} "
              "tok/s; " + "; ".join(f"TRL {s[4:]} {row[s]['tokens_per_s']:,.0f} tok/s "
                                    f"({row['speedup'][s]:.2f}x)" for s in trl_sides),
              flush=True)
        results["rows"].append(row)
  return results


def table(results: dict) -> str:
  rows = []
  load = lambda side: f"{side['load_before'][0]:.1f} / {side['load_after'][0]:.1f}"
  for r in results["rows"]:
    ours = r["rewardlab"]
    for side, ratio in r["speedup"].items():
      trl = r[side]
      rows.append({"round": r["round"], "dtype": r["dtype"], "sampler": side[4:],
                   "ours": f"{ours['tokens_per_s']:,.0f}", "trl": f"{trl['tokens_per_s']:,.0f}",
                   "ours_ms": f"{ours['step_s_median'] * 1e3:.0f}",
                   "trl_ms": f"{trl['step_s_median'] * 1e3:.0f}",
                   "share": f"{100 * ours['cpu_share']:.0f}% / {100 * trl['cpu_share']:.0f}%",
                   "load": f"{load(ours)}; {load(trl)}", "speedup": f"{ratio:.2f}x"})
  return common.markdown_table(rows, [
      ("round", "round"), ("dtype", "dtype"), ("sampler", "TRL sampler"),
      ("ours", "rewardlab tok/s"), ("trl", "TRL tok/s"), ("ours_ms", "rewardlab ms/step"),
      ("trl_ms", "TRL ms/step"), ("share", "CPU share (rewardlab / TRL)"),
      ("load", "1-min load before / after (rewardlab; TRL)"), ("speedup", "rewardlab / TRL")])


def breakdown_table(results: dict) -> str:
  rows = []
  for r in results["rows"]:
    b = r["rewardlab"].get("breakdown")
    if not b:
      continue
    ms = lambda x: f"{x * 1e3:.0f}"
    rows.append({"round": r["round"], "dtype": r["dtype"], "bucket": b["bucket"],
                 "fwd": ms(b["seconds"]["forward"]), "bwd": ms(b["backward_s"]),
                 "opt": ms(b["optimizer_s"]), "step": ms(b["seconds"]["step"]),
                 "gflops": f"{b['step_flops_per_s'] / 1e9:.1f}",
                 "peak": f"{b['matmul_peak_flops_per_s'] / 1e9:.1f}",
                 "mfu": f"{100 * b['mfu_computed']:.0f}% / {100 * b['mfu_real']:.0f}%"})
  return common.markdown_table(rows, [
      ("round", "round"), ("dtype", "dtype"), ("bucket", "bucket"), ("fwd", "forward ms"),
      ("bwd", "backward ms"), ("opt", "AdamW + clip ms"), ("step", "step ms"),
      ("gflops", "step GFLOP/s"), ("peak", "matmul peak GFLOP/s"),
      ("mfu", "MFU (computed / real tokens)")])


def summary(results: dict) -> str:
  """Median ratio per dtype and TRL sampler over the rounds."""
  lines = []
  for dtype in dict.fromkeys(r["dtype"] for r in results["rows"]):
    rows = [r for r in results["rows"] if r["dtype"] == dtype]
    for side in rows[0]["speedup"]:
      ratios = [r["speedup"][side] for r in rows]
      lines.append(f"{dtype}, TRL {side[4:]}: rewardlab / TRL = {statistics.median(ratios):.2f}x "
                   f"(median of {len(ratios)} rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtypes", type=lambda s: [x for x in s.split(",") if x],
                      default=["float32"], help="comma-separated: float32, bfloat16")
  parser.add_argument("--steps", type=int, default=25, help="optimizer steps per trainer")
  parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
  parser.add_argument("--batch", type=int, default=16, help="pairs per step")
  parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both")
  parser.add_argument("--torch-threads", type=int, default=2, help="TRL's torch threads")
  parser.add_argument("--padding", choices=["batch", "dataset"], default="batch",
                      help="rewardlab's data.batch_padding")
  parser.add_argument("--sort-window", type=int, default=8,
                      help="rewardlab's data.sort_window (batches per length-sorted window)")
  parser.add_argument("--trl-sampling", type=lambda s: [x for x in s.split(",") if x],
                      default=["random"], help="comma-separated: random, group_by_length")
  parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                      help="skip the per-part timing and MFU of rewardlab's step")
  parser.add_argument("--out", type=Path, default=None)
  # Internal: run one trainer in this process (the driver starts these).
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--dtype", help=argparse.SUPPRESS)
  parser.add_argument("--workdir", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps <= args.warmup + 1:
    parser.error("--steps must exceed --warmup + 1")
  if any(s not in ("random", "group_by_length") for s in args.trl_sampling):
    parser.error(f"--trl-sampling: random or group_by_length, got {args.trl_sampling}")
  if args.worker:
    worker(args)
    return
  results = run(args)
  print(table(results))
  print(breakdown_table(results))
  print(summary(results))
  print(f"wrote {common.save_results('rm_vs_trl', results, args.out)}")


if __name__ == "__main__":
  main()
