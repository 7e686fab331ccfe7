"""build_report on a hand-made run folder: content, escaping, privacy, robustness."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_run_fixture import EVIL, LONG_WORD, MAGENTA, PRIVATE_DATA_PATH

from spti.errors import RunFolderError
from spti.report import build_report

_DATA_IMG = re.compile(r'<img src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"')


def _embedded_images(doc: str) -> list[Image.Image]:
    out = []
    for b64 in _DATA_IMG.findall(doc):
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.load()
        out.append(im.convert("RGB"))
    return out


def _is_magenta(im: Image.Image) -> bool:
    return bool(np.abs(np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) - MAGENTA).max() < 8)


def test_report_contents(run_folder: Path):
    path = build_report(run_folder)
    assert path == run_folder / "report.html"
    doc = path.read_text(encoding="utf-8")
    # budget
    for s in (
        "4.2",
        "1e-05",
        "11.5",
        "0.123",
        "unit of privacy",
        "record",
        "the captioner runs on the data owner&#x27;s machine",
        "pe_histogram",
    ):
        assert s in doc, s
    # models and config (private path redacted everywhere)
    assert "stabilityai/sdxl-turbo" in doc and "SmolLM2-135M &lt;gguf&gt;" in doc
    assert PRIVATE_DATA_PATH not in doc and "&lt;redacted&gt;" in doc
    # images: 6 release images + 3 per iteration x 2 iterations + 2 plots; all decodable
    imgs = _embedded_images(doc)
    assert len(imgs) == doc.count("<img ") == 6 + 6 + 2
    assert "Iteration 0" in doc and "Iteration 1" in doc and "iteration 1 member 2" in doc
    # captions, escaped
    assert "dp caption seven" in doc and "a photo number 4" in doc
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;" in doc
    assert EVIL not in doc and "<script" not in doc and "<b>bold" not in doc
    # metrics with the not-DP label next to each, and curves
    assert "23.46" in doc and "precision" in doc and "0.25" in doc
    assert doc.count('class="notdp"') >= 3 + 1 + 1  # 3 metrics, the curves heading, the audit
    assert 'alt="fid over iterations"' in doc and 'alt="prdc.precision over iterations"' in doc
    # memorization: distances only, no private image
    assert "images/00003.png" in doc and "Images are not shown" in doc
    assert not any(_is_magenta(im) for im in imgs)
    assert "PRIVATE images" not in doc
    # ingest counts
    assert "skip reasons" in doc and "corrupt" in doc and "rejected_llm_outputs" in doc
    # self-contained: nothing external can load
    assert not re.search(r'(?:src|href)="(?!data:|#)', doc)
    assert "url(" not in doc and "<link" not in doc and "@import" not in doc
    assert "default-src 'none'" in doc


def test_population_images_file_wins_over_population_image_field(run_folder: Path):
    # iteration 0 of the fixture has population_images.jsonl; iteration 1 only population.jsonl's "image"
    d = run_folder / "checkpoints" / "iter_000"
    lines = (d / "population_images.jsonl").read_text(encoding="utf-8").splitlines()
    (d / "population_images.jsonl").write_text(lines[0] + "\n", encoding="utf-8")  # one member only
    (d / "population.jsonl").write_text(
        json.dumps({"text": "stale", "image": "images/p2.png"}) + "\n", encoding="utf-8"
    )
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert "1 of 1 rendered population members" in doc and "iteration 0 member 0" in doc
    assert "stale" not in doc and "iteration 0 member 2" not in doc
    assert "iteration 1 member 2" in doc  # the older layout still read


def test_show_private_adds_banner_and_private_images(run_folder: Path, tmp_path: Path):
    out = build_report(run_folder, out=tmp_path / "private-report.html", show_private=True)
    assert out == tmp_path / "private-report.html" and not (run_folder / "report.html").exists()
    doc = out.read_text(encoding="utf-8")
    assert "WARNING: this report contains PRIVATE images" in doc
    imgs = _embedded_images(doc)
    assert sum(_is_magenta(im) for im in imgs) == 1  # the pair, not the population row
    assert "image not available: private 2" in doc  # a pair whose private file is gone: a note
    assert doc.count("<img ") == len(imgs)


def test_max_images_limits_the_grid(run_folder: Path):
    doc = build_report(run_folder, max_images=2).read_text(encoding="utf-8")
    assert "2 of 6 images" in doc and "2 of 4 rendered population members" in doc


def test_only_manifest_is_required(tmp_path: Path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"privacy": {"epsilon": 1.5, "delta": 1e-6}}))
    doc = build_report(run).read_text(encoding="utf-8")
    for s in (
        "privacy.json is missing",
        "config.yaml is missing",
        "no rendered images",
        "dp_captions.jsonl is missing",
        "metrics.json is missing",
        "stats.json is missing",
        "1.5",
    ):
        assert s in doc, s
    with pytest.raises(RunFolderError, match="manifest.json"):
        build_report(tmp_path / "nothing-here" if (tmp_path / "nothing-here").mkdir() is None else None)


def test_malformed_parts_become_notes(run_folder: Path):
    (run_folder / "metrics.json").write_text("{not json")
    (run_folder / "privacy.json").write_text("[1, 2")
    with open(run_folder / "release" / "metadata.jsonl", "a", encoding="utf-8") as f:
        f.write("this line is broken\n[1, 2]\n")
    (run_folder / "release" / "images" / "00004.png").write_bytes(b"not a png")
    shutil.rmtree(run_folder / "checkpoints" / "iter_001" / "images")
    (run_folder / "config.yaml").write_text("a: [unclosed\n")
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert "metrics.json could not be read" in doc
    assert "privacy.json could not be read" in doc
    assert "metadata.jsonl: line 7 is not valid JSON; skipped" in doc
    assert "metadata.jsonl: line 8 is not a JSON object; skipped" in doc
    assert "image not available: images/00004.png" in doc
    assert "config.yaml could not be parsed" in doc
    assert LONG_WORD in doc  # the caption of image 2 is still there


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path):
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(RunFolderError, match="could not be read"):
        build_report(tmp_path)
