"""Labels out (issue 12, requirement 4): a labelled release is an ImageFolder whose metadata.jsonl carries
each image's class name, with release/labels.json (names, descriptions) on the release allow-list; it loads
with ``datasets.load_dataset("imagefolder")`` with a ``label`` column; the dataset card says it is labelled,
names the classes and says how the class sizes were chosen. No exact per-class count of the private data
reaches release/. Unlabelled releases are unchanged. Plug-in backends from ``support.fakes``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.config import Config
from spti.data.card import build_dataset_card, class_sizes_method
from spti.data.release import RELEASE_FILES, prune_release, public_config, write_captions
from spti.errors import InputError
from spti.stages import finish_release_docs, open_run
from spti.stages.private import ingest_stage, private_labels
from spti.stages.render import caption_label_names, caption_rows_labels, render_stage

#: The private set's classes and their sizes: distinctive numbers that no setting of the run can equal.
CLASS_SIZES = {"red": 23, "blue": 29, "green": 31}
RGB = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
PATH_WORD, FILE_WORD, USER_WORD = "kangaroo", "wombat", "userzeta"


def labelled_private_set(parent: Path) -> Path:
    """ImageFolder ``<class>/<file>.png`` with CLASS_SIZES images per class, users in a metadata column."""
    root = parent / f"{PATH_WORD}-labelled"
    rng = np.random.default_rng(0)
    rows = []
    for colour, n in CLASS_SIZES.items():
        for i in range(n):
            px = np.clip(np.array(RGB[colour]) + rng.integers(-12, 13, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            rel = f"{colour}/{FILE_WORD}-{i:03d}.png"
            (root / colour).mkdir(parents=True, exist_ok=True)
            Image.fromarray(px, "RGB").save(root / rel)
            rows.append({"file_name": rel, "owner": f"{USER_WORD}-{i % 5}"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _cfg(tmp_path: Path, data: Path, class_sizes: str = "uniform", **over) -> Config:
    d = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(data), "labels_from_subfolders": True, "user_column": "owner"},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": 7, "class_sizes": class_sizes},
        "classes": {"red": "a red square", "blue": "a blue square", "yellow": "a yellow square"},
        "render": {"images_per_caption": 2},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        **over,
    }
    return Config.from_dict(d)


def _labelled_release(tmp_path: Path, class_sizes: str = "uniform"):
    """ingest -> private_labels -> render_stage (a stand-in population) -> finish_release_docs."""
    from support.fakes import SolidRenderer

    data = labelled_private_set(tmp_path)
    cfg = _cfg(tmp_path, data, class_sizes)
    run_dir = open_run(cfg, "run")
    try:
        ls = private_labels(cfg, ingest_stage(run_dir, cfg))
        assert ls is not None and ls.names == ["blue", "green", "red", "yellow"]
        texts = ["A red square.", "A red square on grey.", "A blue square.", "A green square.", "A yellow square."]
        labels = np.array([2, 2, 0, 1, 3], dtype=np.int64)  # class indices, as the engine hands them over
        write_captions(run_dir.release, texts, [ls.names[i] for i in labels])
        rows = render_stage(run_dir, cfg, texts, renderer=SolidRenderer(), labels=labels, label_names=ls.names)
        finish_release_docs(run_dir, cfg)
    finally:
        run_dir.close()
    return run_dir, rows, data


def test_render_stage_writes_labels(tmp_path):
    run_dir, rows, _ = _labelled_release(tmp_path)
    release = run_dir.release
    assert [r["label"] for r in rows] == ["red"] * 4 + ["blue"] * 2 + ["green"] * 2 + ["yellow"] * 2
    meta = [json.loads(x) for x in (release / "metadata.jsonl").read_text().splitlines()]
    assert meta == rows and set(meta[0]) == {"file_name", "text", "label"}
    assert json.loads((release / "labels.json").read_text()) == {
        "names": ["blue", "green", "red", "yellow"],
        "descriptions": ["a blue square", "green", "a red square", "a yellow square"]}
    caps = [json.loads(x) for x in (release / "dp_captions.jsonl").read_text().splitlines()]
    assert [c["label"] for c in caps] == ["red", "red", "blue", "green", "yellow"]
    assert "labels.json" in RELEASE_FILES and prune_release(release) == []
    assert run_dir.manifest()["stages"]["render"]["classes"] == 4


def test_labelled_release_loads_as_an_imagefolder_with_a_label_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    run_dir, rows, _ = _labelled_release(tmp_path)
    ds = datasets.load_dataset("imagefolder", data_dir=str(run_dir.release), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert "label" in ds.column_names and "text" in ds.column_names
    assert sorted(ds["label"]) == sorted(r["label"] for r in rows)
    assert len(ds) == len(rows) and ds[0]["image"].size == (32, 32)


@pytest.mark.parametrize("class_sizes", ["uniform", "dp"])  # "prior": test_card_sentences
def test_dataset_card_of_a_labelled_release(tmp_path, class_sizes):
    run_dir, _, _ = _labelled_release(tmp_path, class_sizes)
    card = (run_dir.release / "README.md").read_text()
    assert "## Labels" in card and "This release is labelled: 4 classes" in card
    for name in ("blue", "green", "red", "yellow", "a yellow square"):
        assert f"| {name} |" in card
    assert "| red | a red square | 4 |" in card  # images per class: counted in the release
    assert "image-classification" in card and 'ds[0]["label"]' in card and "labels.json" in card
    if class_sizes == "dp":
        assert "differentially private estimate of the private class sizes" in card
    else:
        assert "equal shares: a public prior" in card
    assert "**The label set.**" in card
    manifest = json.loads((run_dir.release / "manifest.json").read_text())
    assert manifest["config"]["privacy"]["class_sizes"] == class_sizes
    assert ("class_count_share" in manifest["config"]["privacy"]) == (class_sizes == "dp")
    assert manifest["config"]["classes"]["yellow"] == "a yellow square"


def test_card_sentences():
    manifest = {"config": {"privacy": {"class_sizes": "prior", "class_prior": {"a": 1, "b": 3}}}}
    labels = {"names": ["a", "b"], "descriptions": ["an a", "a b | pipe"], "images": [1, 3]}
    card = build_dataset_card({}, manifest, n_images=4, n_captions=4, labels=labels)
    assert "in the public proportions the user stated (a: 1, b: 3)" in card
    assert "| b | a b / pipe | 3 |" in card
    assert class_sizes_method({"budget": {"class_count_sigma": 19.0}}, {}) == "dp"
    card = build_dataset_card({"budget": {"class_count_sigma": 19.5}}, {"config": {"privacy": {"class_count_share": 0.05}}},
                              n_images=0, n_captions=2, labels={"names": ["a"]})
    assert "(5 % of the budget's μ², noise σ_c = 19.5)" in card and "class_sizes: dp" in card
    # unlabelled: the card is what it was
    plain = build_dataset_card({}, {}, n_images=2, n_captions=1)
    assert plain == build_dataset_card({}, {}, n_images=2, n_captions=1, labels=None)
    assert "Labels" not in plain and "label" not in plain


def test_public_config_publishes_label_settings_only_for_labelled_runs():
    plain = Config().to_dict()
    assert "classes" not in public_config(plain) and "class_sizes" not in public_config(plain)["privacy"]
    cfg = Config.from_dict({"data": {"label_column": "y"}, "classes": {"0": "a zero"},
                            "privacy": {"class_sizes": "prior", "class_prior": {"0": 1.0}}}).to_dict()
    pub = public_config(cfg)
    assert pub["classes"] == {"0": "a zero"}
    assert pub["privacy"]["class_sizes"] == "prior" and pub["privacy"]["class_prior"] == {"0": 1.0}
    assert "class_count_share" not in pub["privacy"] and "data" not in pub


def test_no_exact_per_class_count_reaches_the_release(tmp_path):
    run_dir, _, data = _labelled_release(tmp_path, "dp")
    release = run_dir.release
    numbers: set[int] = set()
    text = []
    for p in sorted(release.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md"):
            body = p.read_text(encoding="utf-8")
            text.append(body)
            numbers |= {int(m) for m in re.findall(r"(?<![\w.])(\d+)(?![\w.])", body)}
    assert not set(CLASS_SIZES.values()) & numbers, sorted(set(CLASS_SIZES.values()) & numbers)
    assert sum(CLASS_SIZES.values()) not in numbers  # no ledger here: N is not published either
    body = "\n".join(text)
    for word in (PATH_WORD, FILE_WORD, USER_WORD, str(data)):
        assert word not in body, word
    # the run folder keeps the private labels (so the test above is not vacuous)
    ingest_rows = [json.loads(x) for x in (run_dir.private / "ingest.jsonl").read_text().splitlines()]
    assert sum(r["label"] == "green" for r in ingest_rows) == CLASS_SIZES["green"]


def test_an_unlabelled_render_removes_a_stale_labels_file(tmp_path):
    from support.fakes import SolidRenderer

    run_dir, _, _ = _labelled_release(tmp_path)
    cfg = Config.from_dict({"out": str(run_dir.path), "progress": False,
                            "renderer": {"backend": "support.fakes:SolidRenderer"}})
    with open_run(cfg, "render", post_processing=True) as rd:
        rows = render_stage(rd, cfg, ["A red square."], renderer=SolidRenderer())
    assert rows == [{"file_name": "images/00000.png", "text": "A red square."}]
    assert not (run_dir.release / "labels.json").exists()


def test_caption_label_names():
    cfg = Config.from_dict({"classes": {"z": "zed"}})
    assert caption_label_names(cfg, 2, [1, 0], ["a", "b"]) == (["b", "a"], ["a", "b"])
    assert caption_label_names(cfg, 2, np.array([1, 1]), ["a", "b"]) == (["b", "b"], ["a", "b"])
    assert caption_label_names(cfg, 2, ["b", "a"], None) == (["b", "a"], ["a", "b", "z"])
    with pytest.raises(InputError, match="one label per caption"):
        caption_label_names(cfg, 3, [0, 1], ["a", "b"])
    with pytest.raises(InputError, match="class index"):
        caption_label_names(cfg, 1, [2], ["a", "b"])
    with pytest.raises(InputError, match="not among the class names"):
        caption_label_names(cfg, 1, ["c"], ["a", "b"])
    with pytest.raises(InputError, match="need the class names"):
        caption_label_names(cfg, 1, [0], None)


def test_spti_render_keeps_the_labels_of_labelled_captions(tmp_path, capsys):
    from spti.cli import main

    run_dir, _, _ = _labelled_release(tmp_path)
    rows = [json.loads(x) for x in (run_dir.release / "dp_captions.jsonl").read_text().splitlines()]
    assert caption_rows_labels(run_dir, rows) == (["red", "red", "blue", "green", "yellow"],
                                                  ["blue", "green", "red", "yellow"])
    assert caption_rows_labels(run_dir, [{"text": "x"}]) == (None, None)
    caps = tmp_path / "caps.jsonl"
    caps.write_text((run_dir.release / "dp_captions.jsonl").read_text())
    assert main(["render", "--captions", str(caps), "--out", str(run_dir.path), "--no-progress"]) == 0
    meta = [json.loads(x) for x in (run_dir.release / "metadata.jsonl").read_text().splitlines()]
    assert [m["label"] for m in meta] == ["red"] * 4 + ["blue"] * 2 + ["green"] * 2 + ["yellow"] * 2
    assert (run_dir.release / "labels.json").is_file()


def test_run_command_line_label_flags(capsys):
    import argparse

    from spti.cli import _config
    from spti.cli_args import build_parser

    p = build_parser()
    a = p.parse_args(["run", "--data", "d", "--out", "o", "--labels-from-subfolders", "--class-sizes", "uniform",
                      "--class-count-share", "0.1"])
    cfg = _config(a, {"data.private": a.data})
    assert cfg.data.labels_from_subfolders and cfg.privacy.class_sizes == "uniform"
    assert cfg.privacy.class_count_share == 0.1
    a = p.parse_args(["run", "--data", "d", "--label-column", "cls", "--users-from-subfolders"])
    cfg = _config(a, {"data.private": a.data})
    assert cfg.data.label_column == "cls" and cfg.data.users_from_subfolders and not cfg.data.labels_from_subfolders
    a = p.parse_args(["caption", "--data", "d", "--labels-from-subfolders"])
    assert _config(a, {"data.private": a.data}).data.labels_from_subfolders
    with pytest.raises(SystemExit):
        p.parse_args(["run", "--class-sizes", "exact"])
    capsys.readouterr()
    help_text = p._subparsers._group_actions[0].choices["run"].format_help()  # noqa: SLF001
    for flag in ("--labels-from-subfolders", "--label-column", "--class-sizes", "--class-count-share"):
        assert flag in help_text
    assert isinstance(a, argparse.Namespace)
