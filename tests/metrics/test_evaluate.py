"""evaluate() end to end on small folders, with fake embedders plugged in as "module:Class"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.errors import BackendError, ConfigError, InputError
from spti.metrics.evaluate import NOT_DP, evaluate
from spti.models.image_embedder import ImageEmbedder

N_REAL, N_SYN = 24, 20


class FakeEmbedder(ImageEmbedder):
    """12-d features: the mean colour of each 2x2 quadrant of the image (deterministic, content-based)."""

    calls = 0  # images embedded, across instances (to check the cache)
    closed = 0

    def __init__(self, tag: str = "fake", **kwargs):
        self.tag = tag

    def info(self):
        return {
            "backend": "fake",
            "tag": self.tag,
            "weights_sha256": "ab" * 32,
            "resolution": 299,
        }

    @property
    def dim(self) -> int:
        return 12

    def embed(self, images):
        FakeEmbedder.calls += len(images)
        out = []
        for im in images:
            assert im.mode == "RGB"
            a = np.asarray(im.resize((2, 2), Image.BILINEAR), dtype=np.float32) / 255.0
            out.append(a.reshape(-1))
        return np.stack(out)

    def close(self):
        FakeEmbedder.closed += 1


class FakeClip(FakeEmbedder):
    """Adds embed_text in the same 12-d space: captions "red"/"blue" map to those colours."""

    def embed_text(self, texts):
        col = {"red": [1.0, 0.0, 0.0], "blue": [0.0, 0.0, 1.0]}
        return np.stack([np.tile(col[t], 4) for t in texts]).astype(np.float32)


FAKE = f"{__name__}:FakeEmbedder"
FAKE_CLIP = f"{__name__}:FakeClip"


def _noise_image(rng, color_bias=None, size=16) -> Image.Image:
    a = rng.integers(0, 256, size=(size, size, 3)).astype(np.float32)
    if color_bias is not None:
        a = 0.5 * a + 0.5 * np.array(color_bias, dtype=np.float32)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.fixture()
def folders(tmp_path: Path):
    rng = np.random.default_rng(0)
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    reals = []
    for i in range(N_REAL):
        im = _noise_image(rng)
        reals.append(im)
        im.save(real / ("sub" if i % 2 else "") / f"r{i:02d}.png")
    (real / "notes.txt").write_text("not an image")
    release = tmp_path / "run" / "release"
    (release / "images").mkdir(parents=True)
    rows = []
    for i in range(N_SYN):
        color = "red" if i % 2 == 0 else "blue"
        im = _noise_image(rng, [255, 0, 0] if color == "red" else [0, 0, 255])
        if i == 7:  # planted copy of a private image
            im = reals[3]
            color = "red"
        im.save(release / "images" / f"{i:05d}.png")
        rows.append({"file_name": f"images/{i:05d}.png", "text": color})
    (release / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return real, release, reals


def _assert_not_dp(entry):
    assert entry["differentially_private"] is False
    assert "do not publish" in entry["note"] or "not differentially private" in entry["note"]


def test_evaluate_writes_metrics_json_with_not_dp_marks(folders, tmp_path):
    real, release, _ = folders
    out = tmp_path / "run"
    # out= is the result alone: an older file there is replaced, never merged into (one writer per file).
    (out / "metrics.json").write_text(json.dumps({"per_iteration": [{"iteration": 1, "fid": 3.0}]}))
    FakeEmbedder.calls = FakeEmbedder.closed = 0
    res = evaluate(
        real,
        release,
        metrics=("fid", "fd-efficientnet", "prdc", "memorization", "clip-score"),
        embedders={
            "inception": FAKE,
            "efficientnet": {"backend": FAKE, "tag": "effnet"},
            "clip": FAKE_CLIP,
        },
        out=out,
        batch_size=5,
    )
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk["metrics"].keys() == res["metrics"].keys()
    assert "per_iteration" not in on_disk and on_disk == json.loads(json.dumps(res))
    assert on_disk["differentially_private"] is False and on_disk["note"] == NOT_DP["note"]
    assert set(res["metrics"]) == {"fid", "fd-efficientnet", "prdc", "memorization", "clip-score"}
    for name in ("fid", "fd-efficientnet", "prdc", "memorization"):
        _assert_not_dp(on_disk["metrics"][name])
        assert on_disk["metrics"][name]["n_real"] == N_REAL
        assert on_disk["metrics"][name]["n_synthetic"] == N_SYN
    assert on_disk["metrics"]["clip-score"]["computed_against_private_data"] is False

    fid = on_disk["metrics"]["fid"]
    assert fid["implementation"] == "spti/clean-fid-protocol" and fid["mode"] == "clean"
    assert fid["weights_sha256"] == "ab" * 32 and fid["resolution"] == 299
    assert fid["value"] > 0.1  # coloured synthetic images vs grey noise: clearly different
    assert on_disk["metrics"]["fd-efficientnet"]["embedder"]["tag"] == "effnet"
    assert on_disk["metrics"]["prdc"]["feature_space"] == "inception"
    assert 0 <= on_disk["metrics"]["prdc"]["precision"] <= 1

    mem = on_disk["metrics"]["memorization"]
    assert mem["flagged"] == [7]
    assert mem["flagged_files"] == ["images/00007.png"]
    top = mem["closest_pairs"][0]
    assert top["synthetic"] == 7 and top["private_file"].endswith("r03.png") and top["distance"] < 1e-6
    # Captions match the colours: a clearly positive CLIP score.
    assert on_disk["metrics"]["clip-score"]["value"] > 40
    assert res["real"]["n_images"] == N_REAL and res["synthetic"]["n_images"] == N_SYN
    assert FakeEmbedder.closed == 3  # every embedder evaluate() built was closed


def test_identical_sets_and_feature_cache(folders, tmp_path):
    real, _, reals = folders
    cache = tmp_path / "cache"
    FakeEmbedder.calls = 0
    r1 = evaluate(real, real, metrics=("fid",), embedders={"inception": FAKE}, cache_dir=cache)
    assert r1["metrics"]["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert FakeEmbedder.calls == N_REAL  # same files, same sha256: the second set came from the cache
    from spti.data.cache import FeatureCache

    (space,) = [d.name for d in cache.iterdir()]  # one FeatureCache namespace per embedder cache_key
    assert space.startswith("image-features-") and len(FeatureCache(cache, space)) == N_REAL
    # In-memory PIL images with the same pixels, new process state: no new embeddings needed for files;
    # a list of images is hashed by pixels, so it is embedded once, then cached too.
    r2 = evaluate(reals, real, metrics=("fid",), embedders={"inception": FAKE}, cache_dir=cache)
    assert r2["metrics"]["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert FakeEmbedder.calls == 2 * N_REAL
    evaluate(reals, real, metrics=("fid",), embedders={"inception": FAKE}, cache_dir=cache)
    assert FakeEmbedder.calls == 2 * N_REAL


def test_max_images_and_in_memory_lists():
    rng = np.random.default_rng(1)
    a = [_noise_image(rng) for _ in range(30)]
    b = [_noise_image(rng) for _ in range(30)]
    res = evaluate(a, b, metrics=("prdc",), embedders={"inception": FAKE}, max_images=12)
    assert res["metrics"]["prdc"]["n_real"] == 12 and res["metrics"]["prdc"]["n_synthetic"] == 12
    assert res["real"]["source"] == "<30 in-memory images>"


def test_unavailable_model_falls_back_or_is_reported(folders):
    real, release, _ = folders
    broken = {"inception": "no_such_module_xyz:Nope", "efficientnet": FAKE}
    res = evaluate(real, release, metrics=("fid", "prdc"), embedders=broken)
    assert "fid" in res["errors"] and "fid" not in res["metrics"]
    assert res["metrics"]["prdc"]["feature_space"] == "efficientnet"
    with pytest.raises(BackendError, match="inception"):
        evaluate(real, release, metrics=("fid",), embedders=broken, strict=True)


def test_clip_score_skipped_without_clip_model(folders):
    real, release, _ = folders
    res = evaluate(real, release, metrics=("clip-score",), embedders={"inception": FAKE})
    assert "clip-score" in res["skipped"] and not res["metrics"]


def test_bad_arguments(folders, tmp_path):
    real, release, _ = folders
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(real, release, metrics=("fidd",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no usable image"):
        evaluate(tmp_path / "empty", release, metrics=("fid",), embedders={"inception": FAKE})
    with pytest.raises(InputError, match="no image files"):
        evaluate(real, tmp_path / "empty", metrics=("fid",), embedders={"inception": FAKE})
    with pytest.raises(ConfigError, match="prdc_space"):
        evaluate(real, release, metrics=("prdc",), prdc_space="nope")


def test_unreadable_images_are_counted_not_fatal(folders, tmp_path, caplog):
    real, release, _ = folders
    (real / "secret-name.png").write_bytes(b"\x89PNG garbage")  # skipped by ingestion (as is notes.txt)
    syn = tmp_path / "syn"
    syn.mkdir()
    for p in sorted((release / "images").iterdir())[:10]:
        (syn / p.name).write_bytes(p.read_bytes())
    (syn / "zz-broken.png").write_bytes(b"\x89PNG garbage")  # skipped while embedding
    with caplog.at_level("INFO", logger="spti"):
        res = evaluate(real, syn, metrics=("fid",), embedders={"inception": FAKE})
    assert res["real"]["ingest"]["skipped"] == 2 and res["real"]["n_images"] == N_REAL
    assert res["synthetic"]["n_images"] == 11 and res["synthetic"]["n_unreadable"] == 1
    assert res["metrics"]["fid"]["n_real"] == N_REAL and res["metrics"]["fid"]["n_synthetic"] == 10
    assert "secret-name" not in caplog.text  # private file names never reach the log


def test_ingest_records_are_accepted(folders):
    from spti.data.images import ingest

    real, release, _ = folders
    records = ingest(real, progress=False)
    res = evaluate(records, release, metrics=("memorization",), embedders={"inception": FAKE})
    mem = res["metrics"]["memorization"]
    assert mem["flagged"] == [7] and mem["closest_pairs"][0]["private_file"].endswith("r03.png")
