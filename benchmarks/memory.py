"""Memory at SmolLM2-135M shape (random weights): LoRA vs full fine-tuning of a reward
model, and chunked vs full-logits token log-probs at the real vocabulary.

Nothing is allocated: parameters and optimizer states are abstract (`jax.eval_shape`),
and each jitted step is lowered and compiled to read XLA's `memory_analysis()`
(argument, output and temporary bytes of the compiled program on this backend).

    python benchmarks/memory.py                    # both parts, prints the tables
    python benchmarks/memory.py --update-readme    # and writes them to benchmarks/README.md

The JSON goes to benchmarks/results/memory_<platform>.json.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks import common  # noqa: E402
from experiments.configs import rm_bt  # noqa: E402
from rewardlab import models  # noqa: E402
from rewardlab.models import heads, lora  # noqa: E402
from rewardlab.models import logprobs as lp_lib  # noqa: E402
from rewardlab.models import reward as reward_lib  # noqa: E402
from rewardlab.train import reward as reward_train  # noqa: E402
from rewardlab.train import state as state_lib  # noqa: E402

SMOLLM2 = models.TransformerConfig(
    vocab_size=49_152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
    head_dim=64, intermediate_size=1536, rope_theta=100_000.0, tie_embeddings=True,
    max_position_embeddings=2048)
MB = 1e6


def _memory(fn, *args) -> dict:
  start = time.perf_counter()
  stats = jax.jit(fn, donate_argnums=0).lower(*args).compile().memory_analysis()
  return {"argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
          "temp": stats.temp_size_in_bytes, "alias": stats.alias_size_in_bytes,
          "compile_s": round(time.perf_counter() - start, 1)}


def _pair_batch(pairs: int, length: int) -> dict:
  tok = jax.ShapeDtypeStruct((pairs, length), jnp.int32)
  idx = jax.ShapeDtypeStruct((pairs,), jnp.int32)
  return {"chosen_tokens": tok, "chosen_mask": tok, "chosen_score_index": idx,
          "rejected_tokens": tok, "rejected_mask": tok, "rejected_score_index": idx}


def lora_rows(pairs: int, length: int, rank: int) -> list[dict]:
  """Bradley-Terry RM train step (AdamW, clip): full fine-tuning vs LoRA (f32 / bf16 base)."""
  rm = reward_lib.RewardModelConfig(backbone=SMOLLM2, head="outcome")
  cfg = rm_bt.base_config()
  cfg.loss.use_margin = False
  loss_fn = reward_train.OBJECTIVES.get("bt").loss(rm, cfg)
  adamw = state_lib.adamw(optax.constant_schedule(1e-4), weight_decay=0.01)
  abstract = jax.eval_shape(lambda: reward_lib.init_reward_model(rm, jax.random.key(0)))
  batch = _pair_batch(pairs, length)
  rows = []
  for name, lcfg in (("full fine-tuning", None),
                     (f"LoRA r{rank}, f32 base", lora.LoraConfig(rank=rank, alpha=2.0 * rank)),
                     (f"LoRA r{rank}, bf16 base",
                      lora.LoraConfig(rank=rank, alpha=2.0 * rank, base_dtype="bfloat16"))):
    params, tx, fn = abstract, adamw, loss_fn
    if lcfg is not None:
      params = jax.eval_shape(lambda: lora.attach(lcfg, reward_lib.init_reward_model(
          rm, jax.random.key(0)), jax.random.key(1), model_config=SMOLLM2))
      tx, fn = lora.freeze_base(adamw), lora.loss_with_adapters(lcfg, loss_fn)
    opt_state = jax.eval_shape(tx.init, params)

    def step(state, batch, tx=tx, fn=fn):
      params, opt_state = state
      (loss, _), grads = jax.value_and_grad(fn, has_aux=True)(params, batch)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    mem = _memory(step, (params, opt_state), batch)
    trained = params if lcfg is None else {k: v for k, v in params.items() if k != "backbone"}
    total = lora.tree_bytes(params) + lora.tree_bytes(opt_state) + mem["temp"]
    rows.append({"setup": name, "params_mb": lora.tree_bytes(params) / MB,
                 "total_mb": total / MB,
                 "trained_mb": lora.tree_bytes(trained) / MB,
                 "optimizer_mb": lora.tree_bytes(opt_state) / MB,
                 "temp_mb": mem["temp"] / MB, "compile_s": mem["compile_s"]})
    print(rows[-1], flush=True)
  return rows


def logprob_rows(batch: int, length: int) -> list[dict]:
  """Loss + grad of the mean next-token log-prob (the GenARM / SFT / RL objective shape)."""
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  rows = []
  for layers, remat in ((1, False), (SMOLLM2.num_layers, False), (SMOLLM2.num_layers, True)):
    config = SMOLLM2.replace(remat=remat, num_layers=layers)
    params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))

    def chunked(params, tokens, config=config):
      hidden = models.hidden_states(config, params, tokens)
      return jnp.mean(lp_lib.next_token_logprobs(config, params, hidden, tokens))

    def full(params, tokens, config=config):
      return jnp.mean(heads.token_logprobs(models.logits(config, params, tokens), tokens))

    for name, fn in (("full logits", full), ("chunked (automatic)", chunked)):
      mem = _memory(jax.value_and_grad(fn), params, tokens)
      rows.append({"objective": name, "layers": layers, "remat": str(remat),
                   "temp_mb": mem["temp"] / MB,
                   "compile_s": mem["compile_s"],
                   "chunk": lp_lib.sequence_chunk(config, batch, length - 1)})
      print(rows[-1], flush=True)
  return rows


def remat_toy(checkpoint: bool) -> dict:
  """Eight residual blocks `x -> tanh(tanh(x W) W^T) + x`, grad of the sum, run once:
  compiled temporaries and the peak-RSS rise of the run, with or without checkpointing."""
  import resource  # pylint: disable=import-outside-toplevel

  def block(x, w):
    return jnp.tanh(jnp.tanh(x @ w) @ w.T) + x

  def loss(ws, x):
    fn = jax.checkpoint(block) if checkpoint else block
    for w in ws:
      x = fn(x, w)
    return jnp.sum(x)

  ws = [0.05 * jax.random.normal(jax.random.key(i), (256, 4096)) for i in range(8)]
  x = jax.random.normal(jax.random.key(9), (4096, 256))
  compiled = jax.jit(jax.grad(loss)).lower(ws, x).compile()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  jax.block_until_ready(compiled(ws, x))
  after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {"checkpoint": checkpoint, "temp_mb": compiled.memory_analysis().temp_size_in_bytes / MB,
          "peak_rss_rise_mb": (after - before) / 1e3}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--pair-length", type=int, default=256)
  parser.add_argument("--rank", type=int, default=16)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--update-readme", action="store_true")
  parser.add_argument("--remat-toy", choices=("off", "on"),
                      help="only the checkpointing toy, without or with jax.checkpoint (one "
                      "process per setting, so that the peak RSS is its own)")
  args = parser.parse_args(argv)
  if args.remat_toy:
    print(remat_toy(args.remat_toy == "on"))
    return
  machine = common.describe_machine()
  lora_table = lora_rows(args.pairs, args.pair_length, args.rank)
  lp_table = logprob_rows(args.batch, args.length)
  results = {"machine": machine, "args": vars(args), "lora": lora_table, "logprobs": lp_table}
  common.save_results("memory", results)
  f = lambda x: f"{x:,.0f}"
  logits_mb = args.batch * args.length * SMOLLM2.vocab_size * 4 / MB
  body = "\n".join([
      "Command: `python benchmarks/memory.py --update-readme` (compile only: nothing is "
      "allocated; XLA `memory_analysis()` of each jitted step on this backend)", "",
      *common.machine_lines(machine), "",
      f"SmolLM2-135M shape, random weights (V = 49,152, d 576, 30 layers, tied embeddings).",
      "", f"**LoRA vs full fine-tuning**, Bradley-Terry RM train step (AdamW, clipping), "
      f"{args.pairs} pairs x {args.pair_length} tokens, rank {args.rank} on q/k/v/o and "
      "gate/up/down:", "",
      common.markdown_table(
          [{**r, **{k: f(r[k]) for k in ("params_mb", "trained_mb", "optimizer_mb", "temp_mb",
                                         "total_mb")}} for r in lora_table],
          [("setup", "setup"), ("params_mb", "params MB"), ("trained_mb", "trained MB"),
           ("optimizer_mb", "optimizer state MB"), ("temp_mb", "step temporaries MB"),
           ("total_mb", "sum MB")]),
      "", f"**Token log-probs at the real vocabulary**, loss + grad of the mean next-token "
      f"log-prob, B x T = {args.batch} x {args.length} (one float32 [B, T, V] tensor: "
      f"{f(logits_mb)} MB):", "",
      common.markdown_table(
          [{**r, "temp_mb": f(r["temp_mb"])} for r in lp_table],
          [("objective", "objective"), ("layers", "layers"), ("remat", "remat"),
           ("chunk", "positions per chunk"),
           ("temp_mb", "temporaries MB")]),
  ])
  print(body)
  if args.update_readme:
    common.update_readme("Memory: LoRA and chunked log-probs", body)


if __name__ == "__main__":
  main()
