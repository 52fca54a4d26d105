"""Train-step throughput and MFU of the rewardlab transformer (AdamW, causal LM loss).

For each size and compute dtype this times the real jitted step from
`rewardlab.train.step.make_train_step` (value_and_grad, global-norm clipping, AdamW,
metrics) and reports tokens/s, achieved training FLOP/s
(`config.flops_per_token(seq) * tokens/s`) and MFU against the matmul peak measured
in the same run (f32, and bf16 inputs with f32 accumulation).

    python benchmarks/train_step.py                       # all CPU sizes, f32 + bf16
    python benchmarks/train_step.py --sizes d512 --breakdown
    python benchmarks/train_step.py --device gpu --sizes qwen05b --dtype bfloat16

`--update-readme` writes the table under "Train step" in benchmarks/README.md; the
JSON goes to benchmarks/results/train_step_<device>.json. `--breakdown` also times the
forward loss alone and the gradient without the optimizer, to see where time goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks import common  # noqa: E402
from rewardlab import models  # noqa: E402
from rewardlab.train import state as train_state  # noqa: E402
from rewardlab.train import step as train_step  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Size:
  """A model shape and the batch that makes one step take ~0.2-1 s on its device."""

  hidden: int
  layers: int
  heads: int
  kv_heads: int
  ffn: int
  vocab: int
  seq: int
  batch: int
  tie_embeddings: bool = False
  qkv_bias: bool = False


SIZES = {
    # CPU sizes: head dim 64, MLP 3x, vocab 512, 2k tokens per step.
    "d256": Size(hidden=256, layers=4, heads=4, kv_heads=4, ffn=768, vocab=512, seq=256,
                 batch=8),
    "d512": Size(hidden=512, layers=4, heads=8, kv_heads=8, ffn=1536, vocab=512, seq=256,
                 batch=4),
    "d768": Size(hidden=768, layers=6, heads=12, kv_heads=12, ffn=2048, vocab=512, seq=256,
                 batch=2),
    # The peer-baseline model of DESIGN.md (Llama/Qwen2 d256, 8 heads / 4 kv heads).
    "peer256": Size(hidden=256, layers=4, heads=8, kv_heads=4, ffn=688, vocab=512, seq=256,
                    batch=8),
    # Qwen2-0.5B shape with a random init, for accelerators.
    "qwen05b": Size(hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, vocab=151936,
                    seq=1024, batch=8, tie_embeddings=True, qkv_bias=True),
}
CPU_SIZES = ("d256", "d512", "d768")


def model_config(size: Size, dtype: str) -> models.TransformerConfig:
  """f32 parameters; `dtype` is the matmul input dtype (f32 accumulation either way)."""
  return models.TransformerConfig(
      vocab_size=size.vocab, hidden_size=size.hidden, num_layers=size.layers,
      num_heads=size.heads, num_kv_heads=size.kv_heads, intermediate_size=size.ffn,
      max_position_embeddings=max(2048, size.seq), tie_embeddings=size.tie_embeddings,
      qkv_bias=size.qkv_bias, dtype=dtype, param_dtype="float32")


def make_batch(config: models.TransformerConfig, batch: int, seq: int, device) -> dict:
  """Random tokens [B, T] with every position a target."""
  tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, config.vocab_size, jnp.int32)
  return jax.device_put({"tokens": tokens, "loss_mask": jnp.ones((batch, seq), jnp.int32)},
                        device)


def lm_loss(config: models.TransformerConfig):
  """`loss_fn(params, batch)` for `make_train_step`: the causal LM loss of the model."""
  forward = lambda params, tokens, mask: models.forward(config, params, tokens,
                                                        attention_mask=mask)[0]
  return functools.partial(train_step.causal_lm_loss, forward)


class TrainStepRunner:
  """A compiled full train step and its state; each call runs one step (state donated)."""

  def __init__(self, config: models.TransformerConfig, batch: dict, device):
    tx = train_state.adamw(optax.constant_schedule(1e-4), weight_decay=0.1)
    params = jax.device_put(models.init_params(config, jax.random.key(0)), device)
    self.state = train_state.TrainState.create(params, tx)
    self.batch = batch
    step_fn = train_step.make_train_step(lm_loss(config), tx)
    self.compiled, self.compile_s = common.compile_jitted(step_fn, self.state, batch)

  def __call__(self) -> dict:
    self.state, metrics = self.compiled(self.state, self.batch)
    return metrics


def time_breakdown(config, batch: dict, *, steps: int, device) -> dict:
  """Seconds of the forward loss alone and of value_and_grad without the optimizer."""
  params = jax.device_put(models.init_params(config, jax.random.key(0)), device)
  loss_fn = lm_loss(config)
  forward = jax.jit(lambda p, b: loss_fn(p, b)[0])
  grad = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b)[0]))
  out = {}
  for name, fn in (("forward", forward), ("grad", grad)):
    compiled, _ = common.compile_jitted(fn, params, batch)
    out[name] = common.time_calls(lambda: compiled(params, batch), warmup=1, repeats=steps)
  return out


def bench_size(name: str, size: Size, args, device) -> list[dict]:
  """Rows for one size, one per dtype (MFU added later); the dtypes' steps alternate."""
  seq, batch_size = args.seq or size.seq, args.batch or size.batch
  configs = {dtype: model_config(size, dtype) for dtype in args.dtype}
  batch = make_batch(configs[args.dtype[0]], batch_size, seq, device)
  runners = {dtype: TrainStepRunner(config, batch, device) for dtype, config in configs.items()}
  timings = common.time_interleaved(runners, warmup=args.warmup, repeats=args.steps)
  tokens = batch_size * seq
  rows = []
  for dtype, config in configs.items():
    timing, flops = timings[dtype], config.flops_per_token(seq) * tokens
    row = {
        "size": name, "dtype": dtype, "params_m": config.num_params() / 1e6,
        "batch": batch_size, "seq": seq, "flops_per_token": config.flops_per_token(seq),
        "compile_s": runners[dtype].compile_s, "step_s": timing.median,
        "step_s_all": list(timing.times), "cpu_s": timing.cpu_median,
        "cpu_s_all": list(timing.cpu_times), "cpu_share": timing.cpu_share,
        "tokens_per_s": tokens / timing.median, "flops_per_s": flops / timing.median,
        "flops_per_cpu_s": flops / timing.cpu_median,
        "loss": float(runners[dtype]()["loss"]),
    }
    if args.breakdown:
      parts = time_breakdown(config, batch, steps=args.steps, device=device)
      for part, part_timing in parts.items():
        row[f"{part}_s"], row[f"{part}_cpu_s"] = part_timing.median, part_timing.cpu_median
    rows.append(row)
  del runners
  return rows


def measure_peaks(n: int, device, when: str) -> dict:
  peaks = {}
  for dtype in ("float32", "bfloat16"):
    peaks[dtype] = common.matmul_peak(jnp.dtype(dtype), n=n, device=device)
    print(f"matmul peak ({when}) {dtype} inputs, f32 acc, n={n}: "
          f"{common.gflops(peaks[dtype]['flops_per_s'])} GFLOP/s", flush=True)
  return peaks


def add_ratios(rows: list[dict], peaks: dict) -> None:
  """MFU against each peak (wall clock, and CPU time), and bf16 over f32 of the same size."""
  for row in rows:
    wanted = ["float32"] + ([row["dtype"]] if row["dtype"] != "float32" else [])
    for peak in (p for p in wanted if p in peaks):
      row[f"mfu_vs_{peak}_peak"] = row["flops_per_s"] / peaks[peak]["flops_per_s"]
      row[f"cpu_mfu_vs_{peak}_peak"] = row["flops_per_cpu_s"] / peaks[peak]["flops_per_cpu_s"]
    f32 = next((r for r in rows if r["size"] == row["size"] and r["dtype"] == "float32"), None)
    if f32 is not None and row["dtype"] != "float32":
      row["speedup_vs_f32"] = row["tokens_per_s"] / f32["tokens_per_s"]
      row["cpu_speedup_vs_f32"] = f32["cpu_s"] / row["cpu_s"]


def run(args) -> dict:
  """Peaks before and after the model rows; MFU uses the higher of the two (conservative)."""
  device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
  machine = common.describe_machine(device)
  n = args.matmul_n or (2048 if device.platform == "cpu" else 8192)
  before = measure_peaks(n, device, "before")
  rows = []
  with jax.default_device(device):
    for name in args.sizes:
      for row in bench_size(name, SIZES[name], args, device):
        rows.append(row)
        print(format_row(row), flush=True)
  after = measure_peaks(n, device, "after")
  peaks = {d: {"n": n, **{k: max(before[d][k], after[d][k])
                         for k in ("flops_per_s", "flops_per_cpu_s")}} for d in before}
  add_ratios(rows, peaks)
  return {"machine": machine, "matmul_peak": peaks,
          "matmul_peak_before_after": {"before": before, "after": after}, "rows": rows,
          "command": command_line(), "steps": args.steps, "warmup": args.warmup}


def format_row(row: dict) -> str:
  return (f"{row['size']:>8} {row['dtype']:>9}: step {row['step_s'] * 1e3:7.1f} ms, "
          f"{row['tokens_per_s']:8.0f} tok/s, {common.gflops(row['flops_per_s'])} GFLOP/s, "
          f"CPU share {common.percent(row['cpu_share'])}, compile {row['compile_s']:.1f} s")


COLUMNS = [
    ("size", "size"), ("params", "params"), ("tokens", "batch x seq"), ("dtype", "matmul dtype"),
    ("compile", "compile s"), ("step", "step ms"), ("tok_s", "tokens/s"), ("gflops", "GFLOP/s"),
    ("mfu32", "MFU (f32 peak)"), ("mfu16", "MFU (bf16 peak)"), ("speedup", "vs f32"),
    ("cpu", "CPU share"), ("cpu_mfu", "CPU-time MFU (f32 / bf16 peak)"),
    ("cpu_speedup", "CPU-time vs f32"),
]


def _pct(row: dict, key: str) -> str:
  return common.percent(row[key]) if key in row else ""


def _ratio(row: dict, key: str) -> str:
  return f"{row[key]:.2f}x" if key in row else ""


def table(results: dict, breakdown: bool = False) -> str:
  """The results table (markdown); `breakdown` adds forward-only and fwd+bwd columns."""
  rows = []
  for r in results["rows"]:
    cpu_mfu = " / ".join(filter(None, (_pct(r, "cpu_mfu_vs_float32_peak"),
                                       _pct(r, "cpu_mfu_vs_bfloat16_peak"))))
    rows.append({
        "size": r["size"], "params": f"{r['params_m']:.1f}M",
        "tokens": f"{r['batch']} x {r['seq']}", "dtype": r["dtype"],
        "compile": f"{r['compile_s']:.1f}", "step": f"{r['step_s'] * 1e3:.0f}",
        "tok_s": f"{r['tokens_per_s']:,.0f}", "gflops": common.gflops(r["flops_per_s"]),
        "mfu32": _pct(r, "mfu_vs_float32_peak"), "mfu16": _pct(r, "mfu_vs_bfloat16_peak"),
        "speedup": _ratio(r, "speedup_vs_f32"), "cpu": common.percent(r["cpu_share"]),
        "cpu_mfu": cpu_mfu, "cpu_speedup": _ratio(r, "cpu_speedup_vs_f32"),
        "fwd": f"{r['forward_cpu_s']:.2f}" if "forward_s" in r else "",
        "grad": f"{r['grad_cpu_s']:.2f}" if "grad_s" in r else "",
        "step_cpu": f"{r['cpu_s']:.2f}",
    })
  extra = [("fwd", "forward CPU-s"), ("grad", "fwd+bwd CPU-s"), ("step_cpu", "step CPU-s")]
  columns = COLUMNS + (extra if breakdown else [])
  return common.markdown_table(rows, columns)


def sizes_table(names) -> str:
  columns = [("size", "size"), ("d", "d_model"), ("layers", "layers"),
             ("heads", "heads / kv heads"), ("ffn", "MLP width"), ("vocab", "vocab")]
  rows = [{"size": n, "d": SIZES[n].hidden, "layers": SIZES[n].layers,
           "heads": f"{SIZES[n].heads} / {SIZES[n].kv_heads}", "ffn": SIZES[n].ffn,
           "vocab": SIZES[n].vocab} for n in dict.fromkeys(names)]
  return common.markdown_table(rows, columns)


def peaks_line(results: dict) -> str:
  n = results["matmul_peak"]["float32"]["n"]
  ba = results["matmul_peak_before_after"]
  each = lambda d: " / ".join(common.gflops(ba[w][d]["flops_per_s"]) for w in ("before", "after"))
  per_core = lambda d: common.gflops(results["matmul_peak"][d]["flops_per_cpu_s"])
  return (f"Same-run matmul peak ({n}x{n}x{n}, jitted, median of "
          f"{len(ba['before']['float32']['seconds'])} calls, measured before / after the "
          f"model rows; MFU uses the higher): f32 {each('float32')} GFLOP/s, bf16 inputs "
          f"with f32 accumulation {each('bfloat16')} GFLOP/s. Per CPU-second: f32 "
          f"{per_core('float32')}, bf16 {per_core('bfloat16')} GFLOP.")


def command_line() -> str:
  return "python benchmarks/train_step.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def shared_machine_note(results: dict, threshold: float = 0.8) -> str:
  """A warning when the timed steps had less than `threshold` of the machine's cores."""
  shares = [r["cpu_share"] for r in results["rows"]]
  if not shares or min(shares) >= threshold:
    return ""
  return (f"**The machine was shared during this run**: the timed steps got "
          f"{common.percent(min(shares))}-{common.percent(max(shares))} of the CPU time of "
          f"all cores, so the wall-clock columns understate what the code does on a quiet "
          f"machine; the CPU-time columns are the steadier guide.")


def readme_body(results: dict, notes: str, breakdown: bool) -> str:
  machine = "\n".join(common.machine_lines(results["machine"]))
  return "\n\n".join(filter(None, [
      shared_machine_note(results),
      f"Command: `{results['command'].strip()}`",
      machine,
      peaks_line(results),
      sizes_table(r["size"] for r in results["rows"]),
      table(results, breakdown),
      "Full train step (causal LM loss, value_and_grad, global-norm clip, AdamW, metrics); "
      f"median of {results['steps']} timed steps after {results['warmup']} warmup steps, "
      "the dtypes of a size timed alternately (one step of each per round). "
      "GFLOP/s counts `TransformerConfig.flops_per_token(seq)` (6 per weight, causal "
      "attention) per token; MFU divides by the same-run matmul peak; `vs f32` is bf16 "
      "tokens/s over f32 tokens/s of the same size. Parameters are f32; `bfloat16` casts "
      "matmul inputs and accumulates in f32. `CPU share` is the process CPU time over "
      "(wall time x cores) during the timed steps: well below 100% means other processes "
      "had part of the cores, and the wall-clock columns are then pessimistic. The "
      "`CPU-time` columns divide by process-CPU seconds instead of wall seconds (FLOPs per "
      "core-second of the step over FLOPs per core-second of the peak matmul); they hardly "
      "move with the machine's load and are optimistic when threads sit idle.",
      notes,
  ]))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  csv = lambda s: [x for x in s.split(",") if x]
  parser.add_argument("--sizes", type=csv, default=list(CPU_SIZES),
                      help=f"comma-separated, from {sorted(SIZES)}")
  parser.add_argument("--dtype", type=csv, default=["float32", "bfloat16"],
                      help="comma-separated matmul input dtypes (timed alternately)")
  parser.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None,
                      help="jax platform (default: jax's default backend)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compile")
  parser.add_argument("--batch", type=int, default=None, help="override every size's batch")
  parser.add_argument("--seq", type=int, default=None, help="override every size's seq")
  parser.add_argument("--matmul-n", type=int, default=None,
                      help="peak matmul size (default 2048 on CPU, 8192 elsewhere)")
  parser.add_argument("--breakdown", action="store_true",
                      help="also time the forward loss and value_and_grad without the "
                           "optimizer (reported in process-CPU seconds)")
  parser.add_argument("--update-readme", action="store_true",
                      help="write the table under 'Train step' in benchmarks/README.md")
  parser.add_argument("--notes", default="", help="text appended below the README table")
  parser.add_argument("--out", type=Path, default=None,
                      help="JSON path (default benchmarks/results/train_step_<device>.json)")
  args = parser.parse_args(argv)
  unknown = [s for s in args.sizes if s not in SIZES]
  if unknown:
    parser.error(f"--sizes: unknown {unknown}; choose from {sorted(SIZES)}")
  bad = [d for d in args.dtype if d not in ("float32", "bfloat16", "float16")]
  if bad:
    parser.error(f"--dtype: unknown {bad}; choose from float32, bfloat16, float16")
  if args.steps < 1 or args.warmup < 0:
    parser.error("--steps must be >= 1 and --warmup >= 0")
  return args


def main(argv=None):
  args = parse_args(argv)
  results = run(args)
  print()
  print(peaks_line(results))
  print(table(results, args.breakdown))
  print(f"wrote {common.save_results('train_step', results, args.out)}")
  if args.update_readme:
    common.update_readme("Train step", readme_body(results, args.notes, args.breakdown))
    print(f"updated {common.README}")


if __name__ == "__main__":
  main()
