"""Shared pieces of the benchmarks: timing, the matmul peak, the machine, tables.

Every benchmark measures its own matmul peak in the same run, because on a shared
machine the peak moves by ~20% from minute to minute; MFU is always against that
same-run peak. Timings are medians over repeated calls after warmup, each call
synchronised with `block_until_ready`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall and process-CPU seconds of each timed call.

  `median` is the wall-clock median (what throughput is reported from). On a shared
  machine wall time depends on what else runs; the CPU seconds this process spent per
  call (`cpu_median`) depend much less on it, so `cpu_median / cores` is a
  contention-robust estimate of the quiet-machine time (optimistic when the threads
  idle). `cpu_share` is CPU time over (wall time x cores): near 1 when the process had
  the whole machine.
  """

  times: tuple[float, ...]
  cpu_times: tuple[float, ...]

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def min(self) -> float:
    return min(self.times)

  @property
  def cpu_median(self) -> float:
    return statistics.median(self.cpu_times)

  @property
  def cpu_share(self) -> float:
    return sum(self.cpu_times) / (sum(self.times) * (os.cpu_count() or 1))


def block(tree):
  """Wait for every array in `tree`; returns `tree`."""
  return jax.block_until_ready(tree)


def _process_cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> Timing:
  """Time `fn()` (a closure over its inputs) `repeats` times after `warmup` calls."""
  if repeats < 1:
    raise ValueError(f"time_calls: repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    block(fn())
  times, cpu_times = [], []
  for _ in range(repeats):
    cpu_start, start = _process_cpu_seconds(), time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - start)
    cpu_times.append(_process_cpu_seconds() - cpu_start)
  return Timing(tuple(times), tuple(cpu_times))


def time_interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int = 1,
                     repeats: int = 5) -> dict[str, Timing]:
  """Like `time_calls` for several closures, timed round-robin (one call of each per round).

  On a shared machine the load changes from second to second; interleaving gives every
  variant the same conditions, so ratios between them are far steadier than when each
  is timed in its own block.
  """
  if repeats < 1:
    raise ValueError(f"time_interleaved: repeats must be >= 1, got {repeats}")
  for fn in fns.values():
    for _ in range(warmup):
      block(fn())
  times = {name: [] for name in fns}
  cpu_times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      cpu_start, start = _process_cpu_seconds(), time.perf_counter()
      block(fn())
      times[name].append(time.perf_counter() - start)
      cpu_times[name].append(_process_cpu_seconds() - cpu_start)
  return {name: Timing(tuple(times[name]), tuple(cpu_times[name])) for name in fns}


def compile_jitted(jitted, *args):
  """Lower and compile `jitted` for `args`: returns (compiled executable, seconds)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


# ---------------------------------------------------------------------------- matmul peak


def _matmul_chain(a, b, *, inner: int):
  """`inner` dependent products x <- x @ b (inputs in b's dtype, f32 accumulation)."""

  def body(_, x):
    return jnp.matmul(x.astype(b.dtype), b, preferred_element_type=jnp.float32)

  return jax.lax.fori_loop(0, inner, body, a.astype(jnp.float32))


def matmul_peak(dtype, *, n: int, inner: int = 4, repeats: int = 5, device=None) -> dict:
  """Achieved FLOP/s of a jitted `n x n x n` matmul with `dtype` inputs, f32 accumulation.

  `inner` dependent matmuls run inside one jitted call (so dispatch cost vanishes on
  fast devices); b is Gaussian / sqrt(n) so the chain neither blows up nor vanishes.
  FLOP/s = 2 n^3 inner / median seconds per call; `flops_per_cpu_s` divides by the
  median process-CPU seconds instead (FLOPs per core-second, see `Timing`).
  """
  device = device or jax.devices()[0]
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32), device)
  b = jax.device_put((jax.random.normal(kb, (n, n), jnp.float32) / n ** 0.5).astype(dtype),
                     device)
  fn = jax.jit(lambda a, b: _matmul_chain(a, b, inner=inner))
  compiled, _ = compile_jitted(fn, a, b)
  timing = time_calls(lambda: compiled(a, b), warmup=1, repeats=repeats)
  flops = 2.0 * n ** 3 * inner
  return {"dtype": jnp.dtype(dtype).name, "n": n, "inner": inner,
          "flops_per_s": flops / timing.median, "best_flops_per_s": flops / timing.min,
          "flops_per_cpu_s": flops / max(timing.cpu_median, 1e-9), "seconds": list(timing.times),
          "cpu_seconds": list(timing.cpu_times), "cpu_share": timing.cpu_share}


# ---------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
  flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
  name = match.group(1).strip() if match else platform.machine()
  if flags:
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2", "fma")
    have = [f for f in wanted if f in flags.group(1).split()]
    name += f" ({', '.join(have)})" if have else ""
  return name


def describe_machine(device=None) -> dict:
  """CPU model and flags, cores, device ("platform:kind"), jax/jaxlib versions, XLA_FLAGS,
  date and load average."""
  device = device or jax.devices()[0]
  try:
    load = os.getloadavg()
  except OSError:
    load = None
  return {
      "cpu": _cpu_model(),
      "cores": os.cpu_count(),
      "platform": device.platform,
      "device": f"{device.platform}:{device.device_kind}",
      "jax": jax.__version__,
      "jaxlib": _jaxlib_version(),
      "python": platform.python_version(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "load_average_at_start": None if load is None else [round(x, 2) for x in load],
  }


def _jaxlib_version() -> str | None:
  try:
    import jaxlib  # pylint: disable=import-outside-toplevel
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def machine_lines(machine: dict) -> list[str]:
  """The machine description as markdown bullet lines."""
  load = machine.get("load_average_at_start")
  lines = [f"- CPU: {machine['cpu']}, {machine['cores']} cores",
           f"- Device: {machine['device'].replace(':', ' / ')} (jax platform / device kind)",
           f"- jax {machine['jax']}, jaxlib {machine['jaxlib']}, Python {machine['python']}",
           f"- XLA_FLAGS: `{machine['xla_flags'] or '(unset)'}`",
           f"- Date: {machine['date']}"]
  if load is not None:
    lines.append(f"- Load average at start (1/5/15 min): {load[0]} / {load[1]} / {load[2]}")
  return lines


# ---------------------------------------------------------------------------- output


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
  """A markdown table of `rows`; `columns` are (key, header) pairs, values pre-formatted."""
  header = "| " + " | ".join(h for _, h in columns) + " |"
  rule = "|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|"
  body = ["| " + " | ".join(str(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
  return "\n".join([header, rule, *body])


def write_json(path: Path, payload: dict) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
  return path


def save_results(name: str, results: dict, out: Path | None = None) -> Path:
  """Write `results` to `out`, by default `results/<name>_<platform>.json`; returns the path."""
  return write_json(out or RESULTS_DIR / f"{name}_{results['machine']['platform']}.json", results)


def replace_section(text: str, heading: str, body: str) -> str:
  """Replace the `## heading` section of markdown `text` (up to the next `## `) by `body`.

  The section is appended when absent. `body` excludes the heading line.
  """
  title = f"## {heading}"
  section = f"{title}\n\n{body.strip()}\n"
  pattern = re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
  if pattern.search(text):
    return pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
  return (text.rstrip() + "\n\n" if text.strip() else "") + section


def update_readme(heading: str, body: str, path: Path = README) -> None:
  """Write `body` under `## heading` in the benchmarks README, keeping other sections."""
  path = Path(path)
  text = path.read_text() if path.exists() else "# Benchmarks\n"
  path.write_text(replace_section(text, heading, body))


def gflops(x: float) -> str:
  return f"{x / 1e9:,.1f}"


def percent(x: float) -> str:
  return f"{100 * x:.0f}%"
