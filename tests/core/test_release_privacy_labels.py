"""What a labelled run publishes (issue 12): through the real command line (``spti run
--labels-from-subfolders --user-column ...``), release/ holds labels (metadata.jsonl, labels.json) but no
exact per-class count of the private data, no private path, file or user name and no private caption; in
the report, such a count appears only marked "not differentially private" (or as N, marked as treated as
public). The private class sizes are distinctive numbers (``test_labels_release.CLASS_SIZES``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from spti.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_labels_release import (  # noqa: E402
    CLASS_SIZES,
    FILE_WORD,
    PATH_WORD,
    USER_WORD,
    labelled_private_set,
)

_CONFIG = """
captioner: {backend: 'support.private_set:SecretCaptioner'}
llm: {backend: 'support.fakes:ScriptedLLM', garbage: 0.2}
text_embedder: {backend: 'support.fakes:BowEmbedder'}
renderer: {backend: 'support.fakes:SolidRenderer'}
generation: {domain: a coloured object, variation_mode: mixed, min_length: 3, max_length: 20}
pe: {iterations: 2, population: 8, variations: 2}
classes: {red: a red square, blue: a blue square, green: a green square}
"""
_INT = re.compile(r"(?<![\w.#%:-])(\d+)(?![\w.%:-])")  # ":" too: clock times (18:34:29) are not counts
_MARKED = ("not differentially private", "treated as public")


def _numbers(text: str) -> set[int]:
    return {int(m) for m in _INT.findall(text)}


def _report_text(html: str) -> str:
    """The visible text of report.html (no style, script, svg or embedded images), less the collapsed blocks
    whose summary marks them as a whole "not differentially private" (the manifest's dump)."""
    html = re.sub(r"(?is)<(style|script|svg)\b.*?</\1>", " ", html)
    html = re.sub(r'(?is)<details>\s*<summary>(?:(?!</summary>).)*class="notdp"(?:(?!</summary>).)*</summary>.*?</details>',
                  " ", html)
    html = re.sub(r"(?is)<[^>]*>", " ", html)
    return re.sub(r"\s+", " ", html)


@pytest.mark.parametrize("class_sizes", ["dp", "uniform"])
def test_labelled_release_holds_no_per_class_count(tmp_path, class_sizes):
    data = labelled_private_set(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(_CONFIG)
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--data", str(data), "--out", str(out), "--labels-from-subfolders",
                 "--user-column", "owner", "--class-sizes", class_sizes, "--epsilon", "2", "--seed", "3",
                 "--insecure-noise-seed", "7919", "--no-progress"]) == 0
    release = out / "release"
    meta = [json.loads(x) for x in (release / "metadata.jsonl").read_text().splitlines()]
    names = json.loads((release / "labels.json").read_text())["names"]
    assert names == ["blue", "green", "red"] and meta and all(m["label"] in names for m in meta)

    secret = set(CLASS_SIZES.values())
    for p in sorted(release.rglob("*")):
        if not p.is_file() or p.suffix not in (".json", ".jsonl", ".md"):
            continue
        body = p.read_text(encoding="utf-8")
        assert not secret & _numbers(body), (p.name, sorted(secret & _numbers(body)))
        for word in (PATH_WORD, FILE_WORD, USER_WORD, "quokkasecret", str(data)):
            assert word not in body, (p.name, word)

    # the report: a private per-class count may appear only with the "not DP" (or "treated as public") mark
    text = _report_text((out / "report.html").read_text(encoding="utf-8"))
    for m in _INT.finditer(text):
        if int(m.group(1)) in secret:
            after = text[m.end(): m.end() + 80]
            assert any(k in after for k in _MARKED), text[max(0, m.start() - 120): m.end() + 80]
