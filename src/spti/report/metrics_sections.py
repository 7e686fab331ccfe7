"""The report's metric sections: the final metrics with their "not differentially private" labels, the
curves over iterations (a metric's per-class curves drawn together with its overall one), the downstream
accuracy (ceiling, chance, per class, confusion matrix) and the memorization audit (private images only
with ``show_private``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spti.report.markup import NOT_DP_LABEL, esc, figure, fmt, notdp, note, section, table
from spti.report.plots import confusion_svg, flatten_numbers, num, png_lines, png_plot
from spti.report.reader import RunReader


def metric_value_html(name: str, entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return esc(fmt(entry))
    if "value" in entry:
        main = f"<strong>{esc(fmt(entry['value']))}</strong>"
        if isinstance(entry.get("chance"), Mapping):  # accuracy: the number means little without these two
            ceiling = entry.get("ceiling")
            c = ceiling.get("value") if isinstance(ceiling, Mapping) else None
            bits = ([f"ceiling {esc(fmt(c))}"] if c is not None else []) + [
                f"chance {esc(fmt(entry['chance'].get('uniform')))}"]
            main += f" ({', '.join(bits)})"
        return main
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
        ("n_real_test", "real test"),
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
    groups = _per_class_groups(series)
    grouped = {k for members in groups.values() for k in members}
    for k, pts in series.items():
        pts.sort()
        if k in groups:  # one plot: the overall curve and one per class
            lines = {"overall": pts, **{m.split(".per_class.", 1)[1]: series[m] for m in groups[k]}}
            uri = png_lines(lines, f"{k}, per class ({NOT_DP_LABEL})", k)
            alt = f"{k} over iterations, overall and per class"
        elif k in grouped:
            continue
        else:
            uri = png_plot([p[0] for p in pts], [p[1] for p in pts], f"{k} ({NOT_DP_LABEL})", k)
            alt = f"{k} over iterations"
        if uri is not None:
            plots.append(f'<img src="{uri}" alt="{esc(alt)}">')
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


def _per_class_groups(series: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{metric: [metric.per_class.<class>, ...]}`` for each metric with per-class curves; a per-class
    series without its overall one is left to be drawn alone."""
    groups: dict[str, list[str]] = {}
    for k in series:
        if ".per_class." in k:
            base = k.split(".per_class.", 1)[0]
            if base in series:
                groups.setdefault(base, []).append(k)
    return groups


def _pct(v: Any) -> str:
    x = num(v)
    return "—" if x is None else f"{100 * x:.1f} %"


def accuracy_section(data: Any) -> str | None:
    """The downstream accuracy (classifiers trained on the synthetic images, tested on real labelled ones):
    next to each result the ceiling (trained on real images) and chance, then per class, then the
    confusion matrix; or None when no accuracy was measured."""
    if not isinstance(data, Mapping) or not isinstance(data.get("metrics"), Mapping):
        return None
    entries = {k: v for k, v in data["metrics"].items()
               if isinstance(v, Mapping) and str(k).startswith("accuracy") and isinstance(v.get("chance"), Mapping)}
    if not entries:
        return None
    label = notdp()
    real = data.get("real_labelled") if isinstance(data.get("real_labelled"), Mapping) else {}
    parts = [
        "<p>A classifier trained on the labelled synthetic images and tested on real labelled images "
        "(the first number of the DP image benchmarks). Next to it: the <em>ceiling</em>, the same classifier "
        "trained on real labelled images and tested on the same images, and <em>chance</em> (1 / the number "
        f"of test classes; the share of the largest test class). {label}</p>"
    ]
    if real:
        # the folders by name only: a real labelled set may itself be private data, and its path says so
        def short(text: Any) -> str:
            out = str(text or "")
            for key in ("source", "train_source"):
                src = real.get(key)
                if isinstance(src, str) and src and not src.startswith("<"):
                    out = out.replace(src, Path(src).name or src)
            return esc(out)

        on_private = bool(real.get("computed_on_private_data"))
        parts.append(
            f"<p>Test set: {'the run&#x27;s PRIVATE images, ' if on_private else ''}{short(real.get('test'))} — "
            f"{esc(fmt(real.get('n_test')))} {label} images."
            + (f" Ceiling trained on {short(real.get('ceiling_train'))}." if real.get("ceiling_train") else "")
            + "</p>"
        )
    rows = []
    for name, e in entries.items():
        ceiling = e.get("ceiling") if isinstance(e.get("ceiling"), Mapping) else {}
        rows.append(f"<tr><td><strong>{esc(name)}</strong><br><span class=\"note\">{esc(e.get('classifier'))}"
                    f"</span></td><td><strong>{esc(_pct(e.get('value')))}</strong> {label}</td>"
                    f"<td>{esc(_pct(ceiling.get('value')))} {label if ceiling else ''}</td>"
                    f"<td>{esc(_pct(e['chance'].get('uniform')))} · {esc(_pct(e['chance'].get('majority')))} "
                    f"{label}</td><td>{esc(fmt(e.get('n_synthetic')))} · {esc(fmt(e.get('n_real_test')))}</td></tr>")
    parts.append("<table><thead><tr><th>classifier</th><th>trained on synthetic</th><th>ceiling (trained on "
                 "real)</th><th>chance (uniform · majority)</th><th>images (synthetic · test)</th></tr>"
                 "</thead><tbody>" + "".join(rows) + "</tbody></table>")
    for name, e in entries.items():
        parts.append(_accuracy_details(name, e))
    return section("accuracy", "Downstream accuracy", "".join(parts))


def _accuracy_details(name: str, e: Mapping[str, Any]) -> str:
    label = notdp()
    per = e.get("per_class") if isinstance(e.get("per_class"), Mapping) else {}
    ceiling = e.get("ceiling") if isinstance(e.get("ceiling"), Mapping) else {}
    cper = ceiling.get("per_class") if isinstance(ceiling.get("per_class"), Mapping) else {}
    counts = e.get("n_test_per_class") if isinstance(e.get("n_test_per_class"), Mapping) else {}
    only_syn = set(e.get("classes_only_synthetic") or [])
    only_real = set(e.get("classes_only_real") or [])
    rows = []
    for c in sorted(set(per) | only_syn, key=str):
        remark = ("not in the synthetic set: never predicted" if c in only_real
                  else "only in the synthetic set" if c in only_syn else "")
        rows.append(f"<tr><td>{esc(c)}</td><td>{esc(fmt(counts.get(c)))} {label if c in counts else ''}</td>"
                    f"<td>{esc(_pct(per.get(c)))} {label if c in per else ''}</td>"
                    f"<td>{esc(_pct(cper.get(c)))} {label if c in cper else ''}</td><td>{esc(remark)}</td></tr>")
    out = [f"<h3>{esc(name)} {label}</h3>"]
    if e.get("warning"):
        out.append(note(str(e["warning"])))
    out.append("<table><thead><tr><th>class</th><th>real test images</th><th>accuracy (trained on synthetic)"
               "</th><th>ceiling</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    shared = e.get("accuracy_shared_classes")
    if only_real and shared is not None:
        out.append(f"<p>On the test classes the synthetic set has: {esc(_pct(shared))} {label}.</p>")
    cm = e.get("confusion")
    if isinstance(cm, Mapping) and isinstance(cm.get("labels"), list) and isinstance(cm.get("matrix"), list):
        pics = [confusion_svg([str(c) for c in cm["labels"]], cm["matrix"],
                              f"{name}: trained on synthetic ({NOT_DP_LABEL})")]
        ccm = ceiling.get("confusion")
        if isinstance(ccm, Mapping) and isinstance(ccm.get("labels"), list) and isinstance(ccm.get("matrix"), list):
            pics.append(confusion_svg([str(c) for c in ccm["labels"]], ccm["matrix"],
                                      f"{name}: ceiling, trained on real ({NOT_DP_LABEL})"))
        out.append('<div class="plots">' + "".join(f"<div>{p}</div>" for p in pics) + "</div>")
        out.append(note("Confusion matrix: rows are the true classes of the real test images, columns the "
                        "predicted classes; a cell's shade is its share of the row."))
    return "".join(out)


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
