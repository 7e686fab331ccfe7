"""``spti demo``: the whole pipeline offline, on CPU, with real data and the bundled weights.

Private set: Fashion-MNIST *test* images (Debian package ``dataset-fashion-mnist``); the labels are never
shown to the pipeline (they are only used afterwards to print how well the release's class mix follows the
private one). Public pool: Fashion-MNIST *train* images. Captioner: EfficientNet-Lite0 labels; LLM:
SmolLM2-135M-Instruct (GGUF, llama.cpp); embedder: all-MiniLM-L6-v2; renderer: retrieval over the pool.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np

from spti.errors import InputError
from spti.log import logger

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_SEARCH = [Path("/usr/share/fashion-mnist"), Path("/usr/share/dataset-fashion-mnist"), Path("/usr/share/data/fashion-mnist")]


def find_fashion_mnist() -> dict[str, Path]:
    """Locate the gzipped IDX files of Debian's ``dataset-fashion-mnist`` (or $SPTI_FASHION_MNIST)."""
    import os
    import subprocess

    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    candidates: list[Path] = []
    if os.environ.get("SPTI_FASHION_MNIST"):
        candidates.append(Path(os.environ["SPTI_FASHION_MNIST"]))
    candidates += _SEARCH
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=20).stdout
        candidates += sorted({Path(line).parent for line in out.splitlines() if line.endswith("-ubyte.gz")})
    except (OSError, subprocess.SubprocessError):
        pass
    for d in candidates:
        if all((d / n).is_file() for n in names.values()):
            return {k: d / n for k, n in names.items()}
    raise InputError(
        "Fashion-MNIST not found: install Debian's package (apt-get install dataset-fashion-mnist) or set "
        "SPTI_FASHION_MNIST to a folder with the four *-ubyte.gz files"
    )


def load_idx(path: Path, labels: bool = False) -> np.ndarray:
    data = gzip.open(path).read()
    if labels:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


def _write_pngs(images: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        p = folder / f"{i:05d}.png"
        if not p.exists():
            Image.fromarray(a, mode="L").save(p)


def demo_config(out: str | Path, *, population: int, iterations: int, variations: int, epsilon: float,
                voting: str, seed: int, progress: bool) -> dict:
    out = Path(out)
    return {
        "out": str(out),
        "seed": seed,
        "progress": progress,
        "data": {"private": str(out / "private" / "fashion-mnist-test"), "public_pool": str(out / "cache" / "fashion-mnist-train")},
        "privacy": {"epsilon": epsilon},
        "generation": {
            "domain": "a product photo of a single clothing item or accessory (a shirt, trouser, dress, coat, shoe, sandal, sneaker or bag) on a plain background",
            "variation_mode": "fill_in",
            "temperature": 0.7,
            "max_new_tokens": 40,
            "min_length": 4,
            "max_length": 20,
            "length_std": 2.0,
        },
        "pe": {"iterations": iterations, "population": population, "variations": variations, "voting": voting},
        "captioner": {"backend": "efficientnet-lite0", "invert": True, "top_k": 3},
        "llm": {"backend": "llamacpp"},
        "text_embedder": {"backend": "sentence-transformers"},
        "renderer": {"backend": "retrieval"},
        "image_embedder": {"backend": "efficientnet-lite0", "invert": True},
        "evaluate": {"metrics": ["fd-efficientnet", "prdc", "memorization"]},
    }


def run_demo(out: str | Path = "runs/demo", *, num_private: int = 2000, pool_size: int = 2000, population: int = 60,
             iterations: int = 3, variations: int = 2, epsilon: float = 1.0, voting: str = "text", seed: int = 0,
             progress: bool = True):
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.pipeline import run

    files = find_fashion_mnist()
    rng = np.random.default_rng(seed)
    test_x, test_y = load_idx(files["test_images"]), load_idx(files["test_labels"], labels=True)
    train_x, train_y = load_idx(files["train_images"]), load_idx(files["train_labels"], labels=True)
    if not (1 <= num_private <= len(test_x)) or not (1 <= pool_size <= len(train_x)):
        raise InputError(f"--num-private must be in [1, {len(test_x)}] and --pool-size in [1, {len(train_x)}]")
    priv_idx = np.sort(rng.choice(len(test_x), num_private, replace=False))
    pool_idx = np.sort(rng.choice(len(train_x), pool_size, replace=False))
    cfg = Config.from_dict(demo_config(out, population=population, iterations=iterations, variations=variations,
                                       epsilon=epsilon, voting=voting, seed=seed, progress=progress))
    rd = RunDir.open(out, cfg, command="demo")
    _write_pngs(test_x[priv_idx], Path(cfg.data.private))
    _write_pngs(train_x[pool_idx], Path(cfg.data.public_pool))
    logger.info("demo: %d private Fashion-MNIST test images, %d public train images in the pool", num_private, pool_size)
    rd = run(cfg, command="demo")
    _print_class_mix(rd, test_y[priv_idx], train_y[pool_idx])
    return rd


def _print_class_mix(rd, private_labels: np.ndarray, pool_labels: np.ndarray) -> None:
    """The labels the pipeline never saw: how close is the release's class mix to the private one?
    (A retrieval render is a pool image, whose label we know.)"""
    import hashlib

    from spti.data.io import read_jsonl

    meta = rd.release / "metadata.jsonl"
    pool_dir = Path(rd.load_config().data.public_pool)
    if not meta.is_file():
        return
    by_hash = {}
    for i, p in enumerate(sorted(pool_dir.glob("*.png"))):
        from PIL import Image

        with Image.open(p) as im:
            by_hash[hashlib.sha256(np.asarray(im.convert("L")).tobytes()).hexdigest()] = int(pool_labels[i])
    rel = []
    for r in read_jsonl(meta):
        from PIL import Image

        with Image.open(rd.release / r["file_name"]) as im:
            lab = by_hash.get(hashlib.sha256(np.asarray(im.convert("L")).tobytes()).hexdigest())
        if lab is not None:
            rel.append(lab)
    if not rel:
        return
    p = np.bincount(private_labels, minlength=10) / len(private_labels)
    q = np.bincount(rel, minlength=10) / len(rel)
    tv = 0.5 * np.abs(p - q).sum()
    mix = Counter({FASHION_CLASSES[k]: round(float(q[k]), 3) for k in range(10)})
    print("class mix of the release (labels never seen by the pipeline):", dict(mix))
    print(f"total-variation distance to the private class mix: {tv:.3f} (uniform guess: {0.5 * np.abs(p - 0.1).sum():.3f})")
