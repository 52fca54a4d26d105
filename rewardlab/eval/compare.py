"""Paired comparisons of two methods on the same problems, with a verdict.

Two methods scored on the same P problems give per-problem outcomes `a`, `b` `[P]`. The
difference of their means is estimated from the per-problem differences `d = a - b`
(paired: the problem-to-problem variance cancels), with the normal-approximation
interval `mean(d) ± z · sd(d, ddof=1) / sqrt(P)`. A claim "a beats b" is *reproduced*
when the whole interval is above 0, *contradicted* when it is below 0, and *not
resolved* at this sample size otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from rewardlab.search.curves import z_value

REPRODUCED, CONTRADICTED, UNRESOLVED = "reproduced", "contradicted", "not resolved"


def paired_difference(a, b, confidence: float = 0.95) -> dict:
  """`{"a", "b", "diff", "low", "high", "n"}` for per-problem outcomes `a`, `b` `[P]`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"a and b must be equal-length non-empty 1-D arrays, got {a.shape}, {b.shape}")
  d = a - b
  se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
  half = z_value(confidence) * se
  diff = float(d.mean())
  return {"a": float(a.mean()), "b": float(b.mean()), "diff": diff, "low": diff - half,
          "high": diff + half, "n": int(d.size)}


def verdict(comparison: dict) -> str:
  """Reproduced / contradicted / not resolved for the claim "a > b"."""
  if comparison["low"] > 0:
    return REPRODUCED
  if comparison["high"] < 0:
    return CONTRADICTED
  return UNRESOLVED
