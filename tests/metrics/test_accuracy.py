"""The accuracy metrics (issue 12, requirement 5): the classifiers on toy sets whose answer is known, the
scoring (chance, per class, one-sided classes), the labelled readers and the split, and evaluate() /
``spti evaluate`` end to end on tiny folders with a fake embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.metrics.accuracy import expand_accuracy, fit_linear_probe, score, train_and_test
from spti.metrics.evaluate import evaluate
from spti.metrics.labelled import LabelledImages, read_labelled, stratified_halves
from spti.models.image_embedder import ImageEmbedder

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


class ColourEmbedder(ImageEmbedder):
    """3-d features: the mean colour (so that colour classes are linearly separable)."""

    def __init__(self, **kwargs):
        pass

    def info(self):
        return {"backend": "colour-mean"}

    @property
    def dim(self) -> int:
        return 3

    def embed(self, images):
        return np.stack([np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(axis=0) / 255.0 for im in images])


COLOUR = f"{__name__}:ColourEmbedder"


def _strs(a) -> list[str]:
    return [str(int(v)) for v in a]


# ------------------------------------------------------------------------------------------ linear probe


def test_linear_probe_perfectly_separable_features_give_100_percent():
    rng = np.random.default_rng(0)
    k, d = 5, 12

    def data(n):
        y = rng.integers(0, k, n)
        x = np.eye(k, d)[y] * 4.0 + rng.uniform(-0.5, 0.5, size=(n, d))  # margins never overlap
        return x, y

    x, y = data(300)
    tx, ty = data(500)
    r = train_and_test(fit_linear_probe, x, _strs(y), tx, _strs(ty))
    assert r["value"] == 1.0
    assert all(v == 1.0 for v in r["per_class"].values())
    cm = np.array(r["confusion"]["matrix"])
    assert (cm == np.diag(np.diag(cm))).all() and cm.sum() == 500


def test_linear_probe_trained_on_shuffled_labels_is_at_chance():
    """Class-structured features, training labels shuffled: averaged over 20 fixed shuffles the accuracy on
    correctly labelled test data is 1/4 (the spread of the mean is ~0.015; the tolerance is 4 of those)."""
    k = 4
    accs = []
    for s in range(20):
        rng = np.random.default_rng(s)

        def data(n, rng=rng):
            y = rng.integers(0, k, n)
            return np.eye(k, 16)[y] * 3.0 + rng.normal(size=(n, 16)), y

        x, y = data(400)
        tx, ty = data(1000)
        shuffled = np.random.default_rng(100 + s).permutation(y)
        r = train_and_test(fit_linear_probe, x, _strs(shuffled), tx, _strs(ty))
        accs.append(r["value"])
        assert r["chance"]["uniform"] == 0.25
    assert abs(np.mean(accs) - 0.25) < 0.06, accs
    # the same data with the true labels is far above chance: the features do carry the class
    assert train_and_test(fit_linear_probe, x, _strs(y), tx, _strs(ty))["value"] > 0.85


def test_linear_probe_is_deterministic():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 6)), rng.integers(0, 3, 80)
    a, b = fit_linear_probe(x, y, 3), fit_linear_probe(x, y, 3)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)


# ------------------------------------------------------------------------------------------ scoring


def test_score_chance_per_class_and_classes_on_one_side_only():
    y_true = ["a"] * 6 + ["b"] * 3 + ["c"] * 1  # c: only in the test set
    y_pred = ["a"] * 5 + ["b"] + ["b", "b", "d"] + ["a"]  # d: only in training
    r = score(y_true, y_pred, train_classes=["a", "b", "d"])
    assert r["value"] == pytest.approx(7 / 10)
    assert r["per_class"] == {"a": pytest.approx(5 / 6), "b": pytest.approx(2 / 3), "c": 0.0}
    assert r["n_test_per_class"] == {"a": 6, "b": 3, "c": 1}
    assert r["chance"] == {"uniform": pytest.approx(1 / 3), "majority": pytest.approx(0.6), "majority_class": "a"}
    assert r["classes_only_train"] == ["d"] and r["classes_only_test"] == ["c"]
    assert r["accuracy_shared_classes"] == pytest.approx(7 / 9)
    assert r["confusion"]["labels"] == ["a", "b", "c", "d"]
    cm = np.array(r["confusion"]["matrix"])
    assert cm[0].tolist() == [5, 1, 0, 0] and cm[2].tolist() == [1, 0, 0, 0] and cm[3].sum() == 0


def test_a_single_training_class_predicts_it():
    r = train_and_test(fit_linear_probe, np.zeros((3, 2)), ["x"] * 3, np.zeros((4, 2)), ["x", "x", "y", "y"])
    assert r["value"] == 0.5 and r["classes_only_test"] == ["y"]


def test_expand_accuracy():
    assert expand_accuracy(["fid", "accuracy", "accuracy-cnn"]) == ["fid", "accuracy-linear", "accuracy-cnn"]


# ------------------------------------------------------------------------------------------ CNN


def _squares(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A bright square (a quarter of the side) near a class-specific corner on dark noise: trivially
    separable by position."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 3, size, size)).astype(np.uint8)
    q = size // 4
    for i, c in enumerate(y):
        r0, c0 = [(1, 1), (1, size // 2 + 1), (size // 2 + 1, 1), (size // 2 + 1, size // 2 + 1)][c]
        dr, dc = rng.integers(0, q // 2 + 1, 2)
        x[i, :, r0 + dr : r0 + dr + q, c0 + dc : c0 + dc + q] = 230
    return x, y


def test_cnn_learns_square_positions_and_is_deterministic_on_cpu():
    pytest.importorskip("torch")
    from spti.metrics.accuracy import fit_cnn

    x, y = _squares(160, 0)
    tx, ty = _squares(200, 1)
    r = train_and_test(lambda a, b, k: fit_cnn(a, b, k, epochs=4, seed=0, device="cpu", threads=1), x, _strs(y), tx, _strs(ty))
    assert r["value"] >= 0.9, r["value"]
    m1 = fit_cnn(x[:32], y[:32], 4, epochs=1, seed=5, device="cpu", threads=1)
    m2 = fit_cnn(x[:32], y[:32], 4, epochs=1, seed=5, device="cpu", threads=1)
    assert np.array_equal(m1.predict(tx), m2.predict(tx))
    for a, b in zip(m1.model.state_dict().values(), m2.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------------------------------ readers


def _img(colour, seed, size=16) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-20, 21, size=(size, size, 3)), 0, 255)
    return Image.fromarray(a.astype(np.uint8))


def _image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    for k, (name, n) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _img(COLOURS[name], seed * 1000 + k * 100 + i).save(root / name / f"{i:03d}.png")
    return root


def _release(root: Path, per_class: dict[str, int], seed: int = 7, int_labels: bool = False) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, names = [], sorted(per_class)
    j = 0
    for name, n in per_class.items():
        for _ in range(n):
            fn = f"images/{j:05d}.png"
            _img(COLOURS[name], seed * 1000 + j).save(root / fn)
            rows.append({"file_name": fn, "text": f"a {name} thing",
                         "label": names.index(name) if int_labels else name})
            j += 1
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if int_labels:
        (root / "labels.json").write_text(json.dumps({"names": names, "descriptions": names}), encoding="utf-8")
    return root


def test_read_labelled_image_folder_metadata_and_label_names(tmp_path):
    f = _image_folder(tmp_path / "if", {"red": 3, "blue": 2})
    (f / "loose.png").write_bytes((f / "red" / "000.png").read_bytes())  # no class: left out
    s = read_labelled(f)
    assert s.counts() == {"blue": 2, "red": 3} and len(s.images) == 5

    r = _release(tmp_path / "rel", {"red": 2, "green": 2}, int_labels=True)
    s = read_labelled(r)
    assert s.labels == ["red", "red", "green", "green"]

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    _img(COLOURS["red"], 1).save(csv_dir / "a.png")
    _img(COLOURS["blue"], 2).save(csv_dir / "b.png")
    (csv_dir / "metadata.csv").write_text("file_name,label\na.png,3\nb.png,7\n", encoding="utf-8")
    assert read_labelled(csv_dir).labels == ["3", "7"]


def test_stratified_halves_are_deterministic_disjoint_and_per_class():
    labels = ["a"] * 7 + ["b"] * 4 + ["c"]
    tr, te = stratified_halves(labels, 0)
    assert (tr, te) == stratified_halves(labels, 0)
    assert sorted(tr + te) == list(range(12)) and not set(tr) & set(te)
    assert [labels[i] for i in tr].count("a") == 3 and [labels[i] for i in tr].count("b") == 2
    assert "c" not in [labels[i] for i in tr]  # a class of one image is only tested


# ------------------------------------------------------------------------------------------ evaluate()


@pytest.fixture()
def labelled_folders(tmp_path):
    real = _image_folder(tmp_path / "real", {"red": 8, "green": 6, "blue": 6})
    syn = _release(tmp_path / "release", {"red": 5, "green": 5, "blue": 4})
    return real, syn


def test_evaluate_accuracy_linear_and_cnn_with_ceiling_and_chance(labelled_folders, tmp_path):
    pytest.importorskip("torch")
    real, syn = labelled_folders
    res = evaluate(real, syn, metrics=["accuracy"], embedders={"colour": COLOUR}, accuracy_space="colour",
                   cnn={"epochs": 6, "resolution": 16, "threads": 1}, out=tmp_path / "m")
    lin, cnn = res["metrics"]["accuracy-linear"], res["metrics"]["accuracy-cnn"]
    assert lin["value"] == 1.0 and lin["ceiling"]["value"] == 1.0
    assert lin["feature_space"] == "colour" and lin["n_synthetic"] == 14
    assert lin["n_real_test"] == 10  # the test half (4 red, 3 green, 3 blue)
    assert lin["chance"]["uniform"] == pytest.approx(1 / 3) and lin["chance"]["majority"] == pytest.approx(0.4)
    assert lin["ceiling"]["n_train"] == 10 and "train half" in lin["ceiling"]["train_set"]
    assert cnn["value"] >= 0.9 and cnn["cnn"]["resolution"] == 16
    for e in (lin, cnn):
        assert e["differentially_private"] is False and e["computed_against_private_data"] is False
        assert set(e["per_class"]) == {"red", "green", "blue"}
    assert res["real_labelled"]["n_test"] == 10 and res["real"]["not_read"]
    on_disk = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert on_disk["metrics"]["accuracy-linear"]["confusion"]["labels"] == ["blue", "green", "red"]


def test_evaluate_accuracy_classes_on_one_side_and_a_separate_real_train(labelled_folders, tmp_path):
    real, _ = labelled_folders
    syn = _release(tmp_path / "rel2", {"red": 4, "green": 4})  # no blue
    train = _image_folder(tmp_path / "train", {"red": 3, "blue": 3}, seed=3)
    res = evaluate(real, syn, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour",
                   real_train=train)
    e = res["metrics"]["accuracy-linear"]
    assert e["classes_only_real"] == ["blue"] and e["classes_only_synthetic"] == []
    assert e["n_real_test"] == 20  # with real_train the whole real set is the test set
    assert e["per_class"]["blue"] == 0.0 and e["value"] == pytest.approx(14 / 20)
    assert e["accuracy_shared_classes"] == 1.0
    assert e["ceiling"]["per_class"]["green"] == 0.0  # the ceiling's training set has no green


def test_accuracy_never_uses_private_images_unless_asked(labelled_folders):
    real, syn = labelled_folders
    lab = read_labelled(real)
    private = LabelledImages(lab.images, lab.labels, run_private=True)
    # the run's private ingestion as `real` and no labelled set: skipped, with the reason
    recs = [type("R", (), {"path": p, "sha256": "0" * 64, "id": f"img-{i}"})() for i, p in enumerate(lab.images.items)]
    res = evaluate(recs, syn, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour")
    assert "accuracy-linear" not in res["metrics"] and "real_labelled" in res["skipped"]["accuracy-linear"]
    res = evaluate(None, syn, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour",
                   real_labelled=private)
    assert "accuracy_on_private" in res["skipped"]["accuracy-linear"]
    res = evaluate(None, syn, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour",
                   real_labelled=private, accuracy_on_private=True)
    e = res["metrics"]["accuracy-linear"]
    assert e["computed_against_private_data"] is True and e["differentially_private"] is False
    assert "PRIVATE" in e["note"]


def test_unlabelled_synthetic_images_skip_accuracy_and_labels_can_be_given(labelled_folders, tmp_path):
    real, _ = labelled_folders
    imgs = [_img(COLOURS[c], i) for i, c in enumerate(["red", "green", "blue"] * 3)]
    res = evaluate(real, imgs, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour")
    assert "no labels" in res["skipped"]["accuracy-linear"]
    res = evaluate(real, imgs, metrics=["accuracy-linear"], embedders={"colour": COLOUR}, accuracy_space="colour",
                   synthetic_labels=["red", "green", "blue"] * 3, accuracy_ceiling=False)
    e = res["metrics"]["accuracy-linear"]
    assert e["value"] == 1.0 and "ceiling" not in e and e["n_real_test"] == 10


def test_spti_evaluate_accuracy_end_to_end(labelled_folders, tmp_path, monkeypatch, capsys):
    import sys

    from spti.cli import main

    ev = sys.modules["spti.metrics.evaluate"]  # (the package's `evaluate` attribute is the function)

    real, syn = labelled_folders
    monkeypatch.setattr(ev, "FEATURE_SPACES", {**ev.FEATURE_SPACES, "inception": {"backend": COLOUR}})
    out = tmp_path / "cli"
    rc = main(["evaluate", "--real", str(real), "--synthetic", str(syn), "--metrics", "accuracy-linear",
               "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["metrics"]["accuracy-linear"]["value"] == 1.0
    assert res["metrics"]["accuracy-linear"]["feature_space"] == "inception"
    assert '"accuracy-linear"' in capsys.readouterr().out
