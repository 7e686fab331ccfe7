"""The accuracy metrics in a run (issue 12): the config's checks, the evaluate stage's arguments (the real
labelled set; the private images only on request), and the per-iteration rows (overall and per class)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from spti.config import Config
from spti.errors import ConfigError
from spti.stages.evaluate import PerIterationEvaluator, _curve_values, accuracy_options


def _cfg(tmp_path: Path, **evaluate) -> Config:
    return Config.from_dict({
        "data": {"private": str(tmp_path), "labels_from_subfolders": True},
        "privacy": {"epsilon": 1.0},
        "generation": {"domain": "a thing"},
        "evaluate": {"metrics": ["accuracy"], **evaluate},
    })


def test_config_accuracy_needs_labels_and_a_real_labelled_set(tmp_path):
    with pytest.raises(ConfigError, match="labelled run"):
        Config.from_dict({"data": {"private": "x"}, "privacy": {"epsilon": 1.0},
                          "evaluate": {"metrics": ["accuracy-linear"], "real_labelled": "y"}}).validate(need_private=False)
    with pytest.raises(ConfigError, match="evaluate.real_labelled"):
        _cfg(tmp_path).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        _cfg(tmp_path, real_labelled=str(tmp_path / "missing")).validate()
    _cfg(tmp_path, real_labelled=str(tmp_path / "missing")).validate(need_private=False)  # e.g. a report elsewhere
    _cfg(tmp_path, real_labelled=str(tmp_path)).validate()
    _cfg(tmp_path, accuracy_on_private=True).validate()


def test_curve_values_include_each_class():
    row = _curve_values({
        "accuracy-linear": {"value": 0.5, "per_class": {"cat": 0.25, "dog": 0.75, "eel": None}},
        "fid": {"value": 12.0},
    })
    assert row == {"accuracy-linear": 0.5, "accuracy-linear.per_class.cat": 0.25,
                   "accuracy-linear.per_class.dog": 0.75, "fid": 12.0}


def _records(tmp_path: Path, labels: list[str]) -> SimpleNamespace:
    from spti.hashing import sha256_file

    recs = []
    for i, lb in enumerate(labels):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.full((8, 8, 3), 40 * i % 255, dtype=np.uint8)).save(p)
        recs.append(SimpleNamespace(path=p, sha256=sha256_file(p), id=f"img-{i:06d}", label=lb))
    return SimpleNamespace(records=recs)


def test_the_private_images_are_the_test_set_only_with_accuracy_on_private(tmp_path):
    ingested = _records(tmp_path, ["b", "a", "b", "a"])
    assert accuracy_options(_cfg(tmp_path, real_labelled=str(tmp_path)), ingested)["real_labelled"] == str(tmp_path)
    opts = accuracy_options(_cfg(tmp_path, accuracy_on_private=True), ingested)
    lab = opts["real_labelled"]
    assert lab.run_private and opts["accuracy_on_private"] is True and lab.labels == ["b", "a", "b", "a"]
    assert accuracy_options(Config(), ingested) == {}  # no accuracy metric: evaluate() is called as before


def test_per_iteration_accuracy_args_name_the_population_classes(tmp_path):
    real = tmp_path / "real"
    for c in ("a", "b"):
        (real / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 0, 0) if c == "a" else (0, 0, 200)).save(real / c / "x.png")
    cfg = _cfg(tmp_path, real_labelled=str(real), per_iteration=True)
    ev = PerIterationEvaluator(SimpleNamespace(path=tmp_path), cfg, None, _records(tmp_path, ["b", "a"]))
    rec = SimpleNamespace(iteration=1, population=["x", "y", "z"], labels=np.array([1, 0, 1]))
    args = ev._accuracy_args(rec)
    assert args["synthetic_labels"] == ["b", "a", "b"]  # class index -> name (sorted label set)
    assert args["accuracy_ceiling"] is False and args["real_labelled"].counts() == {"a": 1, "b": 1}
    assert ev._accuracy_args(rec)["real_labelled"] is args["real_labelled"]  # read once
    no_labels = SimpleNamespace(iteration=2, population=["x"], labels=None)
    assert ev._accuracy_args(no_labels)["synthetic_labels"] is None


def test_labelled_run_reports_accuracy_at_the_end_and_per_iteration(tmp_path, monkeypatch):
    """A labelled image-voting run with the deterministic fakes: metrics.json holds the release's accuracy
    (with its ceiling) and a per-iteration curve overall and per class; the report draws the section."""
    import json

    import spti.stages.evaluate as se
    from spti.pipeline import run

    # evaluate in the run's own (fake) image-embedder space
    monkeypatch.setitem(se._SPACE_OF_BACKEND, "support.fakes:MeanColourEmbedder", "efficientnet")
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    rng = np.random.default_rng(0)
    for name, n in (("private", 6), ("test", 4)):
        for c, rgb in colours.items():
            (tmp_path / name / c).mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(rgb) + rng.integers(-12, 13, size=(16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / name / c / f"{i}.png")
    run({
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(tmp_path / "private"), "labels_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": 7, "class_sizes": "uniform"},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 9, "variations": 2, "voting": "image"},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
        "evaluate": {"metrics": ["accuracy-linear"], "per_iteration": True, "real_labelled": str(tmp_path / "test")},
    })
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    e = m["metrics"]["accuracy-linear"]
    assert 0 <= e["value"] <= 1 and e["ceiling"]["value"] == 1.0 and e["n_real_test"] == 6
    assert e["differentially_private"] is False and e["computed_against_private_data"] is False
    assert [r["iteration"] for r in m["per_iteration"]] == [0, 1, 2]
    assert all({"accuracy-linear", "accuracy-linear.per_class.red"} <= set(r) for r in m["per_iteration"])
    doc = (tmp_path / "run" / "report.html").read_text()
    assert '<section id="accuracy">' in doc and 'class="confusion"' in doc
    assert str(tmp_path / "test") not in doc  # the real labelled set's path is redacted
