"""``spti demo``: the whole pipeline offline, on CPU, with real data and the bundled weights.

Private set: Fashion-MNIST *test* images (Debian package ``dataset-fashion-mnist``); the labels are never
shown to the pipeline (they are only used afterwards to print how well the release's class mix follows the
private one). Public pool: Fashion-MNIST *train* images. Captioner: EfficientNet-Lite0 labels; LLM:
SmolLM2-135M-Instruct (GGUF, llama.cpp); embedder: all-MiniLM-L6-v2; renderer: retrieval over the pool.
"""

from __future__ import annotations

import gzip
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
                voting: str, seed: int, progress: bool, examples: list[str] | None = None) -> dict:
    out = Path(out)
    return {
        "out": str(out),
        "seed": seed,
        "progress": progress,
        "data": {"private": str(out / "private" / "fashion-mnist-test"), "public_pool": str(out / "cache" / "fashion-mnist-train")},
        "privacy": {"epsilon": epsilon},
        "generation": {
            "domain": "a product photo of a single clothing item or accessory (a shirt, trouser, dress, coat, shoe, sandal, sneaker or bag) on a plain background",
            "examples": list(examples or []),
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


#: ``voting``: image voting by default. The demo's tag captioner (EfficientNet-Lite0 labels) keeps too
#: little of each image for text voting to follow the private class mix, and with the retrieval renderer
#: rendering a candidate is only a lookup (docs/QUALITY.md, benchmarks/bench_quality.py).
DEFAULTS = {"num_private": 1000, "pool_size": 1000, "population": 40, "iterations": 2, "variations": 2,
            "voting": "image"}


def run_demo(out: str | Path = "runs/demo", *, num_private: int = DEFAULTS["num_private"],
             pool_size: int = DEFAULTS["pool_size"], population: int = DEFAULTS["population"],
             iterations: int = DEFAULTS["iterations"], variations: int = DEFAULTS["variations"], epsilon: float = 1.0,
             voting: str = DEFAULTS["voting"], seed: int = 0, progress: bool = True, num_examples: int = 64):
    """Run the offline demo; returns the :class:`~spti.data.run.RunDir`.

    ``num_examples`` public pool images are captioned up front and given to the LLM as few-shot examples
    of the caption style (public data: allowed; private captions never are)."""
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
    examples = _public_examples(train_x, pool_idx, num_examples, rng) if num_examples else []
    cfg = Config.from_dict(demo_config(out, population=population, iterations=iterations, variations=variations,
                                       epsilon=epsilon, voting=voting, seed=seed, progress=progress, examples=examples))
    # the folder is a run folder (and locked) before the images are written into it
    with RunDir.open(out, cfg, command="demo"):
        _write_pngs(test_x[priv_idx], Path(cfg.data.private))
        _write_pngs(train_x[pool_idx], Path(cfg.data.public_pool))
        logger.info("demo: %d private Fashion-MNIST test images, %d public train images in the pool", num_private, pool_size)
        run_dir = run(cfg, command="demo")
    _print_class_mix(run_dir, cfg, test_y[priv_idx], train_y[pool_idx])
    return run_dir


def _public_examples(train_x: np.ndarray, pool_idx: np.ndarray, k: int, rng: np.random.Generator) -> list[str]:
    """Captions of ``k`` random *public* pool images, as few-shot examples of the caption style."""
    from PIL import Image

    from spti.models.captioner import build_captioner

    cap = build_captioner({"backend": "efficientnet-lite0", "invert": True, "top_k": 3})
    pick = rng.choice(pool_idx, size=min(k, len(pool_idx)), replace=False)
    return sorted(set(cap.caption([Image.fromarray(train_x[i], mode="L").convert("RGB") for i in pick])))


def _tv(p: np.ndarray, labels: np.ndarray) -> float:
    q = np.bincount(labels, minlength=10) / max(len(labels), 1)
    return float(0.5 * np.abs(p - q).sum())


def _print_class_mix(run_dir, cfg, private_labels: np.ndarray, pool_labels: np.ndarray) -> None:
    """Use the labels the pipeline never saw: how close is the class mix of iteration 0 (no private data)
    and of the release to the private one? A retrieval render is a pool image, whose label we know. For
    scale: the error of an ideal sampler drawing as many images straight from the private mix."""
    from spti.data.io import read_jsonl
    from spti.stages.render import build_run_renderer

    renderer = build_run_renderer(run_dir, cfg, cfg.renderer)
    label_of = {name: int(pool_labels[int(Path(name).stem)]) for name in renderer.pool_files}

    def labels_for(texts: list[str]) -> np.ndarray:
        idx, _ = renderer.nearest(texts)
        return np.array([label_of[renderer.pool_files[i[0]]] for i in idx], dtype=np.int64)

    p = np.bincount(private_labels, minlength=10) / len(private_labels)
    init = [r["text"] for r in read_jsonl(run_dir.checkpoints / "iter_000" / "population.jsonl")]
    final = [r["text"] for r in read_jsonl(run_dir.release / "dp_captions.jsonl")]
    rel = labels_for(final)
    ideal = np.mean([_tv(p, np.random.default_rng(s).choice(10, size=len(final), p=p)) for s in range(500)])
    mix = {FASHION_CLASSES[k]: round(float(v), 3) for k, v in enumerate(np.bincount(rel, minlength=10) / len(rel))}
    print("class mix of the release (labels never seen by the pipeline):", mix)
    print(
        "total-variation distance to the private class mix: "
        f"iteration 0 (no private data) {_tv(p, labels_for(init)):.3f}, release {_tv(p, rel):.3f}; "
        f"an ideal sampler of {len(final)} private images: {ideal:.3f}"
    )
