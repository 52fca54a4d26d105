"""Bradley-Terry reward-model training throughput: rewardlab vs TRL's `RewardTrainer`.

Same model, same pairs, same optimizer settings, one run:
- the model: a tiny Llama (d_model 256, MLP 688, 4 layers, 8 heads / 4 kv heads,
  vocab 512, ~3.2M parameters) with a scalar head; TRL trains the very same weights,
  exported by `rewardlab.models.export` and loaded as `LlamaForSequenceClassification`;
- the pairs: synthetic arithmetic solutions, correct vs corrupted (`rewardlab.tasks.rm_data`),
  character tokens, ~65 tokens per sequence; batches of 16 pairs;
- rewardlab: the `bt` loss of `rewardlab.train.reward` in the jitted step of
  `rewardlab.train.step` (AdamW, global-norm clipping), sequences padded to the longest
  pair of the data set (one compile);
- TRL: `RewardTrainer` on PyTorch CPU, `torch.set_num_threads(2)`, no gradient
  checkpointing, dropout off, each batch padded to its own longest sequence.

Each trainer runs alone in its own process (a fresh Python per trainer and dtype), so
neither shares the cores' thread pools with the other; `--rounds` rounds run both, the
order alternating between rounds, and each run records the load average before and
after it and its process CPU share (CPU seconds over wall seconds x cores). Tokens/s
counts real (non-pad) tokens of both sequences of every pair, for both trainers, over
the timed steps after warmup (median of per-step rates). f32 is compared with f32
(`bf16=False` for TRL); `--dtypes float32,bfloat16` adds bf16 matmul inputs with f32
accumulation for both (TRL: `bf16=True`, CPU autocast).

    python benchmarks/rm_vs_trl.py                 # f32 vs f32, CPU, 2 rounds
    python benchmarks/rm_vs_trl.py --dtypes float32,bfloat16 --steps 25 --rounds 2

Needs `trl` (tested: 1.16.0, with datasets 5.2.0); it is not a rewardlab dependency.
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
    self.train_step = step_lib.make_train_step(reward_train.OBJECTIVES.get("bt").loss(rm, cfg), tx)
    self.batches, self.next, self.seconds, self.tokens = batches, 0, [], []
    start = time.perf_counter()
    self._run(batches[0])
    self.compile_s = time.perf_counter() - start

  def _run(self, batch):
    self.state, self.metrics = self.train_step(self.state, batch)
    jax.block_until_ready(self.metrics)

  def step(self) -> None:
    self.next = self.next % (len(self.batches) - 1) + 1
    batch = self.batches[self.next]
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
            workdir: str) -> dict:
  """TRL's RewardTrainer alone for `args.steps` steps."""
  import datasets  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import trl  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(args.torch_threads)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      model_dir, dtype=torch.float32, attn_implementation="sdpa")
  tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  strip = lambda ex, side: ex[f"{side}_tokens"][:int(ex[f"{side}_mask"].sum())].tolist()
  data = datasets.Dataset.from_dict({"chosen_ids": [strip(p, "chosen") for p in pairs],
                                     "rejected_ids": [strip(p, "rejected") for p in pairs]})
  config = trl.RewardConfig(
      output_dir=workdir, per_device_train_batch_size=args.batch, max_steps=args.steps,
      learning_rate=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP,
      lr_scheduler_type="constant", warmup_steps=0, bf16=bf16, gradient_checkpointing=False,
      disable_dropout=True, use_cpu=True, save_strategy="no", report_to=[],
      logging_steps=10**6, dataloader_num_workers=0, seed=0, max_length=None)
  timer = StepTimer()
  trainer = trl.RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                              callbacks=[timer])
  timer.trainer = trainer
  cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
  out = trainer.train()
  cpu_share = (_cpu_seconds() - cpu_start) / ((time.perf_counter() - wall_start) * CORES)
  skip = args.warmup + 1
  return {**rates(timer.tokens[skip:], timer.seconds[skip:]), "first_step_s": timer.seconds[0],
          "train_loss": float(out.training_loss), "torch_threads": args.torch_threads,
          "cpu_share": cpu_share,
          "versions": {"trl": trl.__version__, "torch": torch.__version__,
                       "transformers": transformers.__version__}}


def run_ours(rm, params, batches: list[dict], args) -> dict:
  """rewardlab's BT step alone: a compile step, then `args.steps` timed steps."""
  ours = OurTrainer(rm, params, batches)
  cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
  for _ in range(args.steps - 1):
    ours.step()
  cpu_share = (_cpu_seconds() - cpu_start) / ((time.perf_counter() - wall_start) * CORES)
  skip = args.warmup
  return {**rates(ours.tokens[skip:], ours.seconds[skip:]),
          "first_step_with_compile_s": ours.compile_s, "final_loss": float(ours.metrics["loss"]),
          "padded_length": int(ours.batches[0]["chosen_tokens"].shape[1]), "cpu_share": cpu_share}


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def reward_model(dtype: str, tokenizer):
  rm = reward_lib.RewardModelConfig(backbone=model_config(dtype, tokenizer), head="outcome")
  return rm, reward_lib.init_reward_model(rm, jax.random.key(0))


def data(args, tokenizer):
  """The pairs and rewardlab's fixed batches (the same in every process: seeded)."""
  pairs = make_pairs(args.steps * args.batch + args.batch, tokenizer)
  batches = [encode.stack_examples(pairs[i:i + args.batch])
             for i in range(0, len(pairs) - args.batch + 1, args.batch)][:args.steps + 1]
  return pairs, batches


def worker(args) -> None:
  """One trainer, one dtype, alone in this process; writes its result JSON."""
  tokenizer = CharTokenizer.for_arithmetic()
  pairs, batches = data(args, tokenizer)
  if args.worker == "rewardlab":
    rm, params = reward_model(args.dtype, tokenizer)
    result = run_ours(rm, params, batches, args)
  else:
    result = run_trl(f"{args.workdir}/model", f"{args.workdir}/tok", pairs, args,
                     args.dtype == "bfloat16", f"{args.workdir}/trl")
  common.write_json(args.result, result)


# ----------------------------------------------------------------------------- main


def run_worker(args, side: str, dtype: str, workdir: str) -> dict:
  """`side` alone in a fresh process; returns its result with the load around it."""
  result_path = f"{workdir}/{side}_{dtype}.json"
  command = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--dtype", dtype,
             "--workdir", workdir, "--result", result_path, "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--batch", str(args.batch),
             "--torch-threads", str(args.torch_threads)]
  load_before = os.getloadavg()
  subprocess.run(command, check=True)
  result = json.loads(Path(result_path).read_text())
  result["load_before"] = [round(x, 2) for x in load_before]
  result["load_after"] = [round(x, 2) for x in os.getloadavg()]
  return result


def run(args) -> dict:
  """Rounds of (rewardlab alone, TRL alone) per dtype, the order alternating by round."""
  tokenizer = CharTokenizer.for_arithmetic()
  results = {"command": "python benchmarks/rm_vs_trl.py " + " ".join(sys.argv[1:]),
             "machine": common.describe_machine(), "batch_pairs": args.batch,
             "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "rows": []}
  with tempfile.TemporaryDirectory() as tmp:
    hf_tokenizer(tokenizer, f"{tmp}/tok")
    rm, params = reward_model("float32", tokenizer)  # the bf16 runs start from these too
    export_sequence_classification(f"{tmp}/model", rm, params)
    num_params = rm.backbone.num_params()
    for round_index in range(args.rounds):
      sides = ("rewardlab", "trl") if round_index % 2 == 0 else ("trl", "rewardlab")
      for dtype in args.dtypes:
        row = {"round": round_index, "dtype": dtype, "num_params": num_params, "order": sides}
        for side in sides:
          row[side] = run_worker(args, side, dtype, tmp)
        row["speedup"] = row["rewardlab"]["tokens_per_s"] / row["trl"]["tokens_per_s"]
        print(f"round {round_index} {dtype}: rewardlab {row['rewardlab']['tokens_per_s']:,.0f} "
              f"tok/s, TRL {row['trl']['tokens_per_s']:,.0f} tok/s ({row['speedup']:.2f}x)",
              flush=True)
        results["rows"].append(row)
  return results


def table(results: dict) -> str:
  rows = []
  for r in results["rows"]:
    ours, trl = r["rewardlab"], r["trl"]
    load = lambda side: f"{side['load_before'][0]:.1f} / {side['load_after'][0]:.1f}"
    rows.append({"round": r["round"], "dtype": r["dtype"],
                 "order": " then ".join("TRL" if s == "trl" else s for s in r["order"]),
                 "ours": f"{ours['tokens_per_s']:,.0f}", "trl": f"{trl['tokens_per_s']:,.0f}",
                 "ours_ms": f"{ours['step_s_median'] * 1e3:.0f}",
                 "trl_ms": f"{trl['step_s_median'] * 1e3:.0f}",
                 "share": f"{100 * ours['cpu_share']:.0f}% / {100 * trl['cpu_share']:.0f}%",
                 "load": f"{load(ours)}; {load(trl)}", "speedup": f"{r['speedup']:.2f}x"})
  return common.markdown_table(rows, [
      ("round", "round"), ("dtype", "dtype"), ("order", "order"),
      ("ours", "rewardlab tok/s"), ("trl", "TRL tok/s"), ("ours_ms", "rewardlab ms/step"),
      ("trl_ms", "TRL ms/step"), ("share", "CPU share (rewardlab / TRL)"),
      ("load", "1-min load before / after (rewardlab; TRL)"), ("speedup", "rewardlab / TRL")])


def summary(results: dict) -> str:
  """Median ratio per dtype over the rounds."""
  lines = []
  for dtype in dict.fromkeys(r["dtype"] for r in results["rows"]):
    ratios = [r["speedup"] for r in results["rows"] if r["dtype"] == dtype]
    lines.append(f"{dtype}: rewardlab / TRL = {statistics.median(ratios):.2f}x (median of "
                 f"{len(ratios)} rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
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
  parser.add_argument("--out", type=Path, default=None)
  # Internal: run one trainer in this process (the driver starts these).
  parser.add_argument("--worker", choices=["rewardlab", "trl"], help=argparse.SUPPRESS)
  parser.add_argument("--dtype", help=argparse.SUPPRESS)
  parser.add_argument("--workdir", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps <= args.warmup + 1:
    parser.error("--steps must exceed --warmup + 1")
  if args.worker:
    worker(args)
    return
  results = run(args)
  print(table(results))
  print(summary(results))
  print(f"wrote {common.save_results('rm_vs_trl', results, args.out)}")


if __name__ == "__main__":
  main()
