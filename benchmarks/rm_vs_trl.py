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

The two run interleaved in one process: a TRL callback runs and times one rewardlab step
after every TRL optimizer step, so both see the same machine load (this CPU is shared).
Tokens/s counts real (non-pad) tokens of both sequences of every pair, for both
trainers, over the timed steps after warmup (median of per-step rates). f32 is compared
with f32 (`bf16=False` for TRL); `--dtypes float32,bfloat16` adds bf16 matmul inputs with
f32 accumulation for both (TRL: `bf16=True`, CPU autocast).

    python benchmarks/rm_vs_trl.py                 # f32 vs f32, CPU
    python benchmarks/rm_vs_trl.py --dtypes float32,bfloat16 --steps 30

Writes benchmarks/results/rm_vs_trl_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
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


class Interleave(transformers.TrainerCallback):
  """Times every TRL optimizer step (wall time, TRL's own real-token count) and runs one
  rewardlab step right after it, so both see the same machine load."""

  def __init__(self, ours: OurTrainer):
    self.ours, self.trainer, self.seconds, self.tokens = ours, None, [], []
    self._start, self._tokens = 0.0, 0

  def on_step_begin(self, args, state, control, **kwargs):
    self._start, self._tokens = time.perf_counter(), self.trainer._total_train_tokens

  def on_step_end(self, args, state, control, **kwargs):
    self.seconds.append(time.perf_counter() - self._start)
    self.tokens.append(self.trainer._total_train_tokens - self._tokens)
    self.ours.step()


def run_pair(model_dir: str, tokenizer_dir: str, pairs: list[dict], ours: OurTrainer,
             args, bf16: bool, workdir: str) -> dict:
  """TRL's RewardTrainer for `args.steps` steps, one rewardlab step after each."""
  import datasets  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import trl  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(2)
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
  timer = Interleave(ours)
  trainer = trl.RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                              callbacks=[timer])
  timer.trainer = trainer
  trainer.train()
  skip = args.warmup + 1
  return {"trl": {**rates(timer.tokens[skip:], timer.seconds[skip:]),
                  "first_step_s": timer.seconds[0]},
          "rewardlab": {**rates(ours.tokens[skip:], ours.seconds[skip:]),
                        "first_step_with_compile_s": ours.compile_s,
                        "final_loss": float(ours.metrics["loss"]),
                        "padded_length": int(ours.batches[0]["chosen_tokens"].shape[1])},
          "versions": {"trl": trl.__version__, "torch": torch.__version__,
                       "transformers": transformers.__version__}}


# ----------------------------------------------------------------------------- main


def run(args) -> dict:
  tokenizer = CharTokenizer.for_arithmetic()
  pairs = make_pairs(args.steps * args.batch + args.batch, tokenizer)
  batches = [encode.stack_examples(pairs[i:i + args.batch])
             for i in range(0, len(pairs) - args.batch + 1, args.batch)][:args.steps + 1]
  results = {"command": "python benchmarks/rm_vs_trl.py " + " ".join(sys.argv[1:]),
             "machine": common.describe_machine(), "batch_pairs": args.batch,
             "steps": args.steps, "warmup": args.warmup, "rows": []}
  with tempfile.TemporaryDirectory() as tmp:
    hf_tokenizer(tokenizer, f"{tmp}/tok")
    for dtype in args.dtypes:
      rm = reward_lib.RewardModelConfig(backbone=model_config(dtype, tokenizer), head="outcome")
      params = reward_lib.init_reward_model(rm, jax.random.key(0))
      rm32 = rm.replace(backbone=rm.backbone.replace(dtype="float32"))
      export_sequence_classification(f"{tmp}/model", rm32, params)
      row = {"dtype": dtype, "num_params": rm.backbone.num_params()}
      ours = OurTrainer(rm, params, batches)
      row.update(run_pair(f"{tmp}/model", f"{tmp}/tok", pairs, ours, args,
                          dtype == "bfloat16", f"{tmp}/trl"))
      print(f"{dtype}: rewardlab {row['rewardlab']['tokens_per_s']:,.0f} tok/s, "
            f"TRL {row['trl']['tokens_per_s']:,.0f} tok/s", flush=True)
      row["speedup"] = row["rewardlab"]["tokens_per_s"] / row["trl"]["tokens_per_s"]
      results["rows"].append(row)
  return results


def table(results: dict) -> str:
  rows = [{"dtype": r["dtype"], "ours": f"{r['rewardlab']['tokens_per_s']:,.0f}",
           "trl": f"{r['trl']['tokens_per_s']:,.0f}",
           "ours_ms": f"{r['rewardlab']['step_s_median'] * 1e3:.0f}",
           "trl_ms": f"{r['trl']['step_s_median'] * 1e3:.0f}",
           "speedup": f"{r['speedup']:.2f}x"} for r in results["rows"]]
  return common.markdown_table(rows, [("dtype", "dtype"), ("ours", "rewardlab tok/s"),
                                      ("trl", "TRL tok/s"), ("ours_ms", "rewardlab ms/step"),
                                      ("trl_ms", "TRL ms/step"), ("speedup", "speedup")])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtypes", type=lambda s: [x for x in s.split(",") if x],
                      default=["float32"], help="comma-separated: float32, bfloat16")
  parser.add_argument("--steps", type=int, default=25, help="optimizer steps per trainer")
  parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
  parser.add_argument("--batch", type=int, default=16, help="pairs per step")
  parser.add_argument("--out", type=Path, default=None)
  args = parser.parse_args(argv)
  if args.steps <= args.warmup + 1:
    parser.error("--steps must exceed --warmup + 1")
  results = run(args)
  print(table(results))
  print(f"wrote {common.save_results('rm_vs_trl', results, args.out)}")


if __name__ == "__main__":
  main()
