"""`spti run` on a labelled ImageFolder (issue 12) with the offline fakes, both voting modes: labels in,
per-class populations out, the release labelled, the class counts in the ledger, a crash resumed without a
second noise draw. Fast: 24 tiny squares, plug-in backends from ``support.fakes``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.fakes import COLOUR_RGB

from spti.pe.engine import _Stopped
from spti.pipeline import run

CLASSES = {"blue": 8, "green": 4, "red": 12}  # images per class; label names sorted: blue, green, red


def labelled_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, n in CLASSES.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            px = np.clip(np.array(COLOUR_RGB[name]) + rng.integers(-12, 13, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px, "RGB").save(d / f"img{i:03d}.png")
    return root


def config(out: Path, data: Path, voting: str, **privacy) -> dict:
    return {
        "out": str(out),
        "seed": 3,
        "progress": False,
        "data": {"private": str(data), "labels_from_subfolders": True},
        "classes": {"red": "a red object", "blue": "a blue object"},  # green: its name
        "privacy": {"epsilon": 4.0, "insecure_noise_seed": 7, **privacy},
        "generation": {"domain": "a coloured object", "variation_mode": "mixed", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 12, "variations": 2, "voting": voting},
        "render": {"images_per_caption": 1, "seed": 5},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }


def jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


@pytest.mark.parametrize("voting", ["text", "image"])
def test_labelled_run_releases_per_class_populations(tmp_path, voting):
    data = labelled_folder(tmp_path / "private")
    out = tmp_path / "run"
    run(config(out, data, voting))
    names = sorted(CLASSES)
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = manifest["classes"]["sizes"]
    assert manifest["classes"]["names"] == names and sum(sizes) == 12 and len(sizes) == 3
    for t in range(3):
        pop = jsonl(out / "checkpoints" / f"iter_{t:03d}" / "population.jsonl")
        assert np.bincount([r["label"] for r in pop], minlength=3).tolist() == sizes
    cands = jsonl(out / "checkpoints" / "iter_001" / "candidates.jsonl")
    assert all(r["label"] in (0, 1, 2) for r in cands)
    assert (out / "checkpoints" / "class_counts.npz").is_file()  # the DP class counts, drawn once
    # the release: every caption and image carries its class name, and the label set is listed
    captions = jsonl(out / "release" / "dp_captions.jsonl")
    final = jsonl(out / "checkpoints" / "iter_002" / "population.jsonl")
    assert [(c["text"], c["label"]) for c in captions] == [(r["text"], names[r["label"]]) for r in final]
    meta = jsonl(out / "release" / "metadata.jsonl")
    assert sorted(m["label"] for m in meta) == sorted(c["label"] for c in captions)
    assert json.loads((out / "release" / "labels.json").read_text())["names"] == names
    mechanisms = {m["name"]: m for m in json.loads((out / "privacy.json").read_text())["mechanisms"]}
    assert mechanisms["pe_voting_histogram"]["count"] == 2  # one histogram per iteration for all classes
    assert mechanisms["dp_class_counts"]["count"] == 1  # the class counts, composed with them


def test_labelled_run_resumes_without_redrawing_noise(tmp_path):
    data = labelled_folder(tmp_path / "private")
    full = tmp_path / "full"
    run(config(full, data, "image"))
    out = tmp_path / "crashed"
    with pytest.raises(_Stopped):
        run(config(out, data, "image"), stop_after=1)
    ck = out / "checkpoints"
    before = {p.name: p.read_bytes() for p in (ck / "class_counts.npz", ck / "iter_001" / "noisy_histogram.npz")}
    run(config(out, data, "image"))
    assert (ck / "class_counts.npz").read_bytes() == before["class_counts.npz"]
    assert (ck / "iter_001" / "noisy_histogram.npz").read_bytes() == before["noisy_histogram.npz"]
    assert jsonl(out / "release" / "dp_captions.jsonl") == jsonl(full / "release" / "dp_captions.jsonl")
    assert jsonl(out / "release" / "metadata.jsonl") == jsonl(full / "release" / "metadata.jsonl")


def test_uniform_class_sizes_draw_no_class_counts(tmp_path):
    data = labelled_folder(tmp_path / "private")
    out = tmp_path / "run"
    run(config(out, data, "text", class_sizes="uniform"))
    assert json.loads((out / "manifest.json").read_text())["classes"]["sizes"] == [4, 4, 4]
    assert not (out / "checkpoints" / "class_counts.npz").exists()


def test_spti_evolve_on_texts_refuses_labels(tmp_path):
    from spti.config import Config
    from spti.errors import ConfigError
    from spti.pipeline import evolve_texts

    f = tmp_path / "private.jsonl"
    f.write_text('{"text": "A red car in a park.", "label": "red"}\n')
    cfg = config(tmp_path / "run", f, "text")
    cfg["data"] = {"private": str(f), "label_column": "label"}
    with pytest.raises(ConfigError, match="unlabelled texts"):
        evolve_texts(Config.from_dict(cfg))
    assert not (tmp_path / "run").exists()
