"""Labels in (issue 12, requirement 1): each ingested private image gets a class from its sub-folder or a
column of a listing / metadata file, together with either source of user ids; clear errors for missing or
empty labels; the label survives resume (private/ingest.jsonl); :func:`private_labels` builds the
:class:`LabelSet` (sorted names, classes named in the config included). Every image is made in tmp_path."""

from __future__ import annotations

import csv
import json
import logging
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.config import Config
from spti.data.images import IngestResult, ingest
from spti.data.labels import LabelSet, clean_label
from spti.errors import ConfigError, InputError
from spti.stages.private import ingest_stage, private_labels

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def png(path: Path, colour: str, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    r, g, b = COLOURS[colour]
    Image.new("RGB", (8, 8), (r, g, min(255, b + shade))).save(path)
    return path


def image_folder(root: Path) -> Path:
    """ImageFolder: root/<class>/*.png, 3 red, 2 green, 1 blue (distinct bytes)."""
    for colour, n in (("red", 3), ("green", 2), ("blue", 1)):
        for i in range(n):
            png(root / colour / f"{i}.png", colour, shade=i)
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- clean_label
@pytest.mark.parametrize("value, want", [
    ("cat", "cat"), (" cat ", "cat"), (3, "3"), (3.0, "3"), (np.int64(3), "3"), (np.float32(3.0), "3"),
    (" 3 ", "3"), (2.5, "2.5"), (True, "True"), ("none", "none"), ("null", "null"),
    (None, None), (float("nan"), None), (np.nan, None), (Decimal("NaN"), None), ("nan", None), ("<NA>", None),
])
def test_clean_label(value, want):
    assert clean_label(value) == want


def test_clean_label_tells_an_empty_label_from_a_missing_one():
    assert clean_label("") == "" and clean_label("  ") == ""
    assert clean_label("") is not None


# ------------------------------------------------------------------------------------------- ingestion
def test_labels_from_subfolders(tmp_path):
    res = ingest(image_folder(tmp_path / "d"), labels_from_subfolders=True, progress=False, workers=1)
    assert [(r.rel, r.label) for r in res.records] == [
        ("blue/0.png", "blue"), ("green/0.png", "green"), ("green/1.png", "green"),
        ("red/0.png", "red"), ("red/1.png", "red"), ("red/2.png", "red")]
    assert res.labelled and res.num_users is None


def test_unlabelled_ingestion_keeps_its_record_format(tmp_path):
    d = tmp_path / "run"
    res = ingest(image_folder(tmp_path / "d"), private_dir=d, progress=False, workers=1)
    assert all(r.label is None for r in res.records) and not res.labelled
    rows = [json.loads(x) for x in (d / "ingest.jsonl").read_text().splitlines()]
    assert all("label" not in row for row in rows)


def test_labels_survive_resume(tmp_path):
    d = tmp_path / "private"
    res = ingest(image_folder(tmp_path / "d"), private_dir=d, labels_from_subfolders=True, progress=False, workers=1)
    again = IngestResult.load(d)
    assert [r.label for r in again.records] == [r.label for r in res.records]
    assert again.records == res.records


def test_labels_from_subfolders_and_users_from_a_column(tmp_path):
    root = image_folder(tmp_path / "d")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    write_jsonl(root / "metadata.jsonl", [{"file_name": f, "owner": f"u{i % 2}"} for i, f in enumerate(files)])
    res = ingest(root, labels_from_subfolders=True, user_column="owner", progress=False, workers=1)
    assert [(r.label, r.user_id) for r in res.records] == [
        ("blue", "u0"), ("green", "u1"), ("green", "u0"), ("red", "u1"), ("red", "u0"), ("red", "u1")]
    assert res.num_users == 2


def test_labels_from_a_column_and_users_from_subfolders(tmp_path):
    root = tmp_path / "d"
    rows = []
    for u in ("alice", "bob"):
        for i, colour in enumerate(("red", "green", "red")):
            png(root / u / f"{i}.png", colour, shade=10 * (u == "bob") + i)
            rows.append({"file_name": f"{u}/{i}.png", "label": colour if i != 2 else 7.0})
    with open(root / "metadata.csv", "w", newline="") as f:  # a CSV: numbers come back as text ("7.0")
        w = csv.DictWriter(f, fieldnames=["file_name", "label"])
        w.writeheader()
        w.writerows(rows)
    res = ingest(root, label_column="label", users_from_subfolders=True, progress=False, workers=1)
    assert [(r.user_id, r.label) for r in res.records] == [
        ("alice", "red"), ("alice", "green"), ("alice", "7.0"),  # CSV text is kept as written
        ("bob", "red"), ("bob", "green"), ("bob", "7.0")]
    assert all("label" not in r.metadata for r in res.records)  # the label is not kept twice


def test_labels_and_users_from_two_columns_of_a_listing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png(tmp_path / "imgs" / "a.png", "red")
    png(tmp_path / "imgs" / "b.png", "blue")
    png(tmp_path / "imgs" / "c.png", "green")
    pq.write_table(pa.table({"path": ["imgs/a.png", "imgs/b.png", "imgs/c.png"], "cls": [3, 3, 1],
                             "who": ["x", "y", "x"], "note": ["n1", "n2", "n3"]}), tmp_path / "list.parquet")
    res = ingest(tmp_path / "list.parquet", label_column="cls", user_column="who", progress=False, workers=1)
    assert [(r.rel, r.label, r.user_id, dict(r.metadata)) for r in res.records] == [
        ("imgs/a.png", "3", "x", {"note": "n1"}), ("imgs/b.png", "3", "y", {"note": "n2"}),
        ("imgs/c.png", "1", "x", {"note": "n3"})]


def _no_private_detail(msg: str) -> None:
    """Error messages say "some images": no file name and no count (both private)."""
    assert "some images" in msg
    for word in ("0.png", "1.png", "loose.png", " 1 ", " 2 ", " 3 "):
        assert word not in msg, (word, msg)


def test_an_image_outside_the_class_folders_is_an_error(tmp_path):
    root = image_folder(tmp_path / "d")
    png(root / "loose.png", "red", shade=50)
    with pytest.raises(InputError, match="labels_from_subfolders: some images .* not inside a class sub-folder") as e:
        ingest(root, labels_from_subfolders=True, progress=False, workers=1)
    _no_private_detail(str(e.value))
    (root / "loose.png").unlink()
    (root / "README.txt").write_text("not an image: skipped, not an error")
    assert len(ingest(root, labels_from_subfolders=True, progress=False, workers=1).records) == 6


@pytest.mark.parametrize("bad, what", [(None, "no label"), ("", "an empty label"), ("   ", "an empty label"),
                                       (float("nan"), "no label")])
def test_a_missing_or_empty_label_in_a_column_is_an_error(tmp_path, bad, what):
    root = tmp_path / "d"
    png(root / "a.png", "red")
    png(root / "b.png", "blue")
    write_jsonl(root / "metadata.jsonl", [{"file_name": "a.png", "label": "x"},
                                          {"file_name": "b.png", "label": None if bad != bad else bad}])
    with pytest.raises(InputError, match=f"label_column 'label': some images .* have {what}") as e:
        ingest(root, label_column="label", progress=False, workers=1)
    _no_private_detail(str(e.value))


def test_a_row_missing_the_label_key_is_an_error(tmp_path):
    root = tmp_path / "d"
    png(root / "a.png", "red")
    png(root / "b.png", "blue")
    write_jsonl(root / "metadata.jsonl", [{"file_name": "a.png", "label": "x"}, {"file_name": "b.png"}])
    with pytest.raises(InputError, match="have no label"):
        ingest(root, label_column="label", progress=False, workers=1)


def test_label_source_errors(tmp_path):
    root = image_folder(tmp_path / "d")
    with pytest.raises(ConfigError, match="label_column='label' needs a metadata"):
        ingest(root, label_column="label", progress=False)
    write_jsonl(root / "metadata.jsonl", [{"file_name": "red/0.png"}])
    with pytest.raises(InputError, match="label_column 'label' is not a column"):
        ingest(root, label_column="label", progress=False)
    with pytest.raises(ConfigError, match="not both"):
        ingest(root, label_column="label", labels_from_subfolders=True)
    with pytest.raises(ConfigError, match="cannot both come from the sub-folders"):
        ingest(root, labels_from_subfolders=True, users_from_subfolders=True)
    with pytest.raises(ConfigError, match="different columns"):
        ingest(root, label_column="x", user_column="x")


def test_identical_images_in_two_classes_are_kept_once_with_the_first_label(tmp_path, caplog):
    root = tmp_path / "d"
    png(root / "cat" / "a.png", "red")
    png(root / "dog" / "a.png", "red")  # the same bytes, filed under another class
    png(root / "dog" / "b.png", "blue")
    with caplog.at_level(logging.WARNING, logger="spti"):
        res = ingest(root, labels_from_subfolders=True, progress=False, workers=1)
    assert [(r.rel, r.label) for r in res.records] == [("cat/a.png", "cat"), ("dog/b.png", "dog")]
    assert res.duplicate_of == [("dog/a.png", "img-000000")]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "different labels" in msg and "a.png" not in msg


# ------------------------------------------------------------------------------------------- LabelSet
def test_label_set_from_labels():
    ls = LabelSet.from_labels(["dog", "cat", "dog"], {"bird": "a photo of a bird", "dog": "a photo of a dog"})
    assert ls.names == ["bird", "cat", "dog"]  # a class named in the config exists without any record
    assert ls.descriptions == ["a photo of a bird", "cat", "a photo of a dog"]
    assert ls.index.dtype == np.int64 and ls.index.tolist() == [2, 1, 2]
    assert ls.num_classes == 3 and len(ls) == 3
    assert ls.private_counts().tolist() == [0, 1, 2]
    assert ls.private_counts(np.array([0.5, 1.0, 0.5])).tolist() == [0.0, 1.0, 1.0]
    assert ls.public() == {"names": ls.names, "descriptions": ls.descriptions}


def test_label_set_sorts_names_as_strings_and_checks_itself():
    assert LabelSet.from_labels(["10", "2", "1"]).names == ["1", "10", "2"]  # ImageFolder: sorted strings
    with pytest.raises(ValueError):
        LabelSet(names=["b", "a"], index=np.array([0]), descriptions=["b", "a"])
    with pytest.raises(ValueError):
        LabelSet(names=["a"], index=np.array([1]), descriptions=["a"])
    with pytest.raises(InputError):
        LabelSet.from_labels(["a", ""])


# ------------------------------------------------------------------------------------------- the stage
def _cfg(tmp_path: Path, data: Path, **data_over) -> Config:
    return Config.from_dict({"out": str(tmp_path / "run"), "progress": False,
                             "data": {"private": str(data), **data_over},
                             "classes": {"red": "a red square", "purple": "a purple square"}})


def test_private_labels_and_resume(tmp_path):
    from spti.stages import open_run

    data = image_folder(tmp_path / "d")
    cfg = _cfg(tmp_path, data, labels_from_subfolders=True)
    run_dir = open_run(cfg, "run")
    try:
        ingested = ingest_stage(run_dir, cfg)
        ls = private_labels(cfg, ingested)
    finally:
        run_dir.close()
    assert ls is not None and ls.names == ["blue", "green", "purple", "red"]
    assert ls.descriptions == ["blue", "green", "a purple square", "a red square"]
    assert ls.index.tolist() == [0, 1, 1, 3, 3, 3]
    # resume: the ingestion is read back from private/ingest.jsonl, labels included
    run_dir = open_run(cfg, "run")
    try:
        again = private_labels(cfg, ingest_stage(run_dir, cfg))
    finally:
        run_dir.close()
    assert again is not None and again.names == ls.names and again.index.tolist() == ls.index.tolist()
    # an unlabelled run gets no label set
    assert private_labels(Config.from_dict({"data": {"private": str(data)}}), ingested) is None


def test_private_labels_refuses_an_unlabelled_ingestion(tmp_path):
    data = image_folder(tmp_path / "d")
    unlabelled = ingest(data, progress=False, workers=1)
    with pytest.raises(InputError, match="some ingested images have no label"):
        private_labels(_cfg(tmp_path, data, labels_from_subfolders=True), unlabelled)
