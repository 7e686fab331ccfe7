"""The sections of the report that describe the run: privacy budget, configuration and models, synthetic
images, population over iterations, DP captions, inputs and counters. (Metrics and the memorization audit
are in :mod:`spti.report.metrics_sections`.) Each section takes the :class:`~spti.report.reader.RunReader`
and returns HTML; a missing part of the run folder becomes a note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spti.report.markup import (
    Raw,
    assumed_public_value,
    esc,
    figure,
    kv_table,
    notdp,
    notdp_value,
    note,
    section,
    table,
)
from spti.report.plots import flatten_numbers, num
from spti.report.reader import RunReader, redact

_MAX_CAPTIONS = 200
_PER_ITERATION_IMAGES = 12


def privacy_section(run: RunReader, manifest: Mapping[str, Any]) -> str:
    ledger = run.json("privacy.json")
    parts: list[str] = []
    if isinstance(ledger, Mapping):
        budget = ledger.get("budget") if isinstance(ledger.get("budget"), Mapping) else {}
        spent = ledger.get("spent") if isinstance(ledger.get("spent"), Mapping) else {}
        if ledger.get("guarantee"):
            parts.append(f"<p><strong>{esc(ledger['guarantee'])}</strong></p>")
        if ledger.get("private") is False or budget.get("private") is False:
            parts.append('<div class="banner warn">This run is NOT differentially private (no noise).</div>')
        parts.append(
            kv_table(
                [
                    ("ε (epsilon), planned", budget.get("epsilon")),
                    ("ε (epsilon), spent", spent.get("epsilon")),
                    ("δ (delta)", spent.get("delta", budget.get("delta"))),
                    ("σ (noise standard deviation)", budget.get("sigma")),
                    ("T (noisy histograms / iterations)", budget.get("iterations")),
                    ("μ (Gaussian DP), planned", budget.get("mu")),
                    ("μ (Gaussian DP), spent", spent.get("mu")),
                    ("N (private units)", _n(budget.get("num_private"))),
                    ("unit of privacy", budget.get("unit")),
                    ("adjacency", ledger.get("adjacency")),
                    ("within budget", ledger.get("within_budget")),
                    ("accounting", ledger.get("accounting")),
                ]
            )
        )
        mechs = [m for m in ledger.get("mechanisms") or [] if isinstance(m, Mapping)]
        if mechs:
            parts.append("<h3>Mechanisms (spend budget)</h3>")
            parts.append(
                table(
                    ("name", "kind", "count", "σ", "L2 sensitivity", "unit", "μ", "description"),
                    [
                        [m.get(k) for k in ("name", "kind", "count", "sigma", "l2_sensitivity", "unit", "mu")]
                        + [m.get("description")]
                        for m in mechs
                    ],
                )
            )
        procs = [p for p in ledger.get("processing") or [] if isinstance(p, Mapping)]
        if procs:
            parts.append("<h3>Processing that spends no budget</h3>")
            parts.append(
                table(("step", "why no budget"), [[p.get("name"), p.get("description")] for p in procs])
            )
        trust = [t for t in ledger.get("trust_assumptions") or [] if isinstance(t, str)]
        parts.append("<h3>Trust assumptions</h3>")
        if trust:
            parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in trust) + "</ul>")
        else:
            parts.append(note("none recorded"))
    else:
        parts.append(note("privacy.json is missing: the budget below comes from manifest.json"))
        b = manifest.get("privacy") if isinstance(manifest.get("privacy"), Mapping) else manifest
        budget_html = kv_table(
            [
                ("ε (epsilon)", b.get("epsilon")),
                ("δ (delta)", b.get("delta")),
                ("σ (noise standard deviation)", b.get("sigma")),
                ("T (iterations)", b.get("iterations", b.get("T"))),
                ("μ (Gaussian DP)", b.get("mu")),
                ("N (private units)", _n(b.get("num_private", manifest.get("num_private", b.get("N"))))),
                ("unit of privacy", b.get("unit", manifest.get("unit"))),
            ]
        )
        parts.append(budget_html or note("no budget recorded in manifest.json either"))
    if manifest.get("noise") is not None:
        parts.append(
            kv_table(
                [
                    ("noise source", _readable(manifest["noise"]))
                ]
            )
        )
    return section("privacy", "Privacy budget and accounting", "".join(parts))


def _n(v: Any) -> Raw | None:
    """N with its label: the one exact count of the private data that the ledger publishes."""
    return None if v is None else assumed_public_value(v)


def _readable(v: Any) -> str:
    """A value as a reader wants it in a key/value row: a list comma-separated, a mapping as ``k: v`` pairs."""
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_readable(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_readable(x) for x in v)
    from spti.report.markup import fmt

    return fmt(v)


def _stage_details(info: Any) -> Any:
    """A stage record's details (counts of private images, captions, ...), labelled not DP."""
    if not isinstance(info, Mapping):
        return ""
    details = {k: v for k, v in info.items() if k != "done"}
    if not details:
        return ""
    return Raw(f"{esc(_readable(details))} {notdp()}")


def _models_html(models: Mapping[str, Any]) -> str:
    """Each model as key/value rows under its role (backend and model first), not a JSON dump."""
    blocks = []
    for role, info in models.items():
        if isinstance(info, Mapping):
            first = [k for k in ("backend", "model", "model_id") if k in info]
            rows = [(k, _readable(info[k])) for k in first]
            rows += [(k, _readable(v)) for k, v in info.items() if k not in first]
        else:
            rows = [("model", _readable(info))]
        blocks.append(f"<h4>{esc(role)}</h4>" + (kv_table(rows) or note("no details recorded")))
    return "".join(blocks)


def config_section(run: RunReader, manifest: Mapping[str, Any]) -> str:
    """The details, collapsed: the models (key/value rows), the stages, the configuration, the manifest."""
    parts: list[str] = []
    models = manifest.get("models")
    if isinstance(models, Mapping) and models:
        names = ", ".join(
            f"{role}: {(info.get('model') or info.get('model_id') or info.get('backend')) if isinstance(info, Mapping) else info}"
            for role, info in models.items()
        )
        parts.append(f"<details><summary><h3>Models</h3> <span class=\"note\">{esc(names)}</span></summary>"
                     f"{_models_html(models)}</details>")
    else:
        parts.append(note("no model information in manifest.json"))
    stages = manifest.get("stages")
    if isinstance(stages, Mapping) and stages:
        parts.append(
            "<details><summary><h3>Stages</h3></summary>"
            + table(
                ("stage", "done", "details"),
                [
                    [s, (i or {}).get("done") if isinstance(i, Mapping) else i, _stage_details(i)]
                    for s, i in stages.items()
                ],
            )
            + "</details>"
        )
    text = run.text("config.yaml")
    if text is None:
        parts.append(note("config.yaml is missing"))
    else:
        try:
            import yaml

            cfg = yaml.safe_load(text)
            shown = (
                yaml.safe_dump(redact(cfg), sort_keys=False, allow_unicode=True) if cfg is not None else ""
            )
        except Exception:  # noqa: BLE001 - malformed YAML: show nothing rather than unredacted text
            shown = None
        if shown is None:
            parts.append(note("config.yaml could not be parsed; not shown"))
        else:
            parts.append(
                "<details><summary><h3>Configuration</h3> (config.yaml, private paths redacted)</summary><pre>"
                + esc(shown) + "</pre></details>"
            )
    man = json.dumps(redact(dict(manifest)), indent=2, ensure_ascii=False, default=str)
    parts.append(
        f"<details><summary>manifest.json (its counts are computed from the private data) {notdp()}</summary>"
        f"<pre>{esc(man)}</pre></details>"
    )
    return section("config", "Details: models, stages, configuration", "".join(parts))


def release_section(run: RunReader, max_images: int) -> str:
    rel = run.root / "release"
    parts: list[str] = []
    meta = run.jsonl("release/metadata.jsonl")
    rows: list[tuple[str, str | None]] = []
    if meta is not None:
        rows = [(r["file_name"], r.get("text")) for r in meta if isinstance(r.get("file_name"), str)]
    elif (rel / "images").is_dir():
        from spti.data.listing import list_images

        rows = [(p.relative_to(rel).as_posix(), None) for p in list_images(rel / "images")]
        parts.append(note("release/metadata.jsonl is missing: images are shown without captions"))
    if not rows:
        return section("images", "Synthetic images", note("no rendered images in release/"))
    shown = rows[:max_images]
    figs = []
    for name, text in shown:
        p = run.inside(rel / name, allow_private=False)
        figs.append(figure(p if p is not None and p.is_file() else None, text, name))
    parts.append(f"<p>{len(shown)} of {len(rows)} images (release/images).</p>")
    parts.append('<div class="grid">' + "".join(figs) + "</div>")
    return section("images", "Synthetic images", "".join(parts))


_ITER_RE = re.compile(r"^iter_(\d+)$")


def _population_images(run: RunReader, d: Path) -> list[dict[str, Any]] | None:
    """The rendered population of one iteration folder: ``population_images.jsonl`` ({"text", "image"}
    rows, written by the per-iteration evaluator) when present, else the ``image`` field of
    ``population.jsonl`` (how older runs recorded it)."""
    rel = d.relative_to(run.root)
    rows = run.jsonl(rel / "population_images.jsonl")
    return rows if rows is not None else run.jsonl(rel / "population.jsonl")


def iterations_section(run: RunReader, max_images: int) -> str | None:
    ck = run.root / "checkpoints"
    if not ck.is_dir():
        return None
    iters = sorted((int(m.group(1)), d) for d in ck.iterdir() if d.is_dir() and (m := _ITER_RE.match(d.name)))
    blocks = []
    per = max(1, min(max_images, _PER_ITERATION_IMAGES))
    for t, d in iters:
        pop = _population_images(run, d)
        if not pop:
            continue
        with_img = [r for r in pop if isinstance(r.get("image"), str)]
        if not with_img:
            continue
        figs = []
        for r in with_img[:per]:
            p = None
            for base in (d, run.root, ck):
                cand = run.inside(base / r["image"], allow_private=False)
                if cand is not None and cand.is_file():
                    p = cand
                    break
            figs.append(figure(p, r.get("text"), r["image"]))
        blocks.append(
            f"<h3>Iteration {t}</h3><p>{len(figs)} of {len(with_img)} rendered population members.</p>"
            f'<div class="grid">{"".join(figs)}</div>'
        )
    if not blocks:
        return None
    return section("iterations", "Population over iterations", "".join(blocks))


def captions_section(run: RunReader) -> str:
    rows = run.jsonl("release/dp_captions.jsonl")
    if rows is None:
        return section("captions", "DP captions", note("release/dp_captions.jsonl is missing"))
    texts = [r.get("text") for r in rows if isinstance(r.get("text"), str)]
    if not texts:
        return section("captions", "DP captions", note("release/dp_captions.jsonl holds no captions"))
    shown = texts[:_MAX_CAPTIONS]
    more = (
        note(f"… and {len(texts) - len(shown)} more in release/dp_captions.jsonl")
        if len(texts) > len(shown)
        else ""
    )
    body = (
        f"<details><summary>{len(texts)} differentially private captions (the output of Private Evolution)"
        '</summary><ol class="captions">' + "".join(f"<li>{esc(t)}</li>" for t in shown) + "</ol>" + more
        + "</details>"
    )
    return section("captions", "DP captions", body)


def inputs_section(run: RunReader) -> str:
    stats = run.json("stats.json")
    if not isinstance(stats, Mapping):
        return section("inputs", "Inputs and counters", note("stats.json is missing"))
    parts = [
        '<div class="banner warn">These counters are exact counts of the private data and of the run\'s '
        "internals: NOT differentially private. Do not publish them.</div>"
    ]
    ing = stats.get("ingest")
    if isinstance(ing, Mapping):
        flat = [(k, notdp_value(v)) for k, v in ing.items() if v is not None and not isinstance(v, Mapping)]
        parts.append("<h3>Private images ingested (counts only)</h3>" + kv_table(flat))
        for k, v in ing.items():
            if isinstance(v, Mapping):
                parts.append(
                    f"<h3>Rejected inputs: {esc(k.replace('_', ' '))}</h3>"
                    + (table(("reason", "count"), [(r, notdp_value(c)) for r, c in v.items()]) if v else note("none"))
                )
    else:
        parts.append(note("no ingest summary in stats.json"))
    others = {k: v for k, v in stats.items() if k != "ingest"}
    if others:
        rows = [
            (f"{k}.{kk}", notdp_value(vv))
            for k, v in others.items()
            if isinstance(v, Mapping)
            for kk, vv in flatten_numbers(v).items()
        ]
        rows += [(k, notdp_value(v)) for k, v in others.items() if num(v) is not None]
        if rows:
            parts.append("<h3>Other counters</h3>" + table(("counter", "value"), rows))
    return section("inputs", "Inputs and counters", "".join(parts))
