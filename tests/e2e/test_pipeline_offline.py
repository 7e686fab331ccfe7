"""`spti run` end to end on the offline stack (real Fashion-MNIST, EfficientNet-Lite0 captioner, SmolLM2,
MiniLM, retrieval renderer), with crashes between stages and inside the evolve stage, and image voting with a
tiny random Stable Diffusion pipeline in the loop."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.config import Config
from spti.data.io import load_npz
from spti.pe.engine import _Stopped
from spti.pipeline import _StoppedStage, run

pytestmark = pytest.mark.slow


def _fashion(n_private: int, n_pool: int, root: Path) -> tuple[Path, Path]:
    from spti.demo import find_fashion_mnist, load_idx

    try:
        files = find_fashion_mnist()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    test_x = load_idx(files["test_images"])
    train_x = load_idx(files["train_images"])
    priv, pool = root / "private", root / "pool"
    priv.mkdir(parents=True)
    pool.mkdir(parents=True)
    for i in range(n_private):  # distinctive private names: they must never reach the release
        Image.fromarray(test_x[i], mode="L").save(priv / f"patient-{i:04d}-secret.png")
    for i in range(n_pool):
        Image.fromarray(train_x[i], mode="L").save(pool / f"pub{i:04d}.png")
    return priv, pool


def _cfg(out, priv, pool, **over) -> Config:
    d = {
        "out": str(out),
        "seed": 0,
        "progress": False,
        "data": {"private": str(priv), "public_pool": str(pool)},
        "privacy": {"epsilon": 1.0, "insecure_noise_seed": 11},
        "generation": {"domain": "a product photo of a clothing item on a plain background", "max_new_tokens": 32,
                       "temperature": 0.7, "min_length": 4, "max_length": 16},
        "pe": {"iterations": 2, "population": 20, "variations": 2},
        "captioner": {"backend": "efficientnet-lite0", "invert": True},
        "llm": {"backend": "llamacpp"},
        "text_embedder": {"backend": "sentence-transformers"},
        "renderer": {"backend": "retrieval"},
        "image_embedder": {"backend": "efficientnet-lite0", "invert": True},
        "evaluate": {"metrics": ["fd-efficientnet", "prdc", "memorization"]},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return Config.from_dict(d)


def _pixels_hash(p: Path) -> str:
    with Image.open(p) as im:
        return hashlib.sha256(np.asarray(im.convert("L")).tobytes()).hexdigest()


def test_run_offline_text_voting_with_crashes_and_resume(tmp_path):
    pytest.importorskip("llama_cpp")
    priv, pool = _fashion(200, 200, tmp_path / "data")
    out = tmp_path / "run"
    cfg = _cfg(out, priv, pool)
    with pytest.raises(_StoppedStage):  # crash between ingest and caption
        run(cfg, stop_before="caption")
    with pytest.raises(_Stopped):  # crash inside evolve, after iteration 1
        run(cfg, stop_after=1)
    h1 = (out / "checkpoints" / "iter_001" / "noisy_histogram.npz").read_bytes()
    run_dir = run(cfg)  # resume to the end
    assert (out / "checkpoints" / "iter_001" / "noisy_histogram.npz").read_bytes() == h1  # noise not redrawn

    rel = run_dir.release
    meta = [json.loads(x) for x in (rel / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 20 and all((rel / m["file_name"]).is_file() for m in meta)
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["mechanisms"][0]["count"] == 2 and ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert json.loads((rel / "privacy.json").read_text())["spent"] == ledger["spent"]
    assert any(p["name"] == "captioning" for p in ledger["processing"])  # kept across the resumes
    assert ledger["trust_assumptions"] == []  # a local captioner: nothing left the machine

    # nothing private in the release or the logs: no private file name, caption or image
    captions = [json.loads(x)["text"] for f in sorted((out / "private" / "captions").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(captions) == 200
    public_text = "\n".join(p.read_text(errors="ignore") for p in rel.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))
    public_text += (out / "spti.log").read_text()
    assert "patient-" not in public_text and "-secret.png" not in public_text
    assert not any(c in public_text for c in set(captions) if len(c) > 25)
    private_hashes = {_pixels_hash(p) for p in priv.glob("*.png")}
    assert not private_hashes & {_pixels_hash(rel / m["file_name"]) for m in meta}
    assert "private" not in {p.name for p in rel.iterdir()}

    # metrics and report
    metrics = json.loads((out / "metrics.json").read_text())
    assert "not differentially private" in json.dumps(metrics).lower() or "differentially_private" in json.dumps(metrics)
    assert (out / "report.html").is_file()

    # spti evaluate / spti report on the run's output, from the command line
    from spti.cli import main

    assert main(["evaluate", "--real", str(priv), "--synthetic", str(rel), "--metrics", "fd-efficientnet,memorization",
                 "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["metrics"]["fd-efficientnet"]["value"] > 0 and m["metrics"]["memorization"]["differentially_private"] is False
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "not differentially private" in html.lower() and "patient-" not in html

    # the release loads as a Hugging Face ImageFolder
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(rel), split="train")
    assert len(ds) == 20 and set(ds.column_names) >= {"image", "text"}


def test_image_voting_with_tiny_sd_reuses_renders(tmp_path):
    """SPTI image voting: candidates rendered by a tiny random SD pipeline, embedded by EfficientNet-Lite0;
    the release reuses the loop's renders (no extra text-to-image call)."""
    from support.tiny_diffusers import make_tiny_sd

    priv, pool = _fashion(60, 0, tmp_path / "data")
    model = make_tiny_sd(tmp_path / "tiny-sd")
    out = tmp_path / "run"
    cfg = _cfg(
        out, priv, pool,
        pe={"iterations": 2, "population": 6, "variations": 2, "voting": "image"},
        llm={"backend": "support.fakes:ScriptedLLM"},
        generation={"variation_mode": "rephrase", "domain": "a toy scene"},
        renderer={"backend": "diffusers", "model": str(model), "num_inference_steps": 2, "height": 64, "width": 64},
        evaluate={"metrics": ["fd-efficientnet", "prdc"], "per_iteration": True},
    )
    cfg.captioner = {"backend": "this.does.not:Exist"}  # image voting never captions private images
    run_dir = run(cfg)
    stats = json.loads((out / "stats.json").read_text())
    calls = stats["renderer_calls"]
    # iteration 1 renders the 6 initial parents and 12 variations; iteration 2 only the new variations
    distinct = set()
    for t in (1, 2):
        distinct |= {json.loads(x)["text"] for x in (out / "checkpoints" / f"iter_{t:03d}" / "candidates.jsonl").read_text().splitlines()}
    assert calls["evolve"] == len(distinct)
    # the release reuses the loop's renders; only a caption selected twice (sample selection) needs a render
    # with a fresh seed for its second copy
    final = [json.loads(x)["text"] for x in (out / "release" / "dp_captions.jsonl").read_text().splitlines()]
    assert calls["release"] == len(final) - len(set(final))
    meta = [json.loads(x) for x in (run_dir.release / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 6
    assert not (out / "private" / "captions").exists()
    feats = list((out / "private").glob("image_features-*.npy"))
    assert len(feats) == 1 and np.load(feats[0]).shape == (60, 1280)
    # per-iteration curve from the loop's own renders (no extra renderer call: counted above)
    per = json.loads((out / "metrics.json").read_text())["per_iteration"]
    assert [r["iteration"] for r in per] == [0, 1, 2]
    assert all(np.isfinite(r["fd-efficientnet"]) for r in per)
    pop2 = [json.loads(x) for x in (out / "checkpoints" / "iter_002" / "population.jsonl").read_text().splitlines()]
    imgs2 = [json.loads(x) for x in (out / "checkpoints" / "iter_002" / "population_images.jsonl").read_text().splitlines()]
    assert [r["text"] for r in imgs2] == [r["text"] for r in pop2] and all("image" not in r for r in pop2)
    assert all((out / r["image"]).is_file() and r["image"].startswith("cache/renders/") for r in imgs2)
    assert "Iteration 2" in (out / "report.html").read_text()
    h = load_npz(out / "checkpoints" / "iter_002" / "noisy_histogram.npz")["noisy_counts"]
    assert h.shape[0] == len([1 for _ in (out / "checkpoints" / "iter_002" / "candidates.jsonl").read_text().splitlines()])
