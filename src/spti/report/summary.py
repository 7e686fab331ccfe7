"""The top of the report, read at a glance: the guarantee in one sentence, how many images, the key metrics
(each labelled not differentially private) and, right after it, the image grid; then the curves over
iterations as plots and the class-mix chart.

Why this order: the first screen answers what a reader opens the report for — what is protected, how much,
and does it look right — before the details (budget table, models, config, manifest, counters), which follow
collapsed.

Class mix: when the run folder holds ``class_mix.json`` (written by a run whose images have known labels,
e.g. the demo), a bar chart of the share of each class in each named series::

    {"classes": ["sneaker", "bag", ...],
     "series": [{"name": "private set", "mix": [0.62, 0.05, ...], "differentially_private": false},
                {"name": "iteration 0", "mix": [...]}, ..., {"name": "release", "mix": [...]},
                {"name": "ideal sampler", "mix": [...]}],
     "note": "labels were never shown to the pipeline"}

``mix`` may hold counts or shares (it is normalised); ``series`` may also be a ``{name: mix}`` object. A
series computed from the private data carries ``"differentially_private": false`` (a name starting with
"private" is treated the same) and is labelled so in the chart and the table.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

from spti.data.card import privacy_status
from spti.report.markup import NOT_DP_LABEL, Raw, esc, fmt, notdp, note, section, table
from spti.report.metrics_sections import metric_value_html
from spti.report.plots import num
from spti.report.reader import RunReader

__all__ = ["CLASS_MIX_FILE", "class_mix_section", "guarantee_html", "summary_section"]

CLASS_MIX_FILE = "class_mix.json"
_MAX_MIX_SERIES = 7


def _exact(v: Any) -> str:
    if isinstance(v, str) and v.lower() in ("inf", "infinity"):
        return "∞"
    if isinstance(v, float):
        return "∞" if math.isinf(v) else f"{v:.4g}"
    return esc(fmt(v))


def guarantee_html(run: RunReader, manifest: Mapping[str, Any]) -> str:
    """One sentence: what release/ is protected by (ε, δ, unit), or plainly that it is not private."""
    ledger = run.json("privacy.json")
    covered, why = privacy_status(ledger, manifest)
    if not covered:
        return (f'<p id="guarantee" class="guarantee notprivate"><strong>This run is NOT differentially '
                f"private.</strong> {esc(why)}</p>")
    budget = ledger["budget"]
    unit = budget.get("unit") or "record"
    eps = num(budget.get("epsilon"))
    factor = f" ≈ {math.exp(eps):.3g}" if eps is not None and eps < 50 else ""
    return (
        f'<p id="guarantee" class="guarantee"><strong>release/ is ({esc(_exact(budget.get("epsilon")))}, '
        f"{esc(_exact(budget.get('delta')))})-differentially private per {esc(unit)}:</strong> adding or "
        f"removing any one {esc(unit)}'s data changes the probability of this release by at most a factor "
        f"e<sup>ε</sup>{factor}, except with probability δ.</p>"
    )


def _counts_line(run: RunReader) -> str:
    meta = run.jsonl("release/metadata.jsonl")
    n_img = len([r for r in meta if isinstance(r.get("file_name"), str)]) if meta is not None else None
    if n_img is None and (run.root / "release" / "images").is_dir():
        from spti.data.listing import list_images

        n_img = len(list_images(run.root / "release" / "images"))
    caps = run.jsonl("release/dp_captions.jsonl")
    bits = []
    if n_img is not None:
        bits.append(f"<strong>{n_img:,}</strong> synthetic images")
    if caps is not None:
        bits.append(f"<strong>{len(caps):,}</strong> DP captions")
    if not bits:
        return note("release/ holds no images or captions yet")
    return f"<p>{' and '.join(bits)} in <code>release/</code> (the only part of the run to publish).</p>"


def _one_line(name: str, entry: Any) -> str:
    """A metric's value(s) on one line (PRDC's four scores side by side): the summary must stay short."""
    return metric_value_html(name, entry).replace("<br>", " · ")


def _key_metrics(metrics: Any) -> str:
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("metrics"), Mapping) or not metrics["metrics"]:
        return ""
    mets = metrics["metrics"]
    ceiling = metrics.get("ceiling") if isinstance(metrics.get("ceiling"), Mapping) else None
    cmets = ceiling.get("metrics") if ceiling and isinstance(ceiling.get("metrics"), Mapping) else {}
    head = "<tr><th>metric</th><th>release</th>"
    if ceiling:
        head += "<th>ceiling: private captions rendered</th>"
    rows = []
    for name, entry in mets.items():
        row = f"<tr><td>{esc(name)}</td><td>{_one_line(name, entry)} {notdp()}</td>"
        if ceiling:
            c = cmets.get(name)
            row += f"<td>{_one_line(name, c)} {notdp()}</td>" if c is not None else "<td>—</td>"
        rows.append(row + "</tr>")
    return (f'<table class="keymetrics"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def summary_section(run: RunReader, manifest: Mapping[str, Any], metrics: Any) -> str:
    """The at-a-glance block: guarantee, counts, key metrics, and the legend of the labels."""
    parts = [guarantee_html(run, manifest), _counts_line(run), _key_metrics(metrics)]
    if isinstance(metrics, Mapping) and isinstance(metrics.get("ceiling"), Mapping):
        parts.append(note("Ceiling: the private captions rendered with the release renderer (not DP, kept in "
                          "private/ceiling/). Release vs ceiling is the cost of the DP noise; ceiling vs the "
                          "private images is the cost of the captioner and the text-to-image model."))
    parts.append(
        f'<p class="note">Only <code>release/</code> is covered by the guarantee. Numbers marked {notdp()} are '
        "exact values computed from the private data: keep them with the run, do not publish them.</p>"
    )
    # no heading: the page's title is right above, and the first screen must reach the images
    return f'<section id="summary" class="glance">{"".join(parts)}</section>'



# ------------------------------------------------------------------------------------------ class mix
def _series(data: Mapping[str, Any], n_classes: int) -> list[tuple[str, list[float], bool]]:
    raw = data.get("series")
    items: list[tuple[str, Any, Any]] = []
    if isinstance(raw, Mapping):
        items = [(str(k), v, None) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(str(s.get("name", f"series {i}")), s.get("mix"), s.get("differentially_private"))
                 for i, s in enumerate(raw) if isinstance(s, Mapping)]
    out = []
    for name, mix, dp in items:
        if not isinstance(mix, list) or len(mix) != n_classes or any(num(v) is None or num(v) < 0 for v in mix):
            continue
        total = sum(float(v) for v in mix)
        if total <= 0:
            continue
        not_dp = dp is False or name.lower().startswith("private")
        out.append((name, [float(v) / total for v in mix], not_dp))
    return out


def _mix_plot(classes: list[str], series: list[tuple[str, list[float], bool]]) -> str | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(8.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    k = len(series)
    width = 0.8 / max(k, 1)
    for j, (name, mix, not_dp) in enumerate(series):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(classes))]
        ax.bar(xs, mix, width=width, label=f"{name} ({NOT_DP_LABEL})" if not_dp else name)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=30 if len(classes) > 5 else 0, ha="right" if len(classes) > 5 else "center",
                       fontsize=8)
    ax.set_ylabel("share of images", fontsize=9)
    ax.set_title("class mix", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # never over a bar
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def class_mix_section(run: RunReader) -> str | None:
    """The class-mix chart and table, or None when the run folder has no ``class_mix.json``."""
    data = run.json(CLASS_MIX_FILE)
    if data is None:
        return None
    classes = data.get("classes") if isinstance(data, Mapping) else None
    if not isinstance(classes, list) or not classes:
        run.notes.append(f"{CLASS_MIX_FILE} names no classes; the class-mix chart is omitted")
        return None
    classes = [str(c) for c in classes]
    series = _series(data, len(classes))
    if not series:
        run.notes.append(f"{CLASS_MIX_FILE} holds no usable series; the class-mix chart is omitted")
        return None
    shown = series
    if len(series) > _MAX_MIX_SERIES:  # keep the ends (private set, iteration 0 ... release, ideal sampler)
        shown = series[:3] + series[-(_MAX_MIX_SERIES - 3):]
    parts = []
    if isinstance(data.get("note"), str):
        parts.append(note(data["note"]))
    uri = _mix_plot(classes, shown)
    if uri is not None:
        parts.append(f'<div class="wide"><img src="{uri}" alt="class mix"></div>')
    ref = next((s for s in series if s[2]), None)  # the private set's mix, if given
    headers = ["series", *classes]
    if ref is not None:
        headers.append(f"total variation from {ref[0]}")
    rows = []
    for name, mix, not_dp in series:
        label = f"{esc(name)} {notdp()}" if not_dp else esc(name)
        row: list[Any] = [Raw(label), *[round(v, 3) for v in mix]]
        if ref is not None:
            tv = 0.5 * sum(abs(a - b) for a, b in zip(mix, ref[1]))
            row.append(Raw(f"{esc(fmt(round(tv, 3)))} {notdp()}"))
        rows.append(row)
    parts.append("<details><summary>values</summary>" + table(headers, rows) + "</details>")
    return section("class-mix", "Class mix", "".join(parts))
