"""A hand-made run folder with every part the report reads (no pipeline involved), shared by the report
tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

MAGENTA = (255, 0, 255)  # only the private image has this colour: lets tests find it in the HTML
EVIL = '<script>alert("x")</script> & "quoted" <b>bold</b>'
LONG_WORD = "a" * 300  # no break opportunity: must still not overflow horizontally
PRIVATE_DATA_PATH = "/secret/private/photos-of-alice"


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _img(color, size=(40, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(color, dtype=np.float32) + rng.normal(0, 12, size=(size[1], size[0], 3)), 0, 200)
    return Image.fromarray(a.astype(np.uint8))


def make_run(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "spti_version": "0.1.0",
                "created": "2025-01-01T00:00:00+00:00",
                "seed": 0,
                "noise": {"generator": "secure"},
                "unit": "record",
                "num_private": 1000,
                "models": {
                    "llm": {"backend": "llamacpp", "model": "SmolLM2-135M <gguf>", "sha256": "00" * 32},
                    "release_renderer": {
                        "backend": "diffusers",
                        "model": "stabilityai/sdxl-turbo",
                        "steps": 1,
                    },
                },
                "stages": {"evolve": {"done": True, "iterations": 2}, "render": {"done": True, "images": 6}},
                "config": {"data": {"private": PRIVATE_DATA_PATH}},
            }
        ),
        encoding="utf-8",
    )
    (root / "privacy.json").write_text(
        json.dumps(
            {
                "schema": "spti.privacy-ledger",
                "schema_version": 1,
                "private": True,
                "guarantee": "(4.2, 1e-05)-differentially private per record",
                "adjacency": "add/remove one record",
                "accounting": "exact composition in Gaussian DP",
                "budget": {
                    "epsilon": 4.2,
                    "delta": 1e-5,
                    "sigma": 11.5,
                    "iterations": 2,
                    "mu": 0.123,
                    "num_private": 1000,
                    "unit": "record",
                    "private": True,
                },
                "spent": {"epsilon": 4.1, "delta": 1e-5, "mu": 0.123, "private": True},
                "within_budget": True,
                "mechanisms": [
                    {
                        "name": "pe_histogram",
                        "kind": "gaussian_histogram",
                        "count": 2,
                        "sigma": 11.5,
                        "l2_sensitivity": 1.0,
                        "unit": "record",
                        "mu": 0.123,
                        "description": "voting",
                    }
                ],
                "processing": [{"name": "captioning", "description": "applied to each record independently"}],
                "trust_assumptions": ["the captioner runs on the data owner's machine"],
            }
        ),
        encoding="utf-8",
    )
    (root / "config.yaml").write_text(
        f"seed: 0\ndata:\n  private: {PRIVATE_DATA_PATH}\nprivacy:\n  epsilon: 4.2\n"
        f"renderer:\n  backend: diffusers\n  note: '{LONG_WORD}'\n",
        encoding="utf-8",
    )
    rel = root / "release"
    (rel / "images").mkdir(parents=True)
    rows = []
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (120, 120, 120)]
    for i, c in enumerate(colors):
        size = (28, 28) if i == 0 else (300, 200)  # one tiny (pixelated) and larger ones (JPEG thumbnails)
        _img(c, size, seed=i).save(rel / "images" / f"{i:05d}.png")
        text = EVIL if i == 1 else (LONG_WORD if i == 2 else f"a photo number {i}")
        rows.append({"file_name": f"images/{i:05d}.png", "text": text})
    _write_jsonl(rel / "metadata.jsonl", rows)
    _write_jsonl(
        rel / "dp_captions.jsonl", [{"text": r["text"]} for r in rows] + [{"text": "dp caption seven"}]
    )

    private = root / "private"
    private.mkdir()
    Image.new("RGB", (20, 20), MAGENTA).save(private / "secret.png")
    for t in (0, 1):
        d = root / "checkpoints" / f"iter_{t:03d}"
        (d / "images").mkdir(parents=True)
        pop = []
        for j in range(3):
            _img(colors[j], (32, 32), seed=10 * t + j).save(d / "images" / f"p{j}.png")
            pop.append({"text": f"iteration {t} member {j}", "image": f"images/p{j}.png"})
        # A row pointing into private/ must never pull that image into the report.
        pop.append({"text": "sneaky", "image": "../../private/secret.png"})
        if t == 0:  # current layout: the renders in their own file, population.jsonl has texts only
            _write_jsonl(d / "population_images.jsonl", pop)
            _write_jsonl(d / "population.jsonl", [{"text": r["text"]} for r in pop])
        else:  # older runs: the render path in population.jsonl's "image" field
            _write_jsonl(d / "population.jsonl", pop)

    (root / "stats.json").write_text(
        json.dumps(
            {
                "ingest": {
                    "images": 1000,
                    "skipped": 3,
                    "duplicates": 1,
                    "users": None,
                    "skip_reasons": {"corrupt": 2, "empty": 1},
                },
                "evolve": {"rejected_llm_outputs": 17},
                "renderer_calls": {"release": 6},
            }
        ),
        encoding="utf-8",
    )
    note = "computed against private data — do not publish"
    (root / "metrics.json").write_text(
        json.dumps(
            {
                "differentially_private": False,
                "note": note,
                "metrics": {
                    "fid": {
                        "value": 23.4567,
                        "feature_space": "inception",
                        "n_real": 1000,
                        "n_synthetic": 6,
                        "implementation": "spti/clean-fid-protocol",
                        "mode": "clean",
                        "weights_sha256": "ab" * 32,
                        "differentially_private": False,
                        "note": note,
                    },
                    "prdc": {
                        "precision": 0.5,
                        "recall": 0.25,
                        "density": 0.75,
                        "coverage": 0.4,
                        "nearest_k": 5,
                        "differentially_private": False,
                        "note": note,
                    },
                    "memorization": {
                        "feature_space": "inception",
                        "threshold": 0.5,
                        "reference_distance": 10.0,
                        "n_flagged": 1,
                        "n_synthetic": 6,
                        "flagged": [3],
                        "closest_pairs": [
                            {
                                "synthetic": 3,
                                "private": 0,
                                "distance": 0.0,
                                "ratio": 0.0,
                                "flagged": True,
                                "synthetic_file": "images/00003.png",
                                "private_file": str(private / "secret.png"),
                            },
                            {
                                "synthetic": 1,
                                "private": 5,
                                "distance": 9.0,
                                "ratio": 0.9,
                                "flagged": False,
                                "synthetic_file": "images/00001.png",
                                "private_file": str(private / "gone.png"),
                            },
                        ],
                        "differentially_private": False,
                        "note": note,
                    },
                },
                "per_iteration": [
                    {"iteration": 1, "fid": 40.0, "prdc": {"precision": 0.3}},
                    {"iteration": 2, "fid": 30.0, "prdc": {"precision": 0.45}},
                ],
            }
        ),
        encoding="utf-8",
    )
    return root
