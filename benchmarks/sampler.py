"""Greedy decoding throughput: rewardlab's jitted sampler against transformers `generate`.

Both decode the same random Llama weights (built with torch + transformers, saved as
safetensors and loaded into rewardlab): a batch of prompts of equal length, a fixed
number of new tokens, greedy, no EOS. Reported per decoder: tokens/s (median of
`--repeats` timed calls after a warmup; a call is the whole `generate`, prefill
included), our compile time (first call minus the steady call), our decode throughput
as a share of the memory-bandwidth bound, and the share of greedy tokens equal to the
first row's. transformers runs with each of `--torch-threads` (2 is the reference
setting; on a busy 2-core machine 2 threads can be far slower than 1, so both are
timed and ours is compared with the faster). Ours runs with each `--cache-chunks`
value (None: every step attends over the whole preallocated cache).

The bound: one decode step must read every weight it multiplies (all parameters but
the embedding table, which is only gathered; the table counts once if tied) and the
keys and values of every token in context. Bytes per step over the memory bandwidth
measured in the same run (median of jitted `x.sum()` over a large float32 array, so
DRAM, and over an array the size of one step's bytes, which may sit in cache) gives
the shortest possible step; `bound share` = that time / our measured step time.

`--model-dir` decodes a real checkpoint instead (e.g. SmolLM2-135M-Instruct from `make
smollm2`), `--param-dtype bfloat16` gives both decoders bf16 weights, and `--separate`
runs each decoder alone in a fresh process (`--rounds` rounds, order alternating, calls
pooled, the load average recorded around each process) so that no two thread pools
share the cores.

    python benchmarks/sampler.py                        # the DESIGN.md peer setup
    python benchmarks/sampler.py --model-dir runs/models/SmolLM2-135M-Instruct --batch 16 \
      --new-tokens 64 --separate --torch-threads 1 --cache-chunks none
    python benchmarks/sampler.py --batch 64 --new-tokens 256 --device gpu --skip-hf
    python benchmarks/sampler.py --device gpu --torch-device cuda --torch-threads 16

Writes benchmarks/results/sampler_<platform>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
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
import rewardlab  # noqa: E402
from rewardlab import sampling  # noqa: E402


def build_hf_model(args):
  """The transformers Llama: `--model-dir`'s weights, or random weights of the requested
  shape (eager attention), in `--param-dtype`."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  dtype = getattr(torch, args.param_dtype)
  if args.model_dir:
    return transformers.AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=dtype, attn_implementation="sdpa").eval()
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
      num_hidden_layers=args.layers, num_attention_heads=args.heads,
      num_key_value_heads=args.kv_heads, max_position_embeddings=max(
          2048, args.prompt_len + args.new_tokens), tie_word_embeddings=False,
      bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="sdpa")
  return transformers.LlamaForCausalLM(config).eval().to(dtype)


def prompts_array(args) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(3, args.vocab, size=(args.batch, args.prompt_len)).astype(np.int32)


def hf_caller(model, prompts: np.ndarray, args, threads: int):
  """A call of transformers greedy `generate` with `threads` torch threads -> new tokens."""
  import torch  # pylint: disable=import-outside-toplevel

  ids = torch.tensor(prompts, dtype=torch.long, device=args.torch_device)
  mask = torch.ones_like(ids)

  def call():
    torch.set_num_threads(threads)
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    return out[:, prompts.shape[1]:].cpu().numpy()

  return call


def our_caller(config, params, prompts: np.ndarray, args, cache_chunk):
  """A call of rewardlab greedy `generate` -> new tokens (checks that no row stopped)."""
  prompt_list = [list(map(int, p)) for p in prompts]

  def call():
    out = sampling.generate(config, params, prompt_list, max_new_tokens=args.new_tokens,
                            temperature=0.0, cache_chunk=cache_chunk)
    if not (out.lengths == args.new_tokens).all():
      raise RuntimeError("our generate stopped early; the benchmark needs fixed lengths")
    return out.tokens

  return call


def time_interleaved(calls: dict, repeats: int) -> dict:
  """Seconds of each call: one untimed first call each (compile / warmup), then `repeats`
  rounds that time every call once, so that load changes hit all decoders alike.

  Also records the CPU seconds of this process per call (all threads): on a busy machine
  they move far less than wall time, so they compare the work each decoder does.
  """
  results = {}
  for name, call in calls.items():
    start = time.perf_counter()
    tokens = call()
    results[name] = {"first_call_s": time.perf_counter() - start, "seconds": [],
                     "tokens": tokens}
  for result in results.values():
    result["cpu_seconds"] = []
  for _ in range(repeats):
    for name, call in calls.items():
      start, cpu_start = time.perf_counter(), time.process_time()
      results[name]["tokens"] = call()
      results[name]["seconds"].append(time.perf_counter() - start)
      results[name]["cpu_seconds"].append(time.process_time() - cpu_start)
  for result in results.values():
    result["compile_s"] = result["first_call_s"] - statistics.median(result["seconds"])
  return results


def memory_bandwidth(num_bytes: int, device, repeats: int = 7) -> float:
  """Bytes/s of a jitted float32 `x.sum()` over `num_bytes` bytes (median)."""
  n = max(num_bytes // 4, 1024)
  x = jax.device_put(jnp.ones((n,), jnp.float32), device)
  fn = jax.jit(lambda a: a.sum())
  compiled, _ = common.compile_jitted(fn, x)
  timing = common.time_calls(lambda: compiled(x), warmup=2, repeats=repeats)
  return 4 * n / timing.median


def bytes_per_step(config, params, args) -> dict:
  """Minimum bytes one decode step reads: weights it multiplies + the keys/values in context.

  The KV bytes are averaged over the decode steps (context prompt_len .. +new_tokens-1).
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  total = sum(x.size * x.dtype.itemsize for _, x in leaves)
  embed = params["embed_tokens"]
  gathered_only = 0 if config.tie_embeddings else embed.size * embed.dtype.itemsize
  weights = total - gathered_only
  itemsize = jnp.dtype(config.compute_dtype).itemsize
  mean_context = args.prompt_len + (args.new_tokens - 1) / 2
  kv = (2 * config.num_layers * args.batch * config.num_kv_heads * config.head_size
        * itemsize * mean_context)
  return {"weights": int(weights), "kv_cache_mean": float(kv), "total": float(weights + kv)}


def decoders_of(args) -> list[tuple]:
  """(decoder, setting) pairs: ("rewardlab", cache_chunk) and ("transformers", threads)."""
  ours = [("rewardlab", chunk) for chunk in args.cache_chunks]
  return ours + ([] if args.skip_hf else [("transformers", t) for t in args.torch_threads])


def time_here(args, decoders: list[tuple]) -> dict:
  """Time `decoders` in this process, interleaved; with rewardlab among them also the
  bound's inputs (bytes per step, same-run bandwidth)."""
  device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
  ours = [d for d in decoders if d[0] == "rewardlab"]
  theirs = [d for d in decoders if d[0] == "transformers"]
  model = build_hf_model(args) if theirs or not args.model_dir else None
  prompts = prompts_array(args)
  out = {"machine": common.describe_machine(device)}
  calls = {}
  if ours:
    with tempfile.TemporaryDirectory() as tmp:
      source = args.model_dir
      if not source:
        model.save_pretrained(tmp, safe_serialization=True)
        source = tmp
      with jax.default_device(device):
        config, params = rewardlab.load_pretrained(source, dtype=jnp.dtype(args.param_dtype))
    params = jax.device_put(params, device)
    step_bytes = bytes_per_step(config, params, args)
    with jax.default_device(device):
      out["bandwidth"] = {"dram": memory_bandwidth(args.bandwidth_mb << 20, device),
                          "working_set": memory_bandwidth(int(step_bytes["total"]), device)}
    out.update(step_bytes=step_bytes, params=int(sum(x.size for x in jax.tree.leaves(params))))
    calls.update({d: our_caller(config, params, prompts, args, d[1]) for d in ours})
  if theirs:
    model.to(args.torch_device)
    calls.update({d: hf_caller(model, prompts, args, d[1]) for d in theirs})
  with jax.default_device(device):
    out["timed"] = time_interleaved(calls, args.repeats)
  return out


def _key(decoder: tuple) -> str:
  return f"{decoder[0]}:{'none' if decoder[1] is None else decoder[1]}"


def _from_key(key: str) -> tuple:
  name, setting = key.split(":")
  return name, None if setting == "none" else int(setting)


def time_separately(args) -> dict:
  """Each decoder alone in a fresh process, `--rounds` rounds with the order alternating;
  seconds pooled over the rounds; the load average recorded around every process."""
  decoders = decoders_of(args)
  merged, runs = {}, []
  with tempfile.TemporaryDirectory() as tmp:
    for round_index in range(args.rounds):
      for decoder in decoders if round_index % 2 == 0 else decoders[::-1]:
        path = f"{tmp}/{_key(decoder)}_{round_index}.json"
        command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:],
                   "--only", _key(decoder), "--worker-out", path]
        load_before = os.getloadavg()
        subprocess.run(command, check=True)
        result = json.loads(Path(path).read_text())
        runs.append({"decoder": _key(decoder), "round": round_index,
                     "load_before": [round(x, 2) for x in load_before],
                     "load_after": [round(x, 2) for x in os.getloadavg()],
                     "machine": result["machine"]})
        print(f"round {round_index} {_key(decoder)}: median "
              f"{statistics.median(result['timed'][_key(decoder)]['seconds']):.2f} s per call, "
              f"load {runs[-1]['load_before'][0]:.1f} -> {runs[-1]['load_after'][0]:.1f}",
              flush=True)
        for key in ("step_bytes", "bandwidth", "params"):
          if key in result:
            merged[key] = result[key]
        timed = result["timed"][_key(decoder)]
        pooled = merged.setdefault("timed", {}).setdefault(decoder, {
            "first_call_s": timed["first_call_s"], "compile_s": timed["compile_s"],
            "seconds": [], "cpu_seconds": []})
        pooled["seconds"] += timed["seconds"]
        pooled["cpu_seconds"] += timed["cpu_seconds"]
        pooled["tokens"] = np.asarray(timed["tokens"])
  merged["machine"] = runs[0]["machine"]
  merged["runs"] = runs
  return merged


def run(args) -> dict:
  if args.separate:
    measured = time_separately(args)
  else:
    measured = time_here(args, decoders_of(args))
  timed, new = measured["timed"], args.batch * args.new_tokens
  step_bytes, bandwidth = measured.get("step_bytes"), measured.get("bandwidth", {})
  rows = []
  for (decoder, setting), result in timed.items():
    seconds = statistics.median(result["seconds"])
    step_s = seconds / args.new_tokens
    cpu_seconds = statistics.median(result["cpu_seconds"])
    row = {"decoder": decoder, "seconds": result["seconds"], "tokens_per_s": new / seconds,
           "best_tokens_per_s": new / min(result["seconds"]), "step_ms": 1e3 * step_s,
           "cpu_seconds": result["cpu_seconds"], "tokens_per_cpu_s": new / cpu_seconds,
           "tokens": result["tokens"]}
    if decoder == "rewardlab":
      row.update(cache_chunk=setting, first_call_s=result["first_call_s"],
                 compile_s=result["compile_s"],
                 bound_share={k: step_bytes["total"] / bw / step_s for k, bw in bandwidth.items()})
    else:
      row["torch_threads"] = setting
    rows.append(row)
  reference = rows[0]["tokens"]
  for row in rows:
    row["greedy_token_agreement"] = float((row.pop("tokens") == reference).mean())
  for hf in [r for r in rows if r["decoder"] == "transformers"]:
    for row in rows:
      row.setdefault("speedup", {})[f"torch{hf['torch_threads']}"] = (
          row["tokens_per_s"] / hf["tokens_per_s"])
  return {
      "machine": measured["machine"], "command": command_line(),
      "setup": {k: getattr(args, k) for k in ("model_dir", "param_dtype", "hidden", "ffn",
                                              "layers", "heads", "kv_heads", "vocab", "batch",
                                              "prompt_len", "new_tokens", "repeats",
                                              "separate", "rounds")},
      "params": measured.get("params"), "bytes_per_step": step_bytes,
      "bandwidth_bytes_per_s": bandwidth, "rows": rows, "runs": measured.get("runs"),
  }


def write_worker_result(args) -> None:
  """`--only`: time one decoder in this process and write what the driver needs."""
  measured = time_here(args, [_from_key(args.only)])
  measured["timed"] = {_key(d): {**t, "tokens": np.asarray(t["tokens"]).tolist()}
                       for d, t in measured["timed"].items()}
  common.write_json(Path(args.worker_out), measured)


def table(result: dict) -> str:
  rows = []
  speedup_keys = list(result["rows"][0].get("speedup", {}))
  for r in result["rows"]:
    if r["decoder"] == "transformers":
      name = f"transformers generate, torch {r['torch_threads']} thread(s)"
    else:
      chunk = r["cache_chunk"]
      name = "rewardlab generate" + (f", cache_chunk={chunk}" if chunk else "")
    share = r.get("bound_share", {})
    row = {"name": name, "tok_s": f"{r['tokens_per_s']:,.0f}", "step": f"{r['step_ms']:.2f}",
           "best": f"{r['best_tokens_per_s']:,.0f}", "cpu": f"{r['tokens_per_cpu_s']:,.0f}",
           "compile": f"{r['compile_s']:.1f}" if "compile_s" in r else "",
           "dram": common.percent(share["dram"]) if share else "",
           "ws": common.percent(share["working_set"]) if share else "",
           "agree": f"{100 * r['greedy_token_agreement']:.0f}%"}
    row.update({k: f"{r['speedup'][k]:.2f}x" for k in speedup_keys})
    rows.append(row)
  speedup_columns = [(k, f"vs transformers {k[5:]} thr") for k in speedup_keys]
  return common.markdown_table(rows, [
      ("name", "decoder"), ("tok_s", "tokens/s"), ("best", "best-call tokens/s"),
      ("cpu", "tokens per CPU-s"), ("step", "ms / step"),
      ("compile", "compile s"), *speedup_columns,
      ("dram", "share of DRAM-bandwidth bound"), ("ws", "share of working-set bound"),
      ("agree", "same greedy tokens")])


def summary_lines(result: dict) -> list[str]:
  s, b, bw = result["setup"], result["bytes_per_step"], result["bandwidth_bytes_per_s"]
  pooled = f" per process, {s['rounds']} rounds pooled" if s["separate"] else ""
  lines = [
      f"Model: {s['model_dir'] or 'random weights'}: Llama d{s['hidden']}, ffn {s['ffn']}, "
      f"{s['layers']} layers, {s['heads']} heads / {s['kv_heads']} kv heads, vocab "
      f"{s['vocab']}, {s['param_dtype']} weights ({result['params'] / 1e6:.1f}M "
      f"params); batch {s['batch']} x prompt {s['prompt_len']}, {s['new_tokens']} new tokens, "
      f"greedy, no EOS; median of {s['repeats']} calls after warmup{pooled}.",
      f"Bytes read per decode step: weights {b['weights'] / 2**20:.1f} MiB + mean KV cache "
      f"{b['kv_cache_mean'] / 2**20:.1f} MiB; same-run bandwidth (jitted sum): DRAM "
      f"{bw['dram'] / 1e9:.1f} GB/s, working-set-sized array {bw['working_set'] / 1e9:.1f} GB/s.",
  ]
  if result.get("runs"):
    loads = "; ".join(f"{r['decoder']} round {r['round']}: {r['load_before'][0]:.1f} -> "
                      f"{r['load_after'][0]:.1f}" for r in result["runs"])
    lines.append(f"Each decoder alone in its own process, {s['rounds']} alternating rounds "
                 f"(calls pooled); 1-min load average before -> after each process: {loads}.")
  return lines


def command_line() -> str:
  return "python benchmarks/sampler.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add = parser.add_argument
  add("--hidden", type=int, default=256)
  add("--ffn", type=int, default=688)
  add("--layers", type=int, default=4)
  add("--heads", type=int, default=8)
  add("--kv-heads", type=int, default=4)
  add("--vocab", type=int, default=512)
  add("--batch", type=int, default=16, help="number of prompts")
  add("--prompt-len", type=int, default=16)
  add("--new-tokens", type=int, default=128)
  add("--repeats", type=int, default=5, help="timed calls (median reported)")
  ints = lambda text: [int(x) for x in text.split(",") if x]
  add("--torch-threads", type=ints, default=[2, 1],
      help="comma-separated torch thread counts to time transformers with")
  add("--cache-chunks", default=[None, 32],
      type=lambda text: [None if x == "none" else int(x) for x in text.split(",") if x],
      help="comma-separated `cache_chunk` values for our generate ('none' = whole cache)")
  add("--bandwidth-mb", type=int, default=512, help="array size for the DRAM bandwidth")
  add("--device", choices=["cpu", "gpu", "tpu"], default=None,
      help="jax platform (default: jax's default backend)")
  add("--skip-hf", action="store_true", help="time rewardlab only")
  add("--torch-device", default="cpu",
      help="torch device for transformers ('cuda' to compare on the GPU)")
  add("--model-dir", default=None,
      help="a local Hugging Face Llama directory (e.g. SmolLM2-135M-Instruct from "
           "`make smollm2`) instead of random weights; the shape flags are then ignored")
  add("--param-dtype", choices=["float32", "bfloat16"], default="float32",
      help="weights (and matmul inputs) of both decoders")
  add("--separate", action="store_true",
      help="run each decoder alone in its own process (alternating rounds)")
  add("--rounds", type=int, default=2, help="with --separate: rounds of all decoders")
  add("--out", type=Path, default=None,
      help="JSON path (default benchmarks/results/sampler_<platform>.json)")
  add("--only", default=None, help=argparse.SUPPRESS)  # worker: one decoder, e.g. rewardlab:none
  add("--worker-out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.model_dir:
    hf = json.loads((Path(args.model_dir) / "config.json").read_text())
    args.hidden, args.ffn, args.layers = (hf["hidden_size"], hf["intermediate_size"],
                                          hf["num_hidden_layers"])
    args.heads, args.kv_heads = hf["num_attention_heads"], hf["num_key_value_heads"]
    args.vocab = hf["vocab_size"]
  if args.repeats < 1 or args.batch < 1 or args.new_tokens < 1 or args.prompt_len < 1:
    parser.error("--repeats, --batch, --new-tokens and --prompt-len must be >= 1")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.only:
    write_worker_result(args)
    return
  result = run(args)
  print("\n".join(summary_lines(result)))
  print(table(result))
  print(f"wrote {common.save_results('sampler', result, args.out)}")


if __name__ == "__main__":
  main()
