"""The non-private caption ceiling (issue 13, point 4): ``evaluate.ceiling: true`` renders the private
captions once with the release renderer into private/ceiling/, measures them like the release and records a
``ceiling`` entry in metrics.json marked not differentially private; release/ does not change. With image
voting there are no private captions: a logged note, no entry.

The fast tests replace the metric computation (real metrics need model weights); the slow one runs the
EfficientNet feature space for real (run by the lead)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 220, 40)]


def _private_images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(16):
        d = root / f"u{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(np.array(_COLOURS[i % 4]) + rng.integers(-12, 13, size=(24, 24, 3)), 0, 255)
        Image.fromarray(px.astype(np.uint8), "RGB").save(d / f"img{i:02d}.png")
    return root


def _cfg(tmp_path: Path, *, voting: str = "text", metrics=("fid",), ceiling: bool = True) -> dict:
    return {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(_private_images(tmp_path / "private")), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "unit": "record", "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "variation_mode": "mixed", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 1, "population": 6, "variations": 2, "voting": voting},
        "evaluate": {"metrics": list(metrics), "ceiling": ceiling},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM", "garbage": 0.2},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }


@pytest.fixture()
def fake_metrics(monkeypatch):
    """evaluate() without model weights: the mean colour distance as "fid"; records what it was given."""
    import importlib

    ev = importlib.import_module("spti.metrics.evaluate")  # the module (the package re-exports the function)
    calls = []

    def fake(real, synthetic, *, metrics, captions=None, **kw):
        calls.append({"synthetic": synthetic, "metrics": tuple(metrics), "captions": captions})
        n = len(synthetic) if isinstance(synthetic, list) else None
        return {"differentially_private": False,
                "metrics": {"fid": {"value": 1.0 + len(calls), "n_synthetic": n, "differentially_private": False}}}

    monkeypatch.setattr(ev, "evaluate", fake)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ceiling_renders_private_captions_into_private_and_records_a_not_dp_entry(tmp_path, fake_metrics):
    from spti.pipeline import run

    run(_cfg(tmp_path))
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    ceiling = metrics["ceiling"]
    assert ceiling["differentially_private"] is False and "NOT differentially private" in ceiling["note"]
    assert ceiling["metrics"]["fid"]["value"] == 3.0  # the second evaluate() call: release first, then ceiling
    n_release = len(list((out / "release" / "images").glob("*.png")))
    assert ceiling["n_images"] == min(n_release, 16)  # as many as the release: comparable Fréchet distances
    assert len(fake_metrics) == 2 and fake_metrics[1]["metrics"] == ("fid",)
    # the ceiling images are renders of PRIVATE captions: under private/ceiling/, listed with their caption
    rows = [json.loads(line) for line in (out / "private" / "ceiling" / "images.jsonl").read_text().splitlines()]
    assert len(rows) == ceiling["n_images"] == len(fake_metrics[1]["synthetic"])
    private_caps = {json.loads(line)["text"] for f in (out / "private" / "captions").glob("*.jsonl")
                    for line in f.read_text().splitlines()}
    assert all(r["text"] in private_caps for r in rows) and fake_metrics[1]["captions"] == [r["text"] for r in rows]
    assert all(r["image"].startswith("private/ceiling/") and (out / r["image"]).is_file() for r in rows)
    assert json.loads((out / "stats.json").read_text())["renderer_calls"]["ceiling"] == len(rows)
    # nothing of it in release/, and release/ is what a run without the ceiling writes
    release = _files(out / "release")
    assert not any("ceiling" in name for name in release)
    assert not any(b"ceiling" in body for name, body in release.items() if not name.endswith(".png"))
    # the report shows the ceiling next to the release, labelled, without its (private) images
    doc = (out / "report.html").read_text()
    assert "ceiling: private captions rendered" in doc and "private/ceiling/" in doc
    assert doc.count("<img ") == n_release  # the release grid only: no ceiling image in the report


def test_release_is_identical_with_and_without_the_ceiling(tmp_path, fake_metrics):
    from spti.pipeline import run

    run(_cfg(tmp_path / "a", ceiling=True))
    run(_cfg(tmp_path / "b", ceiling=False))
    a, b = _files(tmp_path / "a" / "run" / "release"), _files(tmp_path / "b" / "run" / "release")
    assert a == b  # byte for byte, the public manifest and the card included (evaluate is not published)
    assert "ceiling" not in json.loads((tmp_path / "b" / "run" / "metrics.json").read_text())
    assert not (tmp_path / "b" / "run" / "private" / "ceiling").exists()


def test_image_voting_skips_the_ceiling_with_a_note(tmp_path, fake_metrics, caplog):
    from spti.pipeline import run

    with caplog.at_level(logging.INFO, logger="spti"):
        run(_cfg(tmp_path, voting="image"))
    out = tmp_path / "run"
    assert "ceiling" not in json.loads((out / "metrics.json").read_text())
    assert not (out / "private" / "ceiling").exists()
    assert any("no caption ceiling" in r.getMessage() and "image" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_ceiling_with_real_efficientnet_features(tmp_path):
    """A real metric (EfficientNet-Lite0 features): the ceiling's FD sits next to the release's."""
    pytest.importorskip("timm")
    from spti.pipeline import run

    cfg = _cfg(tmp_path, metrics=("fd-efficientnet",))
    run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert isinstance(metrics["metrics"]["fd-efficientnet"]["value"], float)
    assert isinstance(metrics["ceiling"]["metrics"]["fd-efficientnet"]["value"], float)
    assert metrics["ceiling"]["differentially_private"] is False
