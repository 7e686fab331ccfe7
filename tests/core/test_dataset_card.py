"""release/README.md, the dataset card (issue 13, point 5): a Hugging Face card whose YAML header parses and
states ε and δ exactly as privacy.json; a run that is not private says so first; the folder still loads with
``datasets.load_dataset("imagefolder", data_dir=release)``; built from public fields only (the release scan
of tests/core/test_release_privacy.py reads it too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spti.data.card import NOT_PRIVATE_HEADLINE, build_dataset_card

_COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30)]


def _private_images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(12):
        d = root / f"u{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(np.array(_COLOURS[i % 3]) + rng.integers(-12, 13, size=(16, 16, 3)), 0, 255)
        Image.fromarray(px.astype(np.uint8), "RGB").save(d / f"img{i:02d}.png")
    return root


def _run(tmp_path: Path, **privacy) -> Path:
    from spti.pipeline import run

    data = _private_images(tmp_path / "private")
    out = tmp_path / "run"
    run({
        "out": str(out), "seed": 3, "progress": False,
        "data": {"private": str(data), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "delta": 1e-5, "unit": "user", **privacy},
        "generation": {"domain": "a coloured object", "variation_mode": "mixed", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 6, "variations": 2, "voting": "image", "lookahead": 2},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM", "garbage": 0.2},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    })
    return out / "release"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def _body(text: str) -> str:
    return text[text.index("\n---\n", 4) + 5 :]


@pytest.fixture(scope="module")
def private_release(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("card"))


def test_card_header_parses_and_states_epsilon_and_delta_exactly(private_release: Path):
    card = (private_release / "README.md").read_text(encoding="utf-8")
    ledger = json.loads((private_release / "privacy.json").read_text(encoding="utf-8"))
    meta = _front_matter(card)
    dp = meta["differential_privacy"]
    assert dp["private"] is True
    assert dp["epsilon"] == ledger["budget"]["epsilon"] == 2.0
    assert dp["delta"] == ledger["budget"]["delta"] == 1e-5
    assert dp["unit"] == "user" and dp["iterations"] == ledger["budget"]["iterations"] == 2
    assert dp["num_private"] == ledger["budget"]["num_private"]  # N: public by the ledger's assumption
    assert meta["tags"] and "differential-privacy" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    body = _body(card)
    assert NOT_PRIVATE_HEADLINE not in card
    assert f"| ε (epsilon) | {ledger['budget']['epsilon']!r} |" in body
    assert f"| δ (delta) | {ledger['budget']['delta']!r} |" in body
    assert ledger["guarantee"] in body and ledger["dataset_size"] in body
    for heading in ("## What this is", "## How it was made", "## The privacy statement in plain words",
                    "## What it does not protect", "## How to load it", "## How to upload it"):
        assert heading in body, heading
    assert 'load_dataset("imagefolder", data_dir=' in body
    assert "huggingface-cli upload <your-name>/<dataset-name> path/to/release --repo-type dataset" in body
    n_images = len(list((private_release / "images").glob("*.png")))
    assert body.count(f"{n_images} synthetic images") == 1


def test_imagefolder_still_loads_with_the_card_in_the_folder(private_release: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(private_release), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    rows = [json.loads(line) for line in (private_release / "metadata.jsonl").read_text().splitlines()]
    assert len(ds) == len(rows) == len(list((private_release / "images").glob("*.png")))
    assert set(ds.column_names) == {"image", "text"}
    assert sorted(ds["text"]) == sorted(r["text"] for r in rows)


def test_insecure_noise_card_says_not_private_first(tmp_path: Path):
    release = _run(tmp_path, insecure_noise_seed=7)
    card = (release / "README.md").read_text(encoding="utf-8")
    assert _front_matter(card)["differential_privacy"]["private"] is False
    first = next(line for line in _body(card).splitlines() if line.strip())
    assert first.startswith(NOT_PRIVATE_HEADLINE) and "insecure" in first
    assert "NOT differentially private" in _front_matter(card)["pretty_name"]


@pytest.mark.parametrize(
    ("ledger", "manifest", "why"),
    [
        (None, {}, "no privacy ledger"),
        ({"private": False, "guarantee": "NOT differentially private: no noise (sigma = 0)",
          "budget": {"epsilon": "inf", "delta": 0.0, "unit": "record", "iterations": 2, "private": False}},
         {}, "no noise"),
        ({"private": True, "within_budget": False, "guarantee": "OVER BUDGET: spent more",
          "budget": {"epsilon": 1.0, "delta": 1e-6, "unit": "record", "iterations": 2, "private": True}},
         {}, "OVER BUDGET"),
    ],
)
def test_cards_of_runs_that_are_not_covered_say_so_first(ledger, manifest, why):
    card = build_dataset_card(ledger, manifest, n_images=0, n_captions=4)
    meta = _front_matter(card)
    assert meta["differential_privacy"]["private"] is False
    if ledger is not None:
        assert meta["differential_privacy"]["epsilon"] == ledger["budget"]["epsilon"]  # as privacy.json states it
    first = next(line for line in _body(card).splitlines() if line.strip())
    assert first.startswith(NOT_PRIVATE_HEADLINE) and why.lower() in first.lower()
    assert 'load_dataset("json"' in card  # captions only: no image folder


def test_render_of_foreign_captions_rewrites_the_card_as_not_covered(tmp_path: Path, capsys):
    """`spti render --captions` with captions that are not the run's DP output replaces privacy.json by a
    "not covered" statement; the card must follow, and come back when the run's own captions are rendered."""
    from spti.cli import main

    release = _run(tmp_path)
    dp = release / "dp_captions.jsonl"
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"text": "A purple dragon in a castle."}) + "\n" + dp.read_text())
    assert main(["render", "--captions", str(foreign), "--out", str(release.parent), "--no-progress"]) == 0
    card = (release / "README.md").read_text(encoding="utf-8")
    first = next(line for line in _body(card).splitlines() if line.strip())
    assert first.startswith(NOT_PRIVATE_HEADLINE) and "not produced by this run's DP mechanism" in first
    assert _front_matter(card)["differential_privacy"]["private"] is False
    assert main(["render", "--captions", str(dp), "--out", str(release.parent), "--no-progress"]) == 0
    card = (release / "README.md").read_text(encoding="utf-8")
    assert NOT_PRIVATE_HEADLINE not in card and _front_matter(card)["differential_privacy"]["epsilon"] == 2.0
    capsys.readouterr()
