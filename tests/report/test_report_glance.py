"""The report read at a glance (issue 13, point 4): the guarantee in one sentence, the number of images, the
key metrics (labelled not DP) and the image grid first; then the curves as plots and the class mix; the
details (models as key/value rows, stages, config, manifest) collapsed; the caption ceiling beside the
release's metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from spti.report import build_report
from spti.report.markup import NOT_DP_LABEL

_LABEL = 'class="notdp"'


def _section(doc: str, sid: str) -> str:
    start = doc.index(f'<section id="{sid}"')
    return doc[start : doc.index("</section>", start)]


def _order(doc: str, *ids: str) -> list[int]:
    return [doc.index(f'<section id="{i}"') for i in ids]


def test_first_the_guarantee_counts_key_metrics_and_images(run_folder: Path):
    doc = build_report(run_folder).read_text(encoding="utf-8")
    pos = _order(doc, "summary", "images", "curves", "metrics", "privacy", "config", "inputs")
    assert pos == sorted(pos)
    summary = _section(doc, "summary")
    guarantee = re.search(r'<p id="guarantee" class="guarantee">(.*?)</p>', summary, flags=re.S).group(1)
    assert "(4.2, 1e-05)-differentially private per record" in guarantee
    assert "<strong>6</strong> synthetic images" in summary and "<strong>7</strong> DP captions" in summary
    body = summary[summary.index("<tbody>") : summary.index("</tbody>")]
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", body, flags=re.S)
    assert [c[0] for c in cells] == ["fid", "prdc", "memorization"]
    assert all(_LABEL in c[1] for c in cells) and "23.46" in cells[0][1]
    # the grid comes right after, before any other section
    assert doc.index('<section id="images">') == doc.index("</section>", doc.index('<section id="summary"')) + 10


def test_not_private_is_said_plainly_first(run_folder: Path):
    p = run_folder / "privacy.json"
    ledger = json.loads(p.read_text())
    ledger.update(private=False, guarantee="NOT differentially private: no noise (sigma = 0).")
    ledger["budget"]["private"] = False
    p.write_text(json.dumps(ledger))
    doc = build_report(run_folder).read_text(encoding="utf-8")
    g = re.search(r'<p id="guarantee" class="guarantee notprivate">(.*?)</p>', doc, flags=re.S)
    assert g and "NOT differentially private" in g.group(1) and "no noise" in g.group(1)
    assert doc.index('id="guarantee"') < doc.index('<section id="images">')

    (run_folder / "privacy.json").unlink()
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert "no privacy ledger" in re.search(r'<p id="guarantee"[^>]*>(.*?)</p>', doc, flags=re.S).group(1)


def test_curves_are_plots_and_details_are_collapsed_key_value_rows(run_folder: Path):
    doc = build_report(run_folder).read_text(encoding="utf-8")
    curves = _section(doc, "curves")
    assert curves.count("<img ") == 2 and "<details><summary>values</summary>" in curves
    config = _section(doc, "config")
    for summary in ("<summary><h3>Models</h3>", "<summary><h3>Stages</h3></summary>",
                    "<summary><h3>Configuration</h3>", "<summary>manifest.json"):
        assert summary in config, summary
    # models as key/value rows, not JSON dumps
    assert "<h4>llm</h4>" in config and "<tr><th>sha256</th><td>" + "00" * 32 + "</td></tr>" in config
    assert "<tr><th>steps</th><td>1</td></tr>" in config
    models = config[config.index("<summary><h3>Models</h3>") : config.index("<summary><h3>Stages</h3>")]
    assert "{" not in models and "&quot;" not in models
    stages = config[config.index("<summary><h3>Stages</h3>") :]
    assert "iterations: 2" in stages and "images: 6" in stages
    # the DP captions are collapsed too
    assert "<details><summary>7 differentially private captions" in _section(doc, "captions")


def test_ceiling_is_shown_next_to_the_release_metrics(run_folder: Path):
    p = run_folder / "metrics.json"
    m = json.loads(p.read_text())
    m["ceiling"] = {"differentially_private": False, "note": "ceiling", "n_images": 6,
                    "metrics": {"fid": {"value": 12.5, "differentially_private": False}}}
    p.write_text(json.dumps(m))
    doc = build_report(run_folder).read_text(encoding="utf-8")
    summary = _section(doc, "summary")
    assert "<th>ceiling: private captions rendered</th>" in summary
    row = re.search(r"<tr><td>fid</td><td>(.*?)</td><td>(.*?)</td></tr>", summary, flags=re.S)
    assert "23.46" in row.group(1) and "12.5" in row.group(2) and _LABEL in row.group(2)
    metrics = _section(doc, "metrics")
    assert "ceiling (private captions rendered)" in metrics and "private/ceiling/" in metrics
    assert re.search(r"<td><strong>12\.5</strong> <span " + _LABEL, metrics)


def test_class_mix_chart_when_the_run_knows_labels(run_folder: Path):
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert 'id="class-mix"' not in doc  # no labels, no chart
    (run_folder / "class_mix.json").write_text(json.dumps({
        "classes": ["sneaker", "bag", "shirt"],
        "series": [
            {"name": "private set", "mix": [60, 20, 20], "differentially_private": False},
            {"name": "iteration 0", "mix": [1 / 3, 1 / 3, 1 / 3]},
            {"name": "release", "mix": [0.5, 0.25, 0.25]},
            {"name": "ideal sampler", "mix": [0.6, 0.2, 0.2]},
            {"name": "broken", "mix": [1, 2]},  # wrong length: skipped
        ],
        "note": "labels were never shown to the pipeline",
    }))
    doc = build_report(run_folder).read_text(encoding="utf-8")
    mix = _section(doc, "class-mix")
    assert mix.count("<img ") == 1 and 'alt="class mix"' in mix
    assert "labels were never shown to the pipeline" in mix and "broken" not in mix
    rows = re.findall(r"<tr>(.*?)</tr>", mix[mix.index("<tbody>") :], flags=re.S)
    assert len(rows) == 4 and _LABEL in rows[0] and "0.6" in rows[0]  # the private mix, labelled
    assert "total variation from private set" in mix and "0.267" in rows[1]  # iteration 0: |1/3-.6|...
    pos = _order(doc, "images", "class-mix", "metrics")
    assert pos == sorted(pos)
    assert NOT_DP_LABEL in mix
