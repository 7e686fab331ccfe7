"""`spti demo --conditional` (issue 12): the config, the ImageFolder writer, the disjoint real sets, the CLI
dispatch and the printout (fast), and the whole demo with the offline fakes at a tiny size (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spti import demo_conditional as dc
from spti.config import Config, labelled


def test_class_descriptions_are_the_ten_class_names():
    d = dc.class_descriptions()
    assert list(d) == dc.CLASS_FOLDERS and len(set(d)) == 10
    assert all("/" not in k and k == k.lower() for k in d)  # folder names
    assert d["sneaker"] == "a product photo of a sneaker" and d["t-shirt-top"] == "a product photo of a T-shirt or top"


def test_split_test_set_is_disjoint_and_sized():
    s = dc.split_test_set(100, 30, 20, 10, np.random.default_rng(0))
    assert (len(s.private), len(s.eval), len(s.ceiling)) == (30, 20, 10)
    allidx = np.concatenate([s.private, s.eval, s.ceiling])
    assert len(set(allidx.tolist())) == 60 and allidx.max() < 100
    assert all((np.diff(a) > 0).all() for a in (s.private, s.eval, s.ceiling))
    with pytest.raises(Exception, match="at most 100"):
        dc.split_test_set(100, 60, 30, 20, np.random.default_rng(0))
    with pytest.raises(Exception, match=">= 1"):
        dc.split_test_set(100, 10, 0, 10, np.random.default_rng(0))


def test_write_image_folder_is_an_imagefolder(tmp_path):
    from spti.metrics.labelled import read_labelled

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 7, 7, 9, 0, 0, 3])
    ids = np.array([5, 11, 12, 40, 41, 99, 1000])
    counts = dc.write_image_folder(images, labels, tmp_path / "f", ids)
    assert counts["t-shirt-top"] == 3 and counts["sneaker"] == 2 and counts["bag"] == 0 and sum(counts.values()) == 7
    assert (tmp_path / "f" / "sneaker" / "00011.png").is_file() and (tmp_path / "f" / "dress" / "01000.png").is_file()
    got = read_labelled(tmp_path / "f")
    assert sorted(got.labels) == sorted(dc.CLASS_FOLDERS[int(y)] for y in labels)
    before = (tmp_path / "f" / "sneaker" / "00011.png").stat().st_mtime_ns
    dc.write_image_folder(images, labels, tmp_path / "f", ids)  # a rerun keeps what is there
    assert (tmp_path / "f" / "sneaker" / "00011.png").stat().st_mtime_ns == before


def _cfg(tmp_path, **kw):
    args = dict(population=60, iterations=2, variations=2, epsilon=1.0, delta=1e-6, voting="image", seed=0,
                progress=False, images_per_caption=4, cnn=True)
    args.update(kw)
    return dc.conditional_config(tmp_path / "run", **args)


def test_conditional_config(tmp_path):
    d = _cfg(tmp_path, examples=["a photo of a jersey"])
    cfg = Config.from_dict(d)
    assert labelled(cfg) and cfg.data.labels_from_subfolders
    assert cfg.privacy.class_sizes == "dp" and cfg.privacy.epsilon == 1.0 and cfg.privacy.delta == 1e-6
    assert cfg.pe.voting == "image" and cfg.pe.population == 60 and cfg.render.images_per_caption == 4
    assert cfg.classes == dc.class_descriptions()
    assert cfg.release_renderer == {"backend": "retrieval", "top_k": 4}
    paths = dc.demo_paths(tmp_path / "run")
    assert cfg.evaluate.metrics == ["accuracy"] and cfg.evaluate.per_iteration
    assert cfg.evaluate.real_labelled == str(paths["eval"]) and cfg.evaluate.real_train == str(paths["ceiling"])
    assert Path(cfg.data.private) == paths["private"] and paths["private"].parent.name == "private"
    assert cfg.generation.examples == ["a photo of a jersey"]
    assert (cfg.llm, cfg.captioner["backend"], cfg.image_embedder["backend"]) == (
        {"backend": "llamacpp"}, "efficientnet-lite0", "efficientnet-lite0")
    # no CNN; model roles replaced (tests)
    d = _cfg(tmp_path, cnn=False, backends={"llm": {"backend": "support.fakes:ScriptedLLM"}})
    assert d["evaluate"]["metrics"] == ["accuracy-linear"] and d["llm"] == {"backend": "support.fakes:ScriptedLLM"}


def test_cli_dispatch(monkeypatch):
    from spti import cli

    seen: dict = {}
    monkeypatch.setattr(dc, "run_conditional_demo", lambda **kw: seen.update(kw) or (None, {}))
    assert cli.main(["demo", "--conditional", "--population", "30", "--no-cnn", "--no-progress"]) == 0
    assert seen["population"] == 30 and seen["cnn"] is False and seen["progress"] is False
    D = dc.CONDITIONAL_DEFAULTS
    assert (seen["num_private"], seen["pool_size"], seen["iterations"], seen["images_per_caption"], seen["voting"],
            seen["epsilon"], seen["num_eval"]) == (D["num_private"], D["pool_size"], D["iterations"],
                                                   D["images_per_caption"], "image", 1.0, D["num_eval"])
    # the plain demo still gets its own defaults
    import spti.demo as demo

    plain: dict = {}

    class _Run:
        release = Path("r")
        path = Path("p")

    monkeypatch.setattr(demo, "run_demo", lambda **kw: plain.update(kw) or _Run())
    assert cli.main(["demo", "--no-progress"]) == 0
    assert {k: plain[k] for k in ("num_private", "pool_size", "population", "iterations", "variations")} == {
        k: demo.DEFAULTS[k] for k in ("num_private", "pool_size", "population", "iterations", "variations")}


def _fake_run(root: Path) -> Path:
    root.mkdir()
    (root / "checkpoints").mkdir()
    names = ["bag", "coat", "dress"]
    metrics = {
        "metrics": {
            "accuracy-linear": {"value": 0.5, "n_synthetic": 40, "n_real_test": 30, "chance": {"uniform": 1 / 3},
                                "ceiling": {"value": 0.9, "n_train": 60}, "per_class": {"bag": 0.4}},
            "fd-efficientnet": {"value": 3.0},
        },
        "per_iteration": [{"iteration": 0, "accuracy-linear": 0.25}, {"iteration": 2, "accuracy-linear": 0.45}],
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "manifest.json").write_text(json.dumps({"classes": {"names": names, "sizes": [3, 5, 2], "class_sizes": "dp"}}))
    np.savez(root / "checkpoints" / "class_counts.npz", noisy_counts=np.array([31.5, 48.25, 20.0]), num_classes=3)
    return root


def test_summary_and_printout(tmp_path):
    run = _fake_run(tmp_path / "run")
    s = dc.demo_summary(run, {"bag": 30, "coat": 50, "dress": 20})
    a = s["accuracy"]["accuracy-linear"]
    assert (a["release"], a["iteration_0"], a["iteration_last"], a["ceiling"], a["chance"]) == (0.5, 0.25, 0.45, 0.9, 1 / 3)
    assert list(s["accuracy"]) == ["accuracy-linear"]
    assert s["classes"][1] == {"class": "coat", "dp_size": 5, "dp_count": 48.25, "private_count": 50}
    s["sizes"] = {"epsilon": 1.0, "delta": 1e-6, "num_private": 100, "population": 10, "iterations": 2,
                  "images_per_caption": 4}
    s["wall_seconds"] = 90
    text = dc.format_summary(s)
    assert "NOT DP" in text and "linear probe" in text and "ceiling" in text and "chance" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("linear probe"))
    assert line.split()[-5:] == ["50.0%", "25.0%", "45.0%", "90.0%", "33.3%"]
    assert "iter 2" in text and "1.5 min" in text
    coat = next(ln for ln in text.splitlines() if ln.strip().startswith("coat"))
    assert coat.split() == ["coat", "5", "48.2", "50"]


@pytest.mark.slow
def test_conditional_demo_with_fakes(tmp_path, capsys):
    """The whole demo on real Fashion-MNIST at a tiny size, with the offline fakes as models."""
    from spti.demo import find_fashion_mnist

    try:
        find_fashion_mnist()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    fakes = {"captioner": {"backend": "support.fakes:ColourCaptioner"}, "llm": {"backend": "support.fakes:ScriptedLLM"},
             "text_embedder": {"backend": "support.fakes:BowEmbedder"}}  # the real EfficientNet-Lite0 embeds images
    out = tmp_path / "demo"
    run_dir, s = dc.run_conditional_demo(out, num_private=80, num_eval=40, num_ceiling=40, pool_size=50,
                                         population=20, iterations=1, variations=1, images_per_caption=2,
                                         cnn=False, num_examples=0, backends=fakes, progress=False)
    text = capsys.readouterr().out
    assert "NOT DP" in text and "linear probe" in text
    a = s["accuracy"]["accuracy-linear"]
    assert 0 <= a["release"] <= 1 and a["iteration_0"] is not None and a["ceiling"] is not None
    assert 0.1 <= a["chance"] <= 0.2 and a["n_real_test"] == 40  # 1 / the classes among 40 test images and a["n_ceiling_train"] == 40
    assert sum(r["private_count"] for r in s["classes"]) == 80 and sum(r["dp_size"] for r in s["classes"]) == 20
    assert all(r["dp_count"] is not None for r in s["classes"])
    meta = [json.loads(x) for x in (out / "release" / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 40 and {m["label"] for m in meta} <= set(dc.CLASS_FOLDERS)
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["private"] is True and ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    # the three real sets are disjoint (file names are test-set indices)
    stems = {k: {p.stem for p in dc.demo_paths(out)[k].rglob("*.png")} for k in ("private", "eval", "ceiling")}
    assert len(stems["private"]) == 80 and not (stems["private"] & stems["eval"]) and not (stems["private"] & stems["ceiling"])
    assert not (stems["eval"] & stems["ceiling"])
