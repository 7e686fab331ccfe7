"""The report's metric sections: the final metrics with their "not differentially private" labels, the
curves over iterations, and the memorization audit (private images only with ``show_private``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spti.report.markup import NOT_DP_LABEL, esc, figure, fmt, notdp, note, section, table
from spti.report.plots import flatten_numbers, num, png_plot
from spti.report.reader import RunReader


def metric_value_html(name: str, entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return esc(fmt(entry))
    if "value" in entry:
        return f"<strong>{esc(fmt(entry['value']))}</strong>"
    if name == "prdc" or "precision" in entry:
        return "<br>".join(
            f"{esc(k)} <strong>{esc(fmt(entry.get(k)))}</strong>"
            for k in ("precision", "recall", "density", "coverage")
            if k in entry
        )
    if name == "memorization" or "n_flagged" in entry:
        return (
            f"<strong>{esc(fmt(entry.get('n_flagged')))}</strong> of {esc(fmt(entry.get('n_synthetic')))} "
            f"flagged (ratio &lt; {esc(fmt(entry.get('threshold')))})"
        )
    nums = flatten_numbers(entry)
    return "<br>".join(f"{esc(k)} <strong>{esc(fmt(v))}</strong>" for k, v in list(nums.items())[:6])


def metric_details(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return ""
    bits = []
    for k, label in (
        ("feature_space", "space"),
        ("n_real", "real"),
        ("n_synthetic", "synthetic"),
        ("implementation", "impl."),
        ("mode", "mode"),
        ("resolution", "resolution"),
        ("nearest_k", "k"),
    ):
        if entry.get(k) is not None:
            bits.append(f"{label}: {fmt(entry[k])}")
    emb = entry.get("embedder")
    if isinstance(emb, Mapping) and emb.get("backend"):
        bits.append(f"embedder: {emb.get('backend')}")
    if entry.get("weights_sha256"):
        bits.append(f"weights sha256: {str(entry['weights_sha256'])[:16]}…")
    return esc(" · ".join(bits))


def metrics_section(run: RunReader) -> tuple[str, Any]:
    """The final metrics in full (with the caption ceiling's next to them when it was measured); the
    per-iteration curves are drawn by :func:`curves_section`."""
    data = run.json("metrics.json")
    if not isinstance(data, Mapping):
        return section("metrics", "Metrics", note("metrics.json is missing: no evaluation was run")), None
    parts = [
        '<div class="banner warn">Every number in this section is computed against the private data and is '
        "NOT differentially private: do not publish it.</div>"
    ]
    mets = data.get("metrics")
    if not isinstance(mets, Mapping):
        mets = {k: v for k, v in data.items() if num(v) is not None}
    ceiling = data.get("ceiling") if isinstance(data.get("ceiling"), Mapping) else None
    cmets = ceiling.get("metrics") if ceiling and isinstance(ceiling.get("metrics"), Mapping) else {}
    if mets:
        rows = []
        for name, entry in mets.items():
            extra = ""
            if ceiling:
                c = cmets.get(name)
                extra = f"<td>{metric_value_html(name, c)} {notdp()}</td>" if c is not None else "<td>—</td>"
            rows.append(
                f"<tr><td><strong>{esc(name)}</strong></td><td>{metric_value_html(name, entry)} {notdp()}</td>"
                f"{extra}<td>{metric_details(entry)}</td></tr>"
            )
        chead = "<th>ceiling (private captions rendered)</th>" if ceiling else ""
        parts.append(
            f"<table><thead><tr><th>metric</th><th>value</th>{chead}<th>details</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        parts.append(note("metrics.json holds no final metrics"))
    if ceiling:
        n = ceiling.get("n_images")
        parts.append(
            f"<p>Ceiling: {esc(fmt(n))} {notdp()} private captions, rendered with the release renderer and measured "
            "like the release (the images stay in <code>private/ceiling/</code>). The gap between the release and "
            "the ceiling is what the DP noise costs; the gap between the ceiling and the private images is what "
            "the captioner and the text-to-image model cost.</p>"
        )
        if isinstance(ceiling.get("errors"), Mapping) and ceiling["errors"]:
            parts.append(table(("ceiling metric", "not computed"), [[k, v] for k, v in ceiling["errors"].items()]))
    for key, label in (("errors", "not computed"), ("skipped", "skipped")):
        if isinstance(data.get(key), Mapping) and data[key]:
            parts.append(table(("metric", label), [[k, v] for k, v in data[key].items()]))
    return section("metrics", "Metrics", "".join(parts)), data


def curves_section(data: Any) -> str | None:
    """The metrics of each PE iteration as plots (values in a collapsed table), or None without a curve."""
    if not isinstance(data, Mapping):
        return None
    per = data.get("per_iteration")
    if not isinstance(per, list) or not per:
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(per):
        if not isinstance(row, Mapping):
            continue
        t = num(row.get("iteration"))
        t = float(i) if t is None else t
        for k, v in flatten_numbers({k: v for k, v in row.items() if k != "iteration"}).items():
            series.setdefault(k, []).append((t, v))
    if not series:
        return None
    parts = [f"<h3>Metrics over iterations {notdp()}</h3>"]
    plots = []
    for k, pts in series.items():
        pts.sort()
        uri = png_plot([p[0] for p in pts], [p[1] for p in pts], f"{k} ({NOT_DP_LABEL})", k)
        if uri is not None:
            plots.append(f'<img src="{uri}" alt="{esc(k)} over iterations">')
    if plots:
        parts.append('<div class="plots">' + "".join(plots) + "</div>")
    else:
        parts.append(note("matplotlib is not installed: curves shown as a table only"))
    its = sorted({t for pts in series.values() for t, _ in pts})
    lookup = {k: dict(pts) for k, pts in series.items()}
    parts.append(
        ("<details><summary>values</summary>" if plots else "<div>")
        + table(
            ["iteration", *[f"{k} ({NOT_DP_LABEL})" for k in series]],
            [[int(t) if t == int(t) else t, *[lookup[k].get(t) for k in series]] for t in its],
        )
        + ("</details>" if plots else "</div>")
    )
    return section("curves", "Over iterations", "".join(parts))


def memorization_section(run: RunReader, metrics: Any, show_private: bool, max_images: int) -> str | None:
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("metrics"), Mapping):
        return None
    mem = metrics["metrics"].get("memorization")
    if not isinstance(mem, Mapping):
        return None
    pairs = [p for p in mem.get("closest_pairs") or [] if isinstance(p, Mapping)][:max_images]
    parts = [
        f"<p>Nearest private image for every synthetic image, in the <code>{esc(mem.get('feature_space'))}</code>"
        f" feature space. A synthetic image is flagged when its distance is below "
        f"{esc(fmt(mem.get('threshold')))} × the reference distance "
        f"({esc(mem.get('reference', 'median private-to-private nearest-neighbour distance'))}: "
        f"{esc(fmt(mem.get('reference_distance')))}). {notdp()}</p>",
        f"<p><strong>{esc(fmt(mem.get('n_flagged')))}</strong> of {esc(fmt(mem.get('n_synthetic')))} synthetic "
        f"images flagged {notdp()}.</p>",
    ]
    if not pairs:
        parts.append(note("no closest pairs recorded"))
        return section("memorization", "Memorization audit", "".join(parts))
    parts.append(
        table(
            ("rank", "synthetic image", f"distance ({NOT_DP_LABEL})", f"ratio ({NOT_DP_LABEL})",
             f"flagged ({NOT_DP_LABEL})"),
            [
                [
                    i + 1,
                    p.get("synthetic_file", p.get("synthetic")),
                    p.get("distance"),
                    p.get("ratio"),
                    p.get("flagged"),
                ]
                for i, p in enumerate(pairs)
            ],
        )
    )
    if not show_private:
        parts.append(
            note(
                "Images are not shown: a flagged synthetic image may be a copy of a private one. "
                "Rebuild the report with show_private=True (--show-private) to inspect the pairs."
            )
        )
    else:
        cells = []
        for i, p in enumerate(pairs):
            syn = None
            rel = p.get("synthetic_file")
            if isinstance(rel, str):
                cand = run.inside(run.root / "release" / rel, allow_private=False)
                syn = cand if cand is not None and cand.is_file() else None
            if (
                syn is None
                and isinstance(p.get("synthetic_path"), str)
                and Path(p["synthetic_path"]).is_file()
            ):
                syn = Path(p["synthetic_path"])
            priv = Path(p["private_file"]) if isinstance(p.get("private_file"), str) else None
            if priv is not None and not priv.is_file():
                priv = None
            flag = ' <span class="flag">flagged</span>' if p.get("flagged") else ""
            cells.append(
                f'<div class="pair"><div>#{i + 1}: distance {esc(fmt(p.get("distance")))}, ratio '
                f'{esc(fmt(p.get("ratio")))}{flag}</div><div class="two">'
                f"{figure(syn, 'synthetic', f'synthetic {i + 1}')}"
                f"{figure(priv, 'PRIVATE', f'private {i + 1}')}</div></div>"
            )
        parts.append('<div class="pairs">' + "".join(cells) + "</div>")
    return section("memorization", "Memorization audit", "".join(parts))
