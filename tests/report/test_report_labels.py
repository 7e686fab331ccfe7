"""The report labels every number that is not differentially private next to the number (issue 9, point 3),
and never shows a command line (point 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from report_run_fixture import PRIVATE_DATA_PATH

from spti.report import build_report
from spti.report.markup import ASSUMED_PUBLIC_LABEL, NOT_DP_LABEL

_LABEL = 'class="notdp"'
_NUMBER = re.compile(r"\d")


def _section(doc: str, sid: str) -> str:
    start = doc.index(f'<section id="{sid}">')
    return doc[start : doc.index("</section>", start)]


def _rows(html: str) -> list[list[str]]:
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", r, flags=re.S) for r in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)]


def test_counters_stage_records_and_metrics_carry_the_label_next_to_each_number(run_folder: Path):
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert f">{NOT_DP_LABEL}</span>" in doc

    # inputs and counters: every value cell (a number) carries the label
    inputs = _section(doc, "inputs")
    values = [r[-1] for r in _rows(inputs) if len(r) >= 2 and _NUMBER.match(re.sub(r"<.*", "", r[-1]).strip())]
    assert len(values) >= 5  # images, skipped, duplicates, 2 skip reasons, the counters
    assert all(_LABEL in v for v in values), values
    assert "1,000 <span" in inputs  # next to the number, in the same cell

    # stage records (counts of private images, captions, ...) in the configuration section
    config = _section(doc, "config")
    stages = config[config.index("<h3>Stages</h3>") :]
    stages = stages[: stages.index("</table>")]
    details = [r[2] for r in _rows(stages) if len(r) == 3 and _NUMBER.search(r[2])]
    assert len(details) == 2 and all(_LABEL in d for d in details)
    summary = re.search(r"<summary>manifest\.json.*?</summary>", config, flags=re.S)
    assert summary and _LABEL in summary.group()

    # metrics: the label in each value cell; memorization: the flagged count and the pairs' columns
    metrics = _section(doc, "metrics")
    table = metrics[metrics.index("<tbody>") : metrics.index("</tbody>")]
    cells = [r[1] for r in _rows(table)]
    assert len(cells) == 3 and all(_NUMBER.search(c) and _LABEL in c for c in cells)
    mem = _section(doc, "memorization")
    flagged = re.search(r"<p><strong>1</strong> of 6 synthetic images flagged(.*?)</p>", mem)
    assert flagged and _LABEL in flagged.group(1)
    assert f"distance ({NOT_DP_LABEL})" in mem and f"ratio ({NOT_DP_LABEL})" in mem

    # N: the one exact count the ledger publishes, with its own label
    privacy = _section(doc, "privacy")
    n_row = next(r for r in _rows(privacy) if r[0].startswith("N "))
    assert n_row[1].startswith("1,000 ") and ASSUMED_PUBLIC_LABEL in n_row[1]


def test_a_recorded_command_line_is_cut_to_its_subcommand(run_folder: Path):
    """A run folder of an older spti recorded argv, which names the private data."""
    mpath = run_folder / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest["command"] = f"spti run --data {PRIVATE_DATA_PATH} --out /home/alice/runs/x"
    manifest["last_command"] = f"/usr/bin/spti run --data {PRIVATE_DATA_PATH}"
    mpath.write_text(json.dumps(manifest), encoding="utf-8")
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert PRIVATE_DATA_PATH not in doc and "photos-of-alice" not in doc and "/home/alice" not in doc
    assert "&quot;command&quot;: &quot;run&quot;" in doc and "&quot;last_command&quot;: &quot;run&quot;" in doc
