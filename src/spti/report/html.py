"""One self-contained HTML report of a run folder.

Why one file with everything inlined (images as base64, plots as base64 PNG, CSS in a ``<style>``): the
report is mailed, attached to tickets and opened on machines without the run folder or network access; a
Content-Security-Policy forbids the page from loading anything external, so opening it leaks nothing.

Privacy: private images appear only with ``show_private=True``, under a warning banner; without it the
memorization audit shows distances only (a flagged synthetic image may itself be a near-copy of a private
one, so it is not shown either). Paths to the private collection are redacted from the config, and the
command line is never shown (the manifest keeps the subcommand only). Every number computed from the private
data — metrics, ingest and stage counters — carries a "not differentially private" label next to it; N, the
one exact count the ledger publishes, carries its own label ("treated as public").
Robustness: every file but ``manifest.json`` is optional; a missing or malformed part becomes a note.

Layout (read at a glance): the first screen holds the guarantee in one sentence, the number of images, the
key metrics (labelled) and the image grid (:mod:`~spti.report.summary`); then the curves over iterations and
the class mix as plots; then the full metrics, the downstream accuracy (with its confusion matrices), the
memorization and privacy audits, the budget, the population of each iteration; the details (models as
key/value rows, stages, config, manifest) and the DP captions collapsed; the counters last.

Module map: :mod:`~spti.report.reader` reads the run folder, :mod:`~spti.report.summary`,
:mod:`~spti.report.sections` and :mod:`~spti.report.metrics_sections` build the sections from
:mod:`~spti.report.markup` and :mod:`~spti.report.plots`; this module assembles the page.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path

from spti.errors import RunFolderError
from spti.log import logger
from spti.report.audit_section import audit_section
from spti.report.markup import esc, section
from spti.report.metrics_sections import (
    accuracy_section,
    curves_section,
    memorization_section,
    metrics_section,
)
from spti.report.reader import RunReader
from spti.report.sections import (
    captions_section,
    config_section,
    inputs_section,
    iterations_section,
    privacy_section,
    release_section,
)
from spti.report.summary import class_mix_section, summary_section

__all__ = ["build_report"]

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
.assume{display:inline-block;background:#fff4d6;color:#5b4300;border:1px solid #e6c46b;border-radius:10px;
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
summary h3{display:inline;margin:0}
h4{font-size:.95em;margin:.8em 0 .2em}
.glance{padding-top:2px;padding-bottom:6px}
.glance p{margin:.5em 0}
.guarantee{font-size:1.08em}
.guarantee.notprivate{background:#b00020;color:#fff;padding:8px 12px;border-radius:6px}
table.keymetrics{width:auto;max-width:100%}
.keymetrics td:first-child{white-space:nowrap;overflow-wrap:normal;word-break:normal}
.wide img{width:100%;max-width:800px;height:auto;display:block}
"""


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
    run = RunReader(root)
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

    # first screen: the guarantee, the counts, the key metrics, then the images; then the curves and the
    # class mix; then the full metrics, the audits, the budget; then the details, collapsed
    met_html, metrics = metrics_section(run)
    sections = [summary_section(run, manifest, metrics), release_section(run, max_images)]
    for optional in (curves_section(metrics), class_mix_section(run)):
        if optional:
            sections.append(optional)
    sections.append(met_html)
    acc = accuracy_section(metrics)
    if acc:
        sections.append(acc)
    mem = memorization_section(run, metrics, show_private, max_images)
    if mem:
        sections.append(mem)
    sections += [privacy_section(run, manifest), audit_section(run)]  # audit: "" unless `spti audit` ran
    it = iterations_section(run, max_images)
    if it:
        sections.append(it)
    sections += [captions_section(run), config_section(run, manifest), inputs_section(run)]

    banner = ""
    if show_private:
        banner = (
            '<div class="banner private">WARNING: this report contains PRIVATE images (memorization audit). '
            "Do not share or publish it.</div>"
        )
    notes = ""
    if run.notes:
        notes = section("notes", "Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in dict.fromkeys(run.notes)) + "</ul>")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    version = manifest.get("spti_version", "?")
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>spti report: {esc(root.resolve().name)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>spti report: {esc(root.resolve().name)}</h1>"
        f'<p class="note">spti {esc(version)} · report built {esc(created)} · run created '
        f"{esc(manifest.get('created', '?'))}</p>"
        f"{banner}{''.join(sections)}{notes}</main></body></html>\n"
    )
    target = Path(out) if out is not None else root / "report.html"
    from spti.data.io import atomic_write_text

    atomic_write_text(target, doc)
    logger.info("report: wrote %s", target)
    return target
