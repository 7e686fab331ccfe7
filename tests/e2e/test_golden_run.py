"""Byte-identity of whole runs: a refactor must not change what a run writes.

Three small runs with deterministic plug-in backends (``support.fakes``) and an insecure noise seed — text
voting with per-iteration evaluation (EfficientNet-Lite0 features), image voting, and ``spti evolve`` on
texts — are digested file by file (``support.golden``: every name, JSON value, pixel, array; versions,
timestamps and the run's location dropped) and compared with the digests committed in
``tests/data/golden/``. A change of behaviour that is *intended* regenerates them with
``--update-golden`` and shows up in review as a diff of those files.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import golden

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 40)}


def _private_images(root: Path) -> Path:
    """Users in sub-folders, a skewed colour mix, one duplicate, one corrupt file."""
    rng = np.random.default_rng(0)
    mix = ["red"] * 14 + ["blue"] * 6 + ["green"] * 3 + ["yellow"] * 1
    for i, name in enumerate(mix):
        d = root / f"user{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array(COLOURS[name], dtype=np.int16)
        px = np.clip(base + rng.integers(-12, 13, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px, "RGB").save(d / f"img{i:03d}.png")
    (root / "user0" / "dup.png").write_bytes((root / "user0" / "img000.png").read_bytes())
    (root / "user1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _base(out: Path, data_path: Path, **over) -> dict:
    d = {
        "out": str(out),
        "seed": 3,
        "progress": False,
        "data": {"private": str(data_path), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "unit": "record", "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "variation_mode": "mixed", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 8, "variations": 2},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM", "garbage": 0.2},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def _check(name: str, run_path: Path, update: bool, skip: tuple[str, ...] = ()) -> None:
    got = golden.dumps(golden.run_digest(run_path, skip=skip, base=run_path.parent))
    path = GOLDEN / f"{name}.json"
    if update or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
        if not update:
            pytest.fail(f"golden file {path} did not exist; written now — commit it")
        return
    want = path.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "now"))[:120])
        pytest.fail(f"run folder differs from {path.name}:\n{diff}")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.mark.slow
def test_text_voting_run_is_unchanged(tmp_path, update_golden):
    pytest.importorskip("timm")
    from spti.pipeline import run

    data = _private_images(tmp_path / "private")
    cfg = _base(tmp_path / "run", data, privacy={"unit": "user"},
                evaluate={"metrics": ["fd-efficientnet", "prdc", "memorization"], "per_iteration": True,
                          "space": "efficientnet"})
    run(cfg)
    _check("text_voting", tmp_path / "run", update_golden)


def test_image_voting_run_is_unchanged(tmp_path, update_golden):
    from spti.pipeline import run

    data = _private_images(tmp_path / "private")
    cfg = _base(tmp_path / "run", data, pe={"voting": "image", "lookahead": 2, "selection": "sample"},
                render={"images_per_caption": 2, "seed": 5})
    run(cfg)
    _check("image_voting", tmp_path / "run", update_golden)


def test_evolve_texts_run_is_unchanged(tmp_path, update_golden):
    from spti.config import Config
    from spti.pipeline import evolve_texts

    rows = [{"text": f"A {c} {o} in a {p}.", "user_id": f"u{i % 4}"}
            for i, (c, o, p) in enumerate([("red", "car", "garage"), ("red", "dog", "park"), ("blue", "car", "park"),
                                           ("red", "lamp", "kitchen"), ("green", "chair", "beach")] * 3)]
    f = tmp_path / "private.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = _base(tmp_path / "run", f, privacy={"unit": "user", "epsilon": 4.0},
              data={"private": str(f), "users_from_subfolders": False, "user_column": "user_id"},
              pe={"threshold": 0.5, "lookahead": 2})
    evolve_texts(Config.from_dict(d))
    _check("evolve_texts", tmp_path / "run", update_golden)
