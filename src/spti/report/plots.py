"""Numbers of the run as curves: a small line plot drawn as an inlined PNG, and the numeric leaves of a
JSON object (a metric entry, a per-iteration row) picked out for plotting and tables."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def png_plot(xs: Sequence[float], ys: Sequence[float], title: str, ylabel: str) -> str | None:
    """A small line plot as a data URI, drawn with the Agg canvas directly (no pyplot: no global backend
    switch in the caller's process). None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(4.8, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, marker="o", linewidth=1.5, markersize=3.5, color="#3461c1")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    return None


def flatten_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if "value" in v and num(v["value"]) is not None:
                out[key] = num(v["value"])  # type: ignore[assignment]
            else:
                out.update(flatten_numbers(v, key + "."))
        elif num(v) is not None:
            out[key] = num(v)  # type: ignore[assignment]
    return out
