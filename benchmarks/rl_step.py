"""One RL update (GRPO) at SmolLM2-135M size: peak RSS, tokens/s and MFU.

The step is `rewardlab.rl.update.update_step`, jitted as `make_update` does (state
donated), on a batch built directly (no sampling): `--prompts` groups of `--group`
completions, each `--prompt-len` prompt tokens + `--new-tokens` completion tokens
(every completion full length, random tokens; returns 0/1 with both values in every
group, so every group is informative). Settings are `rl_grpo.py`'s defaults: π_old
recomputed, π_ref on every row (logged KL), `--minibatches` minibatches, one epoch,
AdamW with global-norm clipping.

Variants (each best run alone in its own process, see `--variants`):
- `chunked`: token log-probs and entropies in sequence chunks (the default,
  `TransformerConfig.logprob_chunk = 0`: automatic, ~64 MB of logits per chunk);
- `unchunked`: `logprob_chunk = new_tokens`, so one chunk covers every position and the
  full float32 `[N, T, V]` logits are formed, as the update did before chunking
  (`unembed`, `log_softmax`, gather, entropy from the same tensor);
- `lora`: `chunked` with LoRA adapters (rank `--rank` on q/k/v/o and gate/up/down), the
  reference being the base itself.

    python benchmarks/rl_step.py --variants unchunked,chunked,lora   # one process each,
        # under /usr/bin/time -v; writes results/rl_step_<platform>.json
    python benchmarks/rl_step.py --variant chunked --compile-only    # XLA memory_analysis
    python benchmarks/rl_step.py --cpu-smoke --variants unchunked,chunked,lora  # seconds

FLOPs of a step (for MFU): every forward pass over the N x (P + T) rows counts 2 per
weight of the decoder layers and causal attention, and 2 per unembedding weight at the
T completion positions only (the logits are read nowhere else); the update is one
forward (π_old) + one forward over every k-th row (π_ref) + forward and backward (3x)
per epoch. MFU divides by the float32 matmul peak measured in the same process
(`common.matmul_peak`, before and after the step, the higher one).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from rewardlab import models  # noqa: E402
from rewardlab.models import lora  # noqa: E402
from rewardlab.models import logprobs as logprobs_lib  # noqa: E402
from rewardlab.rl import update as update_lib  # noqa: E402
from rewardlab.train.state import TrainState  # noqa: E402

VARIANTS = ("unchunked", "chunked", "lora")
GB = 1e9
SMOLLM2_SHAPE = dict(vocab_size=49_152, hidden_size=576, num_layers=30, num_heads=9,
                     num_kv_heads=3, head_dim=64, intermediate_size=1536,
                     rope_theta=100_000.0, tie_embeddings=True, max_position_embeddings=2048)
SMOKE_SHAPE = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=128, tie_embeddings=True, max_position_embeddings=256)


def _rss_gb() -> float:
  """This process's peak RSS so far (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def load_model(args):
  """(config, params): SmolLM2 weights from `--model-dir` (default: the converted cache
  directory of `rewardlab.assets.smollm2`), or random weights of SmolLM2's shape
  (`--random`), or the tiny smoke shape."""
  if args.cpu_smoke or args.random:
    config = models.TransformerConfig(**(SMOKE_SHAPE if args.cpu_smoke else SMOLLM2_SHAPE))
    return config, models.init_params(config, jax.random.key(0))
  from rewardlab import load_pretrained  # pylint: disable=import-outside-toplevel
  model_dir = args.model_dir
  if not model_dir:
    from rewardlab.assets import smollm2  # pylint: disable=import-outside-toplevel
    model_dir = smollm2.ensure_smollm2()
  return load_pretrained(model_dir)


def make_batch(config, args) -> dict:
  """The update's batch (`rollout.training_batch` fields + scores, token rewards, EOS)."""
  n, p, t = args.prompts * args.group, args.prompt_len, args.new_tokens
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, config.vocab_size, size=(n, p + t)).astype(np.int32)
  steps = np.arange(t)
  scores = np.tile((np.arange(args.group) % 2).astype(np.float32), args.prompts)
  return {
      "tokens": tokens, "attention_mask": np.ones((n, p + t), np.int32),
      "completion_index": np.broadcast_to(p - 1 + steps, (n, t)).astype(np.int32),
      "completion_tokens": tokens[:, p:].copy(),
      "completion_mask": np.ones((n, t), np.int32),
      "sampler_logprobs": np.full((n, t), -2.0, np.float32),
      "scores": scores, "token_rewards": np.zeros((n, t), np.float32),
      "has_eos": np.ones((n,), bool),
  }


def step_flops(config, algo, rows: int, prompt_len: int, new_tokens: int) -> dict:
  """Matmul FLOPs of one update (see the module docstring)."""
  d, hd, width = config.hidden_size, config.head_size, prompt_len + new_tokens
  per_layer = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads) + 3 * d * \
      config.intermediate_size
  # causal attention: scores + weighted sum over (on average) half the keys
  body = 2 * config.num_layers * per_layer + 2 * config.num_layers * config.num_heads * hd * width
  forward = rows * width * body + rows * new_tokens * 2 * config.vocab_size * d
  passes = 3 * algo.num_epochs + (1 if algo.old_logprobs == "recompute" else 0) \
      + 1 / algo.reference_stride
  return {"forward": float(forward), "forward_equivalents": passes,
          "step": float(forward * passes)}


def run_variant(args) -> dict:
  """Build, compile and run one variant's update `--steps` times in this process."""
  out = {"variant": args.variant, "rss_gb": {}}
  device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
  out["machine"] = common.describe_machine(device)
  with jax.default_device(device):
    config, params = load_model(args)
    if args.variant == "unchunked":
      config = config.replace(logprob_chunk=args.new_tokens)
    rows = args.prompts * args.group
    out["positions_per_chunk"] = logprobs_lib.sequence_chunk(config, rows, args.new_tokens)
    algo = update_lib.Algorithm(group_size=args.group, num_minibatches=args.minibatches)
    tx = update_lib.make_optimizer(5e-5, 5, 0.0, 1.0)
    adapters = lora.LoraConfig()
    state_params = {"policy": params}
    if args.variant == "lora":
      adapters = lora.LoraConfig(rank=args.rank, alpha=2.0 * args.rank)
      state_params = lora.attach(adapters, state_params, jax.random.key(1), model_config=config,
                                 base_key="policy")
      ref_params, tx = None, lora.freeze_base(tx, base_key="policy")
    else:
      ref_params = jax.tree.map(jnp.copy, params)
    state = TrainState.create(state_params, tx)
    batch = jax.device_put(make_batch(config, args), device)
    out["rss_gb"]["after_load"] = _rss_gb()
    out["bytes"] = {
        "params": lora.tree_bytes(state.params),
        "trained": lora.tree_bytes(state.params if args.variant != "lora" else
                                   {k: v for k, v in state.params.items() if k != "policy"}),
        "optimizer_state": lora.tree_bytes(state.opt_state),
        "reference": 0 if ref_params is None else lora.tree_bytes(ref_params),
        "batch": lora.tree_bytes(batch),
        "one_f32_logits": rows * args.new_tokens * config.vocab_size * 4,
    }
    step = functools.partial(update_lib.update_step, config=config, algo=algo, tx=tx,
                             adapters=adapters)
    rng = jax.random.PRNGKey(0)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch, ref_params, rng).compile()
    out["compile_s"] = time.perf_counter() - start
    stats = compiled.memory_analysis()
    if stats is not None:
      out["compiled"] = {"argument": stats.argument_size_in_bytes,
                         "output": stats.output_size_in_bytes,
                         "temp": stats.temp_size_in_bytes, "alias": stats.alias_size_in_bytes}
    out["rss_gb"]["after_compile"] = _rss_gb()
    out["flops"] = step_flops(config, algo, rows, args.prompt_len, args.new_tokens)
    out["params_count"] = int(sum(x.size for x in jax.tree.leaves(params)))
    print(json.dumps({k: out[k] for k in ("variant", "compile_s", "bytes", "rss_gb")}
                     | {"compiled": out.get("compiled")}), flush=True)
    if args.compile_only:
      return out
    planned = (out["compiled"]["argument"] + out["compiled"]["temp"]) / GB \
        if "compiled" in out else 0.0
    if device.platform == "cpu" and planned > args.max_gb:
      raise SystemExit(f"{args.variant}: the compiled step needs {planned:.1f} GB (arguments + "
                       f"temporaries) > --max-gb {args.max_gb}; not run")
    peaks = [common.matmul_peak(jnp.float32, n=args.matmul_n, device=device)] \
        if args.peak else []
    times, cpu_times, load = [], [], []
    for _ in range(args.steps):
      load.append(os.getloadavg()[0])
      cpu0, start = time.process_time(), time.perf_counter()
      state, metrics = compiled(state, batch, ref_params, rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu0)
    load.append(os.getloadavg()[0])
    if args.peak:
      peaks.append(common.matmul_peak(jnp.float32, n=args.matmul_n, device=device))
    out["rss_gb"]["after_step"] = _rss_gb()
    out.update(step_s=times, step_cpu_s=cpu_times, load_1min_around_steps=load,
               loss=float(metrics["loss"]), metrics_finite=bool(all(
                   np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(metrics))))
    step_s = min(times)
    out["completion_tokens_per_s"] = rows * args.new_tokens / step_s
    out["row_tokens_per_s"] = rows * (args.prompt_len + args.new_tokens) / step_s
    out["flops_per_s"] = out["flops"]["step"] / step_s
    out["flops_per_cpu_s"] = out["flops"]["step"] / min(cpu_times)
    out["cpu_share"] = sum(cpu_times) / (sum(times) * (os.cpu_count() or 1)) \
        if device.platform == "cpu" else None
    if peaks:
      best = max(p["flops_per_s"] for p in peaks)
      out["matmul_peak_f32"] = {"flops_per_s": [p["flops_per_s"] for p in peaks],
                                "flops_per_cpu_s": [p["flops_per_cpu_s"] for p in peaks]}
      out["mfu"] = out["flops_per_s"] / best
      out["cpu_time_mfu"] = out["flops_per_cpu_s"] / max(p["flops_per_cpu_s"] for p in peaks)
  return out


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


def run_separately(args) -> dict:
  """Each variant in its own process under `/usr/bin/time -v`: its peak RSS and results."""
  results = {"setup": setup_of(args), "command": command_line(), "variants": []}
  time_bin = "/usr/bin/time"
  with tempfile.TemporaryDirectory() as tmp:
    for variant in args.variants:
      path = Path(tmp) / f"{variant}.json"
      worker = [sys.executable, str(Path(__file__).resolve()), *worker_args(args),
                "--variant", variant, "--worker-out", str(path)]
      if variant == "chunked" and not args.no_peak:
        worker.append("--peak")
      command = ([time_bin, "-v"] if os.path.exists(time_bin) else []) + worker
      load_before = os.getloadavg()
      proc = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
      sys.stderr.write(proc.stderr[-4000:])
      row = json.loads(path.read_text()) if path.exists() else {"variant": variant}
      match = _MAX_RSS.search(proc.stderr)
      row.update(returncode=proc.returncode,
                 load_before=[round(x, 2) for x in load_before],
                 load_after=[round(x, 2) for x in os.getloadavg()],
                 peak_rss_gb=int(match.group(1)) * 1024 / GB if match else None)
      results["variants"].append(row)
      print(summary_line(row), flush=True)
  results["machine"] = next((r["machine"] for r in results["variants"] if "machine" in r),
                            common.describe_machine())
  return results


def summary_line(row: dict) -> str:
  parts = [f"{row['variant']}: rc {row.get('returncode')}"]
  if row.get("peak_rss_gb") is not None:
    parts.append(f"peak RSS {row['peak_rss_gb']:.2f} GB")
  if "compiled" in row:
    parts.append(f"compiled temporaries {row['compiled']['temp'] / GB:.2f} GB")
  if "step_s" in row:
    parts.append(f"step {min(row['step_s']):.1f} s, {row['completion_tokens_per_s']:.0f} "
                 f"completion tok/s, {row['flops_per_s'] / 1e9:.1f} GFLOP/s")
  if "mfu" in row:
    parts.append(f"MFU {100 * row['mfu']:.0f}% (CPU-time {100 * row['cpu_time_mfu']:.0f}%)")
  return ", ".join(parts)


def setup_of(args) -> dict:
  return {k: getattr(args, k) for k in ("prompts", "group", "prompt_len", "new_tokens",
                                        "minibatches", "rank", "random", "cpu_smoke",
                                        "model_dir", "steps")}


def worker_args(args) -> list[str]:
  out = ["--prompts", str(args.prompts), "--group", str(args.group),
         "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens),
         "--minibatches", str(args.minibatches), "--rank", str(args.rank),
         "--steps", str(args.steps), "--max-gb", str(args.max_gb),
         "--matmul-n", str(args.matmul_n)]
  for flag in ("random", "cpu_smoke", "compile_only"):
    if getattr(args, flag):
      out.append("--" + flag.replace("_", "-"))
  if args.model_dir:
    out += ["--model-dir", args.model_dir]
  if args.device:
    out += ["--device", args.device]
  return out


def command_line() -> str:
  return "python benchmarks/rl_step.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def readme_body(results: dict) -> str:
  s, m = results["setup"], results["machine"]
  rows = []
  for r in results["variants"]:
    b = r.get("bytes", {})
    rows.append({
        "variant": r["variant"],
        "chunk": r.get("positions_per_chunk", ""),
        "rss": f"{r['peak_rss_gb']:.2f}" if r.get("peak_rss_gb") else "",
        "after_compile": f"{r['rss_gb']['after_compile']:.2f}" if "rss_gb" in r else "",
        "temp": f"{r['compiled']['temp'] / GB:.2f}" if "compiled" in r else "",
        "params": f"{b['params'] / GB:.3f}" if b else "",
        "opt": f"{b['optimizer_state'] / GB:.3f}" if b else "",
        "ref": f"{b['reference'] / GB:.3f}" if b else "",
        "step": f"{min(r['step_s']):.1f}" if "step_s" in r else "",
        "tok": f"{r['completion_tokens_per_s']:,.0f}" if "step_s" in r else "",
        "load": (f"{r['load_1min_around_steps'][0]:.1f} -> {r['load_1min_around_steps'][-1]:.1f}"
                 if "load_1min_around_steps" in r else ""),
    })
  return "\n".join([
      f"Command: `{results['command']}`", "", *common.machine_lines(m), "",
      f"{s['prompts']} prompts x {s['group']} samples, prompt {s['prompt_len']} + "
      f"{s['new_tokens']} new tokens per row, {s['minibatches']} minibatches, one epoch.", "",
      common.markdown_table(rows, [
          ("variant", "variant"), ("chunk", "positions per chunk"),
          ("rss", "peak RSS GB (/usr/bin/time)"), ("after_compile", "RSS after compile GB"),
          ("temp", "compiled temporaries GB"), ("params", "params GB"),
          ("opt", "optimizer state GB"), ("ref", "reference copy GB"),
          ("step", "step s"), ("tok", "completion tok/s"), ("load", "1-min load")]),
  ])


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = parser.add_argument
  add("--variants", type=lambda s: [v for v in s.split(",") if v], default=None,
      help=f"comma-separated, from {VARIANTS}: each in its own process under /usr/bin/time -v")
  add("--variant", choices=VARIANTS, default=None, help="run one variant in this process")
  add("--prompts", type=int, default=8)
  add("--group", type=int, default=8)
  add("--prompt-len", type=int, default=128)
  add("--new-tokens", type=int, default=256)
  add("--minibatches", type=int, default=2)
  add("--rank", type=int, default=16)
  add("--steps", type=int, default=1, help="timed steps after the compile")
  add("--model-dir", default=None, help="HF directory (default: the converted SmolLM2)")
  add("--random", action="store_true", help="random weights of SmolLM2's shape")
  add("--cpu-smoke", action="store_true",
      help="a tiny random model and batch (seconds): checks that the script runs")
  add("--compile-only", action="store_true", help="XLA memory_analysis only; no step is run")
  add("--max-gb", type=float, default=16.0,
      help="on CPU, refuse to run a step whose arguments + temporaries exceed this")
  add("--peak", action="store_true", help="measure the f32 matmul peak around the step (MFU)")
  add("--no-peak", action="store_true", help="with --variants: no matmul peak (no MFU)")
  add("--matmul-n", type=int, default=None,
      help="peak matmul size (default 2048 on CPU, 8192 elsewhere)")
  add("--device", choices=["cpu", "gpu", "tpu"], default=None)
  add("--update-readme", action="store_true")
  add("--out", type=Path, default=None, help="JSON (default results/rl_step_<platform>.json)")
  add("--worker-out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.cpu_smoke:
    args.prompts, args.group, args.prompt_len, args.new_tokens = 2, 4, 8, 16
    args.matmul_n = 512
  if args.matmul_n is None:
    args.matmul_n = 2048 if args.device in (None, "cpu") else 8192
  if (args.variants is None) == (args.variant is None):
    parser.error("give exactly one of --variants (one process each) or --variant")
  bad = [v for v in args.variants or () if v not in VARIANTS]
  if bad:
    parser.error(f"--variants: unknown {bad}; choose from {VARIANTS}")
  if args.prompts * args.group % args.minibatches:
    parser.error("--minibatches must divide prompts x group")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.variant:
    result = run_variant(args)
    result["setup"] = setup_of(args)
    if args.worker_out:
      common.write_json(Path(args.worker_out), result)
    else:
      print(summary_line(result))
    return
  results = run_separately(args)
  body = readme_body(results)
  print(body)
  name = "rl_step_smoke" if args.cpu_smoke else "rl_step"
  print(f"wrote {common.save_results(name, results, args.out)}")
  if args.update_readme:
    common.update_readme("RL step at SmolLM2-135M size: memory and throughput", body)
  if any(r.get("returncode") for r in results["variants"]):
    raise SystemExit("a variant failed (see its stderr above)")


if __name__ == "__main__":
  main()
