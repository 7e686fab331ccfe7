"""One self-contained HTML report of a run folder.

Why one file with everything inlined (images as base64, plots as base64 PNG, CSS in a ``<style>``): the
report is mailed, attached to tickets and opened on machines without the run folder or network access; a
Content-Security-Policy forbids the page from loading anything external, so opening it leaks nothing.

Privacy: private images appear only with ``show_private=True``, under a warning banner; without it the
memorization audit shows distances only (a flagged synthetic image may itself be a near-copy of a private
one, so it is not shown either). Paths to the private collection are redacted from the config. Every
metric carries a "not differentially private" label because metrics are computed against private data.
Robustness: every file but ``manifest.json`` is optional; a missing or malformed part becomes a note.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spti.errors import RunFolderError
from spti.log import logger

__all__ = ["build_report"]

NOT_DP_LABEL = "not differentially private"
_MAX_CAPTIONS = 200
_PER_ITERATION_IMAGES = 12
_THUMB = 256

_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f6f7f9;
  margin:0;padding:0 12px 40px;overflow-wrap:anywhere}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.6em;margin:.8em 0 .2em}
h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #d5d9e0;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.1em 0 .4em}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:4px 16px 14px;margin:14px 0}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border-bottom:1px solid #e8eaef;padding:4px 8px;text-align:left;vertical-align:top;
  overflow-wrap:anywhere;word-break:break-word}
th{background:#f1f3f6;font-weight:600}
pre{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;background:#f4f5f7;padding:8px 10px;
  border-radius:6px;font-size:13px;max-height:480px;overflow-y:auto;overflow-x:hidden}
code{font-size:13px}
.note{color:#5a6270;font-style:italic}
.banner{padding:10px 14px;border-radius:8px;margin:12px 0;font-weight:600}
.banner.private{background:#b00020;color:#fff;font-size:1.1em}
.banner.warn{background:#fff4d6;border:1px solid #e6c46b;color:#5b4300}
.notdp{display:inline-block;background:#fde7e9;color:#8a1020;border:1px solid #f2b8c0;border-radius:10px;
  padding:0 7px;font-size:12px;white-space:nowrap;margin-left:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(150px,100%),1fr));gap:10px}
figure{margin:0;background:#fafbfc;border:1px solid #e6e8ec;border-radius:6px;padding:6px;min-width:0}
figure img{display:block;width:100%;height:auto;image-rendering:auto;border-radius:4px;background:#eee}
figure img.small{image-rendering:pixelated}
figcaption{font-size:12px;color:#3b4250;margin-top:4px;max-height:7.5em;overflow-y:auto;overflow-x:hidden}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(300px,100%),1fr));gap:12px}
.pair{border:1px solid #e6e8ec;border-radius:6px;padding:6px;min-width:0}
.pair .two{display:grid;grid-template-columns:1fr 1fr;gap:6px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(320px,100%),1fr));gap:10px}
.plots img{width:100%;height:auto;display:block}
ol.captions li{margin:.15em 0}
.kv th{width:32%}
.flag{color:#b00020;font-weight:600}
details summary{cursor:pointer;margin:.3em 0}
"""

# ---------------------------------------------------------------------------------------------- helpers


def _e(x: Any) -> str:
    """HTML-escape anything (captions, file names and config values are untrusted text)."""
    return html.escape("" if x is None else str(x), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}"
    if isinstance(v, str) and v.lower() in ("inf", "infinity"):
        return "∞"
    return str(v)


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _notdp() -> str:
    return f'<span class="notdp" title="computed against private data — do not publish">{NOT_DP_LABEL}</span>'


def _kv_table(rows: Iterable[tuple[str, Any]], *, raw_html: bool = False) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{v if raw_html else _e(_fmt(v))}</td></tr>"
        for k, v in rows
        if v is not None
    )
    return f'<table class="kv">{body}</table>' if body else ""


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Run:
    """Reads the optional parts of a run folder; every problem becomes a note, never an exception."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: list[str] = []

    def json(self, rel: str) -> Any:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            self.notes.append(f"{rel} could not be read ({type(e).__name__}); that part is omitted")
            return None

    def jsonl(self, rel: str | Path) -> list[dict[str, Any]] | None:
        p = self.root / rel
        if not p.is_file():
            return None
        rows: list[dict[str, Any]] = []
        try:
            with open(p, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        self.notes.append(f"{Path(rel).as_posix()}: line {lineno} is not valid JSON; skipped")
                        continue
                    if isinstance(obj, dict):
                        rows.append(obj)
        except OSError as e:
            self.notes.append(f"{Path(rel).as_posix()} could not be read ({type(e).__name__})")
            return None
        return rows

    def text(self, rel: str) -> str | None:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            return p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.notes.append(f"{rel} could not be read ({type(e).__name__})")
            return None

    def inside(self, path: Path, *, allow_private: bool) -> Path | None:
        """``path`` resolved, if it lies inside the run folder and (unless allowed) outside private/:
        a row of a jsonl file must not be able to pull an arbitrary or private file into the report."""
        try:
            rp = path.resolve()
            root = self.root.resolve()
        except OSError:
            return None
        if root != rp and root not in rp.parents:
            return None
        if not allow_private and (root / "private" == rp or (root / "private") in rp.parents):
            return None
        return rp


def _image_data_uri(src: Path | Any, max_side: int = _THUMB) -> tuple[str, int, int, bool] | None:
    """A thumbnail as a data URI (PNG for small images, whose pixels matter; JPEG for photos, for size),
    with its width, height and whether it is tiny (drawn pixelated)."""
    from PIL import Image

    try:
        if isinstance(src, Image.Image):
            im = src.copy()
        else:
            with Image.open(src) as f:
                f.load()
                im = f.copy()
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGBA")
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im, mask=im.split()[-1])
            im = bg
        im.thumbnail((max_side, max_side))
        w, h = im.size
        if w < 1 or h < 1:
            return None
        buf = io.BytesIO()
        small = w * h <= 128 * 128
        if small:
            im.save(buf, format="PNG", optimize=True)
            mime = "image/png"
        else:
            im.convert("RGB").save(buf, format="JPEG", quality=85)
            mime = "image/jpeg"
    except Exception as e:  # noqa: BLE001 - any unreadable image becomes a note, never a crash
        logger.debug("report: image not embedded (%s)", type(e).__name__)
        return None
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}", w, h, w <= 64


def _img(src: Path | Any | None, alt: str) -> str:
    d = _image_data_uri(src) if src is not None else None
    if d is None:
        return f'<p class="note">image not available: {_e(alt)}</p>'
    uri, w, h, tiny = d
    cls = ' class="small"' if tiny else ""
    return f'<img src="{uri}" width="{w}" height="{h}" alt="{_e(alt)}"{cls}>'


def _figure(src: Path | None, caption: str | None, alt: str) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure>{_img(src, alt)}{cap}</figure>"


def _png_plot(xs: Sequence[float], ys: Sequence[float], title: str, ylabel: str) -> str | None:
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


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    return None


def _flatten_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if "value" in v and _num(v["value"]) is not None:
                out[key] = _num(v["value"])  # type: ignore[assignment]
            else:
                out.update(_flatten_numbers(v, key + "."))
        elif _num(v) is not None:
            out[key] = _num(v)  # type: ignore[assignment]
    return out


_PRIVATE_CONFIG_KEYS = {"private", "data", "out", "private_paths", "path", "paths"}


def _redact(obj: Any) -> Any:
    """Config/manifest with paths to the private collection replaced: a report may be shared more widely
    than the run folder, and private file names are private."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k == "data" and isinstance(v, Mapping):
                out[k] = {
                    kk: ("<redacted>" if kk in _PRIVATE_CONFIG_KEYS or "path" in str(kk) else vv)
                    for kk, vv in v.items()
                }
            elif k in ("out", "private_paths") or (k == "private" and isinstance(v, str)):
                out[k] = "<redacted>"
            else:
                out[k] = _redact(v)
        return out
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- sections


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{_e(sid)}"><h2>{_e(title)}</h2>{body}</section>'


def _privacy_section(run: _Run, manifest: Mapping[str, Any]) -> str:
    ledger = run.json("privacy.json")
    parts: list[str] = []
    if isinstance(ledger, Mapping):
        budget = ledger.get("budget") if isinstance(ledger.get("budget"), Mapping) else {}
        spent = ledger.get("spent") if isinstance(ledger.get("spent"), Mapping) else {}
        if ledger.get("guarantee"):
            parts.append(f"<p><strong>{_e(ledger['guarantee'])}</strong></p>")
        if ledger.get("private") is False or budget.get("private") is False:
            parts.append('<div class="banner warn">This run is NOT differentially private (no noise).</div>')
        parts.append(
            _kv_table(
                [
                    ("ε (epsilon), planned", budget.get("epsilon")),
                    ("ε (epsilon), spent", spent.get("epsilon")),
                    ("δ (delta)", spent.get("delta", budget.get("delta"))),
                    ("σ (noise standard deviation)", budget.get("sigma")),
                    ("T (noisy histograms / iterations)", budget.get("iterations")),
                    ("μ (Gaussian DP), planned", budget.get("mu")),
                    ("μ (Gaussian DP), spent", spent.get("mu")),
                    ("N (private units)", budget.get("num_private")),
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
                _table(
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
                _table(("step", "why no budget"), [[p.get("name"), p.get("description")] for p in procs])
            )
        trust = [t for t in ledger.get("trust_assumptions") or [] if isinstance(t, str)]
        parts.append("<h3>Trust assumptions</h3>")
        if trust:
            parts.append("<ul>" + "".join(f"<li>{_e(t)}</li>" for t in trust) + "</ul>")
        else:
            parts.append(_note("none recorded"))
    else:
        parts.append(_note("privacy.json is missing: the budget below comes from manifest.json"))
        b = manifest.get("privacy") if isinstance(manifest.get("privacy"), Mapping) else manifest
        table = _kv_table(
            [
                ("ε (epsilon)", b.get("epsilon")),
                ("δ (delta)", b.get("delta")),
                ("σ (noise standard deviation)", b.get("sigma")),
                ("T (iterations)", b.get("iterations", b.get("T"))),
                ("μ (Gaussian DP)", b.get("mu")),
                ("N (private units)", b.get("num_private", manifest.get("num_private", b.get("N")))),
                ("unit of privacy", b.get("unit", manifest.get("unit"))),
            ]
        )
        parts.append(table or _note("no budget recorded in manifest.json either"))
    if manifest.get("noise") is not None:
        parts.append(
            _kv_table(
                [
                    (
                        "noise source",
                        json.dumps(manifest["noise"], ensure_ascii=False)
                        if not isinstance(manifest["noise"], str)
                        else manifest["noise"],
                    )
                ]
            )
        )
    return _section("privacy", "Privacy budget", "".join(parts))


def _config_section(run: _Run, manifest: Mapping[str, Any]) -> str:
    parts: list[str] = []
    models = manifest.get("models")
    if isinstance(models, Mapping) and models:
        rows = []
        for role, info in models.items():
            if isinstance(info, Mapping):
                ident = info.get("model") or info.get("model_id") or info.get("path") or ""
                rest = {k: v for k, v in info.items() if k not in ("backend", "model", "model_id")}
                rows.append(
                    [role, info.get("backend"), ident, json.dumps(rest, ensure_ascii=False, default=str)]
                )
            else:
                rows.append([role, None, info, ""])
        parts.append("<h3>Models</h3>" + _table(("role", "backend", "model", "details"), rows))
    else:
        parts.append(_note("no model information in manifest.json"))
    stages = manifest.get("stages")
    if isinstance(stages, Mapping) and stages:
        parts.append(
            "<h3>Stages</h3>"
            + _table(
                ("stage", "done", "details"),
                [
                    [
                        s,
                        (i or {}).get("done") if isinstance(i, Mapping) else i,
                        json.dumps(
                            {k: v for k, v in i.items() if k != "done"}, ensure_ascii=False, default=str
                        )
                        if isinstance(i, Mapping)
                        else "",
                    ]
                    for s, i in stages.items()
                ],
            )
        )
    text = run.text("config.yaml")
    if text is None:
        parts.append(_note("config.yaml is missing"))
    else:
        try:
            import yaml

            cfg = yaml.safe_load(text)
            shown = (
                yaml.safe_dump(_redact(cfg), sort_keys=False, allow_unicode=True) if cfg is not None else ""
            )
        except Exception:  # noqa: BLE001 - malformed YAML: show nothing rather than unredacted text
            shown = None
        if shown is None:
            parts.append(_note("config.yaml could not be parsed; not shown"))
        else:
            parts.append(
                "<h3>Configuration (config.yaml, private paths redacted)</h3><pre>" + _e(shown) + "</pre>"
            )
    man = json.dumps(_redact(dict(manifest)), indent=2, ensure_ascii=False, default=str)
    parts.append(f"<details><summary>manifest.json</summary><pre>{_e(man)}</pre></details>")
    return _section("config", "Configuration and models", "".join(parts))


def _release_section(run: _Run, max_images: int) -> str:
    rel = run.root / "release"
    parts: list[str] = []
    meta = run.jsonl("release/metadata.jsonl")
    rows: list[tuple[str, str | None]] = []
    if meta is not None:
        rows = [(r["file_name"], r.get("text")) for r in meta if isinstance(r.get("file_name"), str)]
    elif (rel / "images").is_dir():
        from spti.metrics.evaluate import list_images

        rows = [(p.relative_to(rel).as_posix(), None) for p in list_images(rel / "images")]
        parts.append(_note("release/metadata.jsonl is missing: images are shown without captions"))
    if not rows:
        return _section("images", "Synthetic images", _note("no rendered images in release/"))
    shown = rows[:max_images]
    figs = []
    for name, text in shown:
        p = run.inside(rel / name, allow_private=False)
        figs.append(_figure(p if p is not None and p.is_file() else None, text, name))
    parts.append(f"<p>{len(shown)} of {len(rows)} images (release/images).</p>")
    parts.append('<div class="grid">' + "".join(figs) + "</div>")
    return _section("images", "Synthetic images", "".join(parts))


_ITER_RE = re.compile(r"^iter_(\d+)$")


def _iterations_section(run: _Run, max_images: int) -> str | None:
    ck = run.root / "checkpoints"
    if not ck.is_dir():
        return None
    iters = sorted((int(m.group(1)), d) for d in ck.iterdir() if d.is_dir() and (m := _ITER_RE.match(d.name)))
    blocks = []
    per = max(1, min(max_images, _PER_ITERATION_IMAGES))
    for t, d in iters:
        pop = run.jsonl(d.relative_to(run.root) / "population.jsonl")
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
            figs.append(_figure(p, r.get("text"), r["image"]))
        blocks.append(
            f"<h3>Iteration {t}</h3><p>{len(figs)} of {len(with_img)} rendered population members.</p>"
            f'<div class="grid">{"".join(figs)}</div>'
        )
    if not blocks:
        return None
    return _section("iterations", "Population over iterations", "".join(blocks))


def _captions_section(run: _Run) -> str:
    rows = run.jsonl("release/dp_captions.jsonl")
    if rows is None:
        return _section("captions", "DP captions", _note("release/dp_captions.jsonl is missing"))
    texts = [r.get("text") for r in rows if isinstance(r.get("text"), str)]
    if not texts:
        return _section("captions", "DP captions", _note("release/dp_captions.jsonl holds no captions"))
    shown = texts[:_MAX_CAPTIONS]
    more = (
        _note(f"… and {len(texts) - len(shown)} more in release/dp_captions.jsonl")
        if len(texts) > len(shown)
        else ""
    )
    body = (
        f"<p>{len(texts)} differentially private captions (the output of Private Evolution).</p>"
        '<ol class="captions">' + "".join(f"<li>{_e(t)}</li>" for t in shown) + "</ol>" + more
    )
    return _section("captions", "DP captions", body)


def _metric_value_html(name: str, entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return _e(_fmt(entry))
    if "value" in entry:
        return f"<strong>{_e(_fmt(entry['value']))}</strong>"
    if name == "prdc" or "precision" in entry:
        return "<br>".join(
            f"{_e(k)} <strong>{_e(_fmt(entry.get(k)))}</strong>"
            for k in ("precision", "recall", "density", "coverage")
            if k in entry
        )
    if name == "memorization" or "n_flagged" in entry:
        return (
            f"<strong>{_e(_fmt(entry.get('n_flagged')))}</strong> of {_e(_fmt(entry.get('n_synthetic')))} "
            f"flagged (ratio &lt; {_e(_fmt(entry.get('threshold')))})"
        )
    nums = _flatten_numbers(entry)
    return "<br>".join(f"{_e(k)} <strong>{_e(_fmt(v))}</strong>" for k, v in list(nums.items())[:6])


def _metric_details(entry: Any) -> str:
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
            bits.append(f"{label}: {_fmt(entry[k])}")
    emb = entry.get("embedder")
    if isinstance(emb, Mapping) and emb.get("backend"):
        bits.append(f"embedder: {emb.get('backend')}")
    if entry.get("weights_sha256"):
        bits.append(f"weights sha256: {str(entry['weights_sha256'])[:16]}…")
    return _e(" · ".join(bits))


def _metrics_section(run: _Run) -> tuple[str, Any]:
    data = run.json("metrics.json")
    if not isinstance(data, Mapping):
        return _section("metrics", "Metrics", _note("metrics.json is missing: no evaluation was run")), None
    parts = [
        '<div class="banner warn">Every number in this section is computed against the private data and is '
        "NOT differentially private: do not publish it.</div>"
    ]
    mets = data.get("metrics")
    if not isinstance(mets, Mapping):
        mets = {k: v for k, v in data.items() if _num(v) is not None}
    if mets:
        rows = []
        for name, entry in mets.items():
            rows.append(
                f"<tr><td><strong>{_e(name)}</strong>{_notdp()}</td><td>{_metric_value_html(name, entry)}</td>"
                f"<td>{_metric_details(entry)}</td></tr>"
            )
        parts.append(
            "<table><thead><tr><th>metric</th><th>value</th><th>details</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        parts.append(_note("metrics.json holds no final metrics"))
    for key, label in (("errors", "not computed"), ("skipped", "skipped")):
        if isinstance(data.get(key), Mapping) and data[key]:
            parts.append(_table(("metric", label), [[k, v] for k, v in data[key].items()]))

    per = data.get("per_iteration")
    if isinstance(per, list) and per:
        series: dict[str, list[tuple[float, float]]] = {}
        for i, row in enumerate(per):
            if not isinstance(row, Mapping):
                continue
            t = _num(row.get("iteration"))
            t = float(i) if t is None else t
            for k, v in _flatten_numbers({k: v for k, v in row.items() if k != "iteration"}).items():
                series.setdefault(k, []).append((t, v))
        if series:
            parts.append(f"<h3>Metrics over iterations {_notdp()}</h3>")
            plots = []
            for k, pts in series.items():
                pts.sort()
                uri = _png_plot([p[0] for p in pts], [p[1] for p in pts], f"{k} ({NOT_DP_LABEL})", k)
                if uri is not None:
                    plots.append(f'<img src="{uri}" alt="{_e(k)} over iterations">')
            if plots:
                parts.append('<div class="plots">' + "".join(plots) + "</div>")
            else:
                parts.append(_note("matplotlib is not installed: curves shown as a table only"))
            its = sorted({t for pts in series.values() for t, _ in pts})
            lookup = {k: dict(pts) for k, pts in series.items()}
            parts.append(
                "<details><summary>values</summary>"
                + _table(
                    ["iteration", *[f"{k} ({NOT_DP_LABEL})" for k in series]],
                    [[int(t) if t == int(t) else t, *[lookup[k].get(t) for k in series]] for t in its],
                )
                + "</details>"
            )
    return _section("metrics", "Metrics", "".join(parts)), data


def _memorization_section(run: _Run, metrics: Any, show_private: bool, max_images: int) -> str | None:
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("metrics"), Mapping):
        return None
    mem = metrics["metrics"].get("memorization")
    if not isinstance(mem, Mapping):
        return None
    pairs = [p for p in mem.get("closest_pairs") or [] if isinstance(p, Mapping)][:max_images]
    parts = [
        f"<p>Nearest private image for every synthetic image, in the <code>{_e(mem.get('feature_space'))}</code>"
        f" feature space. A synthetic image is flagged when its distance is below "
        f"{_e(_fmt(mem.get('threshold')))} × the reference distance "
        f"({_e(mem.get('reference', 'median private-to-private nearest-neighbour distance'))}: "
        f"{_e(_fmt(mem.get('reference_distance')))}). {_notdp()}</p>",
        f"<p><strong>{_e(_fmt(mem.get('n_flagged')))}</strong> of {_e(_fmt(mem.get('n_synthetic')))} synthetic "
        "images flagged.</p>",
    ]
    if not pairs:
        parts.append(_note("no closest pairs recorded"))
        return _section("memorization", "Memorization audit", "".join(parts))
    parts.append(
        _table(
            ("rank", "synthetic image", "distance", "ratio", "flagged"),
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
            _note(
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
                f'<div class="pair"><div>#{i + 1}: distance {_e(_fmt(p.get("distance")))}, ratio '
                f'{_e(_fmt(p.get("ratio")))}{flag}</div><div class="two">'
                f"{_figure(syn, 'synthetic', f'synthetic {i + 1}')}"
                f"{_figure(priv, 'PRIVATE', f'private {i + 1}')}</div></div>"
            )
        parts.append('<div class="pairs">' + "".join(cells) + "</div>")
    return _section("memorization", "Memorization audit", "".join(parts))


def _inputs_section(run: _Run) -> str:
    stats = run.json("stats.json")
    if not isinstance(stats, Mapping):
        return _section("inputs", "Inputs and counters", _note("stats.json is missing"))
    parts = []
    ing = stats.get("ingest")
    if isinstance(ing, Mapping):
        flat = [(k, v) for k, v in ing.items() if not isinstance(v, Mapping)]
        parts.append("<h3>Private images ingested (counts only)</h3>" + _kv_table(flat))
        for k, v in ing.items():
            if isinstance(v, Mapping):
                parts.append(
                    f"<h3>Rejected inputs: {_e(k.replace('_', ' '))}</h3>"
                    + (_table(("reason", "count"), list(v.items())) if v else _note("none"))
                )
    else:
        parts.append(_note("no ingest summary in stats.json"))
    others = {k: v for k, v in stats.items() if k != "ingest"}
    if others:
        rows = [
            (f"{k}.{kk}", vv)
            for k, v in others.items()
            if isinstance(v, Mapping)
            for kk, vv in _flatten_numbers(v).items()
        ]
        rows += [(k, v) for k, v in others.items() if _num(v) is not None]
        if rows:
            parts.append("<h3>Other counters</h3>" + _table(("counter", "value"), rows))
    return _section("inputs", "Inputs and counters", "".join(parts))


# ------------------------------------------------------------------------------------------------ build


def build_report(
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    show_private: bool = False,
    max_images: int = 64,
) -> Path:
    """Write a self-contained ``report.html`` for ``run_dir`` (or to ``out``) and return its path.

    Only ``manifest.json`` is required; every other part of the run folder is shown when present and
    replaced by a note when missing or unreadable. ``show_private`` adds the private image of each
    memorization pair (and a warning banner); ``max_images`` bounds the synthetic grid and the pairs.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise RunFolderError(f"{root} is not a folder")
    if max_images < 1:
        raise RunFolderError(f"max_images must be >= 1, got {max_images}")
    run = _Run(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise RunFolderError(f"{root} is not an spti run folder: manifest.json is missing")
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{mpath} could not be read ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, Mapping):
        raise RunFolderError(f"{mpath} is not a JSON object")

    sections = [
        _privacy_section(run, manifest),
        _config_section(run, manifest),
        _release_section(run, max_images),
    ]
    it = _iterations_section(run, max_images)
    if it:
        sections.append(it)
    sections.append(_captions_section(run))
    met_html, metrics = _metrics_section(run)
    sections.append(met_html)
    mem = _memorization_section(run, metrics, show_private, max_images)
    if mem:
        sections.append(mem)
    sections.append(_inputs_section(run))

    banner = ""
    if show_private:
        banner = (
            '<div class="banner private">WARNING: this report contains PRIVATE images (memorization audit). '
            "Do not share or publish it.</div>"
        )
    notes = ""
    if run.notes:
        notes = _section("notes", "Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in run.notes) + "</ul>")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    version = manifest.get("spti_version", "?")
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>spti report: {_e(root.resolve().name)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>spti report: {_e(root.resolve().name)}</h1>"
        f'<p class="note">spti {_e(version)} · report built {_e(created)} · run created '
        f"{_e(manifest.get('created', '?'))}</p>"
        f"{banner}{''.join(sections)}{notes}</main></body></html>\n"
    )
    target = Path(out) if out is not None else root / "report.html"
    from spti.data.io import atomic_write_text

    atomic_write_text(target, doc)
    logger.info("report: wrote %s", target)
    return target
