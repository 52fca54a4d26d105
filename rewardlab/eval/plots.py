"""PNG plots: reliability diagrams and accuracy-vs-budget curves.

Figures are drawn on the Agg canvas directly (`matplotlib.figure.Figure`), so no
pyplot global state is touched and no display is needed.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, StrMethodFormatter

__all__ = ["plot_reliability", "plot_curves"]


def _get(obj: Any, name: str):
    """Attribute or mapping entry `name` of obj (dataclass results or their dicts)."""
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_reliability(bins, path: str | os.PathLike, title: str = "Reliability diagram") -> str:
    """Reliability diagram: per-bin accuracy bars against the diagonal, with counts.

    Args:
      bins: a `ReliabilityBins` (or its `to_dict()`), with `edges`, `confidence`,
        `accuracy`, `count`.
      path: PNG file to write (parent folders are created).
      title: figure title.

    Bars span their bins at height = accuracy; a dot marks each bin's mean
    confidence, the dashed diagonal is perfect calibration, and the number of
    samples is written above every non-empty bin. Returns the path written.
    """
    edges = np.asarray(_get(bins, "edges"), dtype=np.float64)
    acc = np.asarray(_get(bins, "accuracy"), dtype=np.float64)
    conf = np.asarray(_get(bins, "confidence"), dtype=np.float64)
    count = np.asarray(_get(bins, "count"), dtype=np.int64)
    full = count > 0
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.bar(edges[:-1][full], acc[full], width=np.diff(edges)[full], align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot(conf[full], acc[full], "o", color="C3", label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    centers = (edges[:-1] + edges[1:]) / 2
    for x, a, n in zip(centers[full], acc[full], count[full]):
        ax.text(x, min(a + 0.02, 0.97), str(int(n)), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="fraction correct",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_curves(curves, path: str | os.PathLike, xlabel: str = "samples per problem (N)",
                ylabel: str = "accuracy", title: str = "", *, logx: bool = True) -> str:
    """Accuracy-vs-N (or vs tokens) lines with shaded confidence bands.

    Args:
      curves: mapping label -> curve, or a sequence of curves (labels from their
        `label`); each curve has `x`, `mean`, `ci_low`, `ci_high` (e.g.
        `rewardlab.search.Curve`, or a dict with those keys).
      path: PNG file to write.
      logx: log2 x axis (budgets usually double); switched off if any x <= 0.

    Returns the path written.
    """
    items = curves.items() if isinstance(curves, Mapping) else [(_get(c, "label"), c) for c in curves]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    all_x = []
    for i, (label, curve) in enumerate(items):
        x = np.asarray(_get(curve, "x"), dtype=np.float64)
        all_x.append(x)
        ax.plot(x, _get(curve, "mean"), "o-", color=f"C{i}", label=str(label), markersize=3)
        ax.fill_between(x, _get(curve, "ci_low"), _get(curve, "ci_high"), color=f"C{i}",
                        alpha=0.2, linewidth=0)
    if not all_x:
        raise ValueError("plot_curves needs at least one curve")
    if logx and np.min(np.concatenate(all_x)) > 0:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 1, 2, 4 rather than 2^k
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
