"""Numbers of the run as pictures: small line plots drawn as inlined PNGs (matplotlib), a confusion matrix
as inline SVG, and the numeric leaves of a JSON object (a metric entry, a per-iteration row) picked out for
plotting and tables."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _iteration_axes(height: float) -> tuple[Any, Any] | None:
    """A small figure on the Agg canvas directly (no pyplot: no global backend switch in the caller's
    process) and its axes; None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(4.8, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _finish(fig: Any, ax: Any, title: str, ylabel: str, *, legend_entries: int = 0) -> str:
    """Title, "iteration" x axis with integer ticks, grid, an optional legend; the figure as a PNG data URI."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    if 0 < legend_entries <= 12:
        ax.legend(fontsize=6, ncol=2 if legend_entries > 6 else 1, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_plot(xs: Sequence[float], ys: Sequence[float], title: str, ylabel: str) -> str | None:
    """A small line plot as a data URI. None when matplotlib is not installed."""
    made = _iteration_axes(3.0)
    if made is None:
        return None
    fig, ax = made
    ax.plot(xs, ys, marker="o", linewidth=1.5, markersize=3.5, color="#3461c1")
    return _finish(fig, ax, title, ylabel)


def png_lines(series: Mapping[str, Sequence[tuple[float, float]]], title: str, ylabel: str) -> str | None:
    """Several curves over iterations in one small plot (a metric overall and per class), as a data URI;
    the first series is drawn thick (the overall one). None when matplotlib is not installed."""
    made = _iteration_axes(3.2)
    if made is None:
        return None
    fig, ax = made
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if i == 0 else None,
                linewidth=2.2 if i == 0 else 1.0, markersize=3.5, label=str(name)[:24],
                color="#1f2430" if i == 0 else None, alpha=1.0 if i == 0 else 0.8)
    return _finish(fig, ax, title, ylabel, legend_entries=len(series))


def confusion_svg(labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> str:
    """A confusion matrix as inline SVG (no matplotlib needed, no external resource): rows are the true
    classes, columns the predicted ones, each cell shaded by its share of the row (so that a small class
    reads as well as a large one) and, when there is room, labelled with its count. Class names are
    escaped and shortened."""
    from html import escape

    k = len(labels)
    cell = 30 if k <= 12 else (18 if k <= 30 else 8)
    text = k <= 30
    longest = min(max((len(str(c)) for c in labels), default=1), 14) if text else 0
    pad_l = 28 + longest * 6
    pad_t = 34 + longest * 5
    # room on the right for the last rotated column name, and for the title
    w = max(pad_l + k * cell + 10 + longest * 3, 12 + int(len(title) * 6.2))
    h = pad_t + k * cell + 26
    short = [str(c) if len(str(c)) <= 14 else str(c)[:13] + "…" for c in labels]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="confusion" role="img" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" style="max-width:100%;height:auto" font-family="sans-serif">'
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="14" font-size="12">{escape(title)}</text>',
        f'<text x="{pad_l + k * cell / 2:.0f}" y="{h - 6}" font-size="10" text-anchor="middle">predicted class</text>',
        f'<text x="12" y="{pad_t + k * cell / 2:.0f}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + k * cell / 2:.0f})">true class</text>',
    ]
    for i in range(k):
        row = [float(v) for v in matrix[i]]
        total = sum(row)
        y = pad_t + i * cell
        if text:
            out.append(f'<text x="{pad_l - 4}" y="{y + cell / 2 + 3:.0f}" font-size="9" text-anchor="end">'
                       f"{escape(short[i])}</text>")
        for j in range(k):
            x = pad_l + j * cell
            share = row[j] / total if total else 0.0
            r, g, b = (int(255 - share * (255 - c)) for c in ((40, 160, 70) if i == j else (52, 97, 193)))
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="rgb({r},{g},{b})">'
                       f"<title>{escape(short[i])} → {escape(short[j])}: {int(row[j])}</title></rect>")
            if text and cell >= 18 and row[j]:
                colour = "#fff" if share > 0.55 else "#1f2430"
                out.append(f'<text x="{x + (cell - 1) / 2:.1f}" y="{y + cell / 2 + 3:.0f}" font-size="8" '
                           f'text-anchor="middle" fill="{colour}">{int(row[j])}</text>')
    if text:
        for j in range(k):
            x = pad_l + j * cell + cell / 2
            out.append(f'<text x="{x:.0f}" y="{pad_t - 4}" font-size="9" transform="rotate(-60 {x:.0f} {pad_t - 4})">'
                       f"{escape(short[j])}</text>")
    out.append("</svg>")
    return "".join(out)


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
