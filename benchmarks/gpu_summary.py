"""Summarize the JSON results of `benchmarks/gpu_check.sh` as markdown tables.

    python benchmarks/gpu_summary.py DIR     # DIR holds sampler_*.json, train_step*.json,
                                             # rl_step*.json (any may be missing)

Sampler: tokens/s of both decoders, their ratio, the share of greedy tokens equal to
rewardlab's, and rewardlab's share of the memory-bandwidth bound (weights + mean KV cache
per decode step over the same-run device bandwidth). Train step: tokens/s, achieved
TFLOP/s and MFU against the same-run matmul peak and against the GPU's nominal dense
peak (`NOMINAL_TFLOPS`, looked up from the device kind). RL step: seconds, completion
tokens/s, compiled temporaries.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (no jax work: only the table helper)

# Dense (no sparsity) tensor-core peaks from the vendor's data sheets, TFLOP/s:
# (bf16 inputs, tf32 inputs). The f32 train step runs TF32 matmuls (JAX's default).
NOMINAL_TFLOPS = {
    "H100 80GB HBM3": (989.4, 494.7), "H100 SXM": (989.4, 494.7), "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 417.5), "H200": (989.4, 494.7), "A100": (312.0, 156.0),
}


def nominal_peak(device_kind: str, dtype: str) -> float | None:
  """FLOP/s of the nominal dense peak for `dtype` matmuls, or None for an unknown device."""
  for name, (bf16, tf32) in NOMINAL_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return 1e12 * (bf16 if dtype in ("bfloat16", "float16") else tf32)
  return None


def _load(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as err:
    print(f"(could not read {path}: {err})")
    return None


def sampler_table(paths: list[Path]) -> str:
  rows = []
  for path in paths:
    result = _load(path)
    if not result:
      continue
    s = result["setup"]
    ours = next((r for r in result["rows"] if r["decoder"] == "rewardlab"), None)
    hf = next((r for r in result["rows"] if r["decoder"] == "transformers"), None)
    if ours is None:
      continue
    share = ours.get("bound_share", {})
    rows.append({
        "file": path.name, "weights": s.get("param_dtype", "float32"),
        "shape": f"{s['batch']} x {s['new_tokens']}",
        "ours": f"{ours['tokens_per_s']:,.0f}",
        "hf": f"{hf['tokens_per_s']:,.0f}" if hf else "",
        "ratio": f"{ours['tokens_per_s'] / hf['tokens_per_s']:.1f}x" if hf else "",
        "agree": f"{100 * hf['greedy_token_agreement']:.1f}%" if hf else "",
        "same": ("yes" if hf and hf["greedy_token_agreement"] == 1.0 else "no") if hf else "",
        "step": f"{ours['step_ms']:.2f}",
        "bound": common.percent(share["dram"]) if "dram" in share else "",
        "bw": f"{result['bandwidth_bytes_per_s']['dram'] / 1e9:,.0f}"
              if result.get("bandwidth_bytes_per_s") else "",
    })
  return common.markdown_table(rows, [
      ("file", "result"), ("weights", "weights"), ("shape", "batch x new tokens"),
      ("ours", "rewardlab tok/s"), ("hf", "transformers tok/s"), ("ratio", "ratio"),
      ("agree", "same greedy tokens"), ("same", "identical"), ("step", "rewardlab ms / step"),
      ("bound", "share of bandwidth bound"), ("bw", "same-run bandwidth GB/s")])


def train_table(paths: list[Path]) -> str:
  rows = []
  for path in paths:
    result = _load(path)
    if not result:
      continue
    kind = result["machine"]["device"].split(":", 1)[-1]
    for r in result["rows"]:
      peak = result["matmul_peak"].get(r["dtype"], result["matmul_peak"]["float32"])
      nominal = nominal_peak(kind, r["dtype"])
      rows.append({
          "size": r["size"], "params": f"{r['params_m']:.0f}M",
          "tokens": f"{r['batch']} x {r['seq']}", "dtype": r["dtype"],
          "step": f"{r['step_s'] * 1e3:.1f}", "tok_s": f"{r['tokens_per_s']:,.0f}",
          "tflops": f"{r['flops_per_s'] / 1e12:,.1f}",
          "peak": f"{peak['flops_per_s'] / 1e12:,.0f}",
          "mfu": common.percent(r["flops_per_s"] / peak["flops_per_s"]),
          "nominal": (f"{common.percent(r['flops_per_s'] / nominal)} of {nominal / 1e12:,.0f}"
                      if nominal else "unknown device"),
          "compile": f"{r['compile_s']:.0f}"})
  return common.markdown_table(rows, [
      ("size", "size"), ("params", "params"), ("tokens", "batch x seq"), ("dtype", "matmuls"),
      ("compile", "compile s"), ("step", "step ms"), ("tok_s", "tokens/s"),
      ("tflops", "TFLOP/s"), ("peak", "same-run peak TFLOP/s"), ("mfu", "MFU (same-run)"),
      ("nominal", "MFU (nominal dense peak)")])


def rl_table(paths: list[Path]) -> str:
  rows = []
  for path in paths:
    result = _load(path)
    if not result:
      continue
    for r in result.get("variants", []):
      rows.append({
          "variant": r["variant"], "rc": r.get("returncode", ""),
          "temp": f"{r['compiled']['temp'] / 1e9:.2f}" if "compiled" in r else "",
          "step": f"{min(r['step_s']):.3f}" if "step_s" in r else "",
          "tok": f"{r['completion_tokens_per_s']:,.0f}" if "step_s" in r else "",
          "tflops": f"{r['flops_per_s'] / 1e12:,.1f}" if "step_s" in r else "",
          "mfu": common.percent(r["mfu"]) if "mfu" in r else ""})
  return common.markdown_table(rows, [
      ("variant", "variant"), ("rc", "exit"), ("temp", "compiled temporaries GB"),
      ("step", "step s"), ("tok", "completion tok/s"), ("tflops", "TFLOP/s"),
      ("mfu", "MFU (same-run f32 peak)")])


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    raise SystemExit("usage: python benchmarks/gpu_summary.py RESULTS_DIR")
  root = Path(argv[0])
  parts = [("Sampler (greedy, SmolLM2-135M shape, random weights)",
            sorted(root.glob("sampler_*.json")), sampler_table),
           ("Train step", sorted(root.glob("train_step*.json")), train_table),
           ("RL step (GRPO, SmolLM2-135M shape)", sorted(root.glob("rl_step*.json")), rl_table)]
  for title, paths, make in parts:
    print(f"\n### {title}\n")
    try:
      print(make(paths) if paths else "(no results)")
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:  # keep the other tables
      print(f"(could not summarize {[p.name for p in paths]}: {err!r})")


if __name__ == "__main__":
  main()
