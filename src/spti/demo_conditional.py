"""``spti demo --conditional``: class-conditional SPTI offline on Fashion-MNIST, scored by downstream accuracy.

The DP image benchmarks judge labelled synthetic data first by the accuracy of a classifier trained on it and
tested on real images; this demo shows that number for spti at ε = 1, next to the real-data ceiling and chance.

Data (Debian's ``dataset-fashion-mnist``, located by :func:`spti.demo.find_fashion_mnist`):

* **private**: ``num_private`` Fashion-MNIST *test* images, written as an ImageFolder
  (``private/fashion-mnist-test/<class>/*.png``); the run reads the labels from the sub-folders.
* **held-out test set**: ``num_eval`` other test images (disjoint from the private ones), an ImageFolder given
  to the run as ``evaluate.real_labelled``: the classifiers are tested on it.
* **ceiling set**: ``num_ceiling`` further test images (disjoint from both; default as many as the private
  set), ``evaluate.real_train``: the same classifier trained on these real images is the ceiling, i.e.
  roughly what training on the private data directly would give. The private images themselves are never
  used by the metric.
* **public pool**: ``pool_size`` *train* images, the retrieval renderer's pool (a synthetic image is the pool
  image whose caption is nearest to a DP caption; its label is the class of the DP caption, never the pool
  image's own label, which the pipeline does not see).

The run: the ten class names as class descriptions ("a product photo of a sneaker"), DP class sizes
(``privacy.class_sizes: dp``, a share of the budget), image voting (the offline tag captioner keeps too little
of an image for text voting: docs/QUALITY.md), (ε, δ) = (1, 1e-6), the demo's offline stack
(EfficientNet-Lite0 captioner and image embedder, SmolLM2-135M through llama.cpp, all-MiniLM-L6-v2). Each DP
caption is rendered into ``images_per_caption`` pool images (its nearest ones: post-processing of the DP
caption), which is what the classifiers train on. The accuracy (linear probe on EfficientNet features; the
small CNN unless ``cnn=False``) is evaluated after every iteration, so iteration 0 (no private data: the
captions the LLM writes from the class names alone) is the baseline the release is compared with.

Printed at the end: accuracy of the release vs iteration 0, ceiling and chance, and per class the DP class
size next to the private class count. The private counts are NOT differentially private (the demo knows
them because it chose the private images; the pipeline only ever saw their noisy version).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.log import logger

#: Folder (= label) name of each Fashion-MNIST class, in the dataset's label order. Class names double as
#: folder names, so "T-shirt/top" needs a slug; lower case keeps the sorted (ImageFolder) order readable.
CLASS_FOLDERS = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle-boot"]
_ARTICLES = ["a T-shirt or top", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt",
             "a sneaker", "a bag", "an ankle boot"]

#: Sizes for the 15-minute target on 2 CPU cores (measured: 7.6 min on 2 idle cores, seed 0). ``population`` is the
#: total over the ten classes (the DP class sizes split it); ``num_ceiling`` None: as many as ``num_private``.
CONDITIONAL_DEFAULTS: dict[str, Any] = {
    "num_private": 1000, "num_eval": 1000, "num_ceiling": None, "pool_size": 2000, "population": 60,
    "iterations": 2, "variations": 2, "images_per_caption": 4, "voting": "image", "delta": 1e-6, "cnn": True,
}
DOMAIN = "a small grayscale product photo of a clothing item or accessory on a plain background"


def class_descriptions() -> dict[str, str]:
    """``classes:`` of the run: label (folder name) -> the description the prompts carry. Only the public
    class names go into it."""
    return {f: f"a product photo of {a}" for f, a in zip(CLASS_FOLDERS, _ARTICLES)}


@dataclass
class Split:
    """Indices into the Fashion-MNIST test set of the three disjoint real sets of the demo."""

    private: np.ndarray
    eval: np.ndarray
    ceiling: np.ndarray


def split_test_set(n_test: int, num_private: int, num_eval: int, num_ceiling: int,
                   rng: np.random.Generator) -> Split:
    """Three disjoint uniform random subsets of the test set (sorted), so that the held-out test images and
    the ceiling's training images are never private images."""
    need = num_private + num_eval + num_ceiling
    if min(num_private, num_eval, num_ceiling) < 1 or need > n_test:
        raise InputError(f"--num-private, --num-eval and the ceiling set must each be >= 1 and together at most "
                         f"{n_test} (the Fashion-MNIST test images); asked {num_private} + {num_eval} + {num_ceiling}")
    perm = rng.permutation(n_test)[:need]
    a, b = num_private, num_private + num_eval
    return Split(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:need]))


def write_image_folder(images: np.ndarray, labels: np.ndarray, folder: Path, ids: np.ndarray | None = None) -> dict[str, int]:
    """Write grayscale images as an ImageFolder ``folder/<class>/<id>.png`` (class folder from
    :data:`CLASS_FOLDERS`, ``id`` the image's index in its Fashion-MNIST split, so files of disjoint sets never
    share a name); existing files are kept (a rerun resumes). Returns the number of images per class folder
    (every class listed, also with 0)."""
    from PIL import Image

    if len(images) != len(labels):
        raise InputError(f"{len(labels)} labels for {len(images)} images")
    ids = np.arange(len(images)) if ids is None else np.asarray(ids)
    counts = {name: 0 for name in CLASS_FOLDERS}
    for a, y, i in zip(images, labels, ids):
        name = CLASS_FOLDERS[int(y)]
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{int(i):05d}.png"
        if not p.exists():
            Image.fromarray(np.asarray(a, dtype=np.uint8), mode="L").save(p)
        counts[name] += 1
    return counts


def conditional_config(out: str | Path, *, population: int, iterations: int, variations: int, epsilon: float,
                       delta: float, voting: str, seed: int, progress: bool, images_per_caption: int, cnn: bool,
                       examples: list[str] | None = None, backends: Mapping[str, Any] | None = None) -> dict:
    """The run config of the conditional demo (paths inside ``out``, see :func:`demo_paths`). ``backends``
    replaces model roles (tests: offline fakes)."""
    paths = demo_paths(out)
    cfg: dict[str, Any] = {
        "out": str(Path(out)),
        "seed": seed,
        "progress": progress,
        "data": {"private": str(paths["private"]), "public_pool": str(paths["pool"]), "labels_from_subfolders": True},
        "classes": class_descriptions(),
        "privacy": {"epsilon": epsilon, "delta": delta, "class_sizes": "dp"},
        "generation": {
            "domain": DOMAIN,
            "examples": list(examples or []),
            "variation_mode": "fill_in",
            "temperature": 0.7,
            "max_new_tokens": 40,
            "min_length": 4,
            "max_length": 20,
            "length_std": 2.0,
        },
        "pe": {"iterations": iterations, "population": population, "variations": variations, "voting": voting},
        "render": {"images_per_caption": images_per_caption},
        "captioner": {"backend": "efficientnet-lite0", "invert": True, "top_k": 3},
        "llm": {"backend": "llamacpp"},
        "text_embedder": {"backend": "sentence-transformers"},
        "renderer": {"backend": "retrieval"},
        # the release renders each DP caption into its images_per_caption nearest pool images (distinct ones:
        # consecutive render seeds walk through the top_k nearest), the voting loop into the nearest one
        "release_renderer": {"backend": "retrieval", "top_k": images_per_caption},
        "image_embedder": {"backend": "efficientnet-lite0", "invert": True},
        "evaluate": {
            "metrics": ["accuracy"] if cnn else ["accuracy-linear"],
            "per_iteration": True,
            "real_labelled": str(paths["eval"]),
            "real_train": str(paths["ceiling"]),
        },
    }
    for role, backend in (backends or {}).items():
        cfg[role] = dict(backend)
    return cfg


def demo_paths(out: str | Path) -> dict[str, Path]:
    """Where the demo writes its data inside the run folder: the private ImageFolder under ``private/``
    (never published), the public pool and the two real labelled evaluation sets under ``cache/``."""
    out = Path(out)
    return {
        "private": out / "private" / "fashion-mnist-test",
        "pool": out / "cache" / "fashion-mnist-train",
        "eval": out / "cache" / "fashion-mnist-heldout",
        "ceiling": out / "cache" / "fashion-mnist-ceiling",
    }


def run_conditional_demo(out: str | Path = "runs/demo-conditional", *,
                         num_private: int = CONDITIONAL_DEFAULTS["num_private"],
                         num_eval: int = CONDITIONAL_DEFAULTS["num_eval"], num_ceiling: int | None = None,
                         pool_size: int = CONDITIONAL_DEFAULTS["pool_size"],
                         population: int = CONDITIONAL_DEFAULTS["population"],
                         iterations: int = CONDITIONAL_DEFAULTS["iterations"],
                         variations: int = CONDITIONAL_DEFAULTS["variations"],
                         images_per_caption: int = CONDITIONAL_DEFAULTS["images_per_caption"],
                         epsilon: float = 1.0, delta: float = CONDITIONAL_DEFAULTS["delta"],
                         voting: str = CONDITIONAL_DEFAULTS["voting"], cnn: bool = CONDITIONAL_DEFAULTS["cnn"],
                         seed: int = 0, progress: bool = True, num_examples: int = 64,
                         backends: Mapping[str, Any] | None = None, print_summary: bool = True) -> tuple[Any, dict]:
    """Run the conditional demo; returns ``(RunDir, summary)`` (:func:`demo_summary`) and prints the summary.

    ``num_examples`` public pool images are captioned up front as few-shot examples of the caption style
    (public data; 0 in tests). ``backends``: model roles replaced (tests)."""
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.demo import _public_examples, _write_pngs, find_fashion_mnist, load_idx
    from spti.pipeline import run

    if population < len(CLASS_FOLDERS):
        raise InputError(f"--population must be at least the number of classes ({len(CLASS_FOLDERS)}): it is "
                         "the total over the classes")
    start = time.monotonic()
    files = find_fashion_mnist()
    rng = np.random.default_rng(seed)
    test_x, test_y = load_idx(files["test_images"]), load_idx(files["test_labels"], labels=True)
    train_x = load_idx(files["train_images"])
    num_ceiling = num_private if num_ceiling is None else num_ceiling
    split = split_test_set(len(test_x), num_private, num_eval, num_ceiling, rng)
    if not 1 <= pool_size <= len(train_x):
        raise InputError(f"--pool-size must be in [1, {len(train_x)}]")
    pool_idx = np.sort(rng.choice(len(train_x), pool_size, replace=False))
    examples = _public_examples(train_x, pool_idx, num_examples, rng) if num_examples else []
    cfg = Config.from_dict(conditional_config(
        out, population=population, iterations=iterations, variations=variations, epsilon=epsilon, delta=delta,
        voting=voting, seed=seed, progress=progress, images_per_caption=images_per_caption, cnn=cnn,
        examples=examples, backends=backends))
    paths = demo_paths(out)
    with RunDir.open(out, cfg, command="demo"):  # a run folder (and locked) before the images go into it
        private_counts = write_image_folder(test_x[split.private], test_y[split.private], paths["private"], split.private)
        write_image_folder(test_x[split.eval], test_y[split.eval], paths["eval"], split.eval)
        write_image_folder(test_x[split.ceiling], test_y[split.ceiling], paths["ceiling"], split.ceiling)
        _write_pngs(train_x[pool_idx], paths["pool"])
        logger.info("demo --conditional: %d private, %d held-out and %d ceiling Fashion-MNIST test images; %d "
                    "public train images in the pool", num_private, num_eval, num_ceiling, pool_size)
        run_dir = run(cfg, command="demo")
    summary = demo_summary(run_dir, private_counts)
    summary["sizes"] = {"num_private": num_private, "num_eval": num_eval, "num_ceiling": num_ceiling,
                        "pool_size": pool_size, "population": population, "iterations": iterations,
                        "variations": variations, "images_per_caption": images_per_caption,
                        "epsilon": epsilon, "delta": delta, "voting": voting}
    summary["wall_seconds"] = time.monotonic() - start
    if print_summary:
        print(format_summary(summary))
    return run_dir, summary


# --------------------------------------------------------------------------------------------- summary

def demo_summary(run_dir: Any, private_counts: Mapping[str, int]) -> dict[str, Any]:
    """What the demo prints, read from the run folder: per accuracy metric the release's value, iteration
    0's, the ceiling and chance; per class the DP class size (population members), the noisy DP count and
    the private count (``private_counts``: NOT DP, known to the demo only)."""
    path = Path(getattr(run_dir, "path", run_dir))
    metrics = json.loads((path / "metrics.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    per_iter = {int(r["iteration"]): r for r in metrics.get("per_iteration", []) if "iteration" in r}
    acc: dict[str, Any] = {}
    for name, entry in (metrics.get("metrics") or {}).items():
        if not (name.startswith("accuracy") and isinstance(entry, dict) and "value" in entry):
            continue
        first = per_iter.get(0, {}).get(name)
        last = per_iter.get(max(per_iter), {}).get(name) if per_iter else None
        acc[name] = {
            "release": float(entry["value"]),
            "iteration_0": None if first is None else float(first),
            "iteration_last": None if last is None or max(per_iter) == 0 else float(last),
            "last_iteration": max(per_iter) if per_iter else None,
            "ceiling": (entry.get("ceiling") or {}).get("value"),
            "chance": (entry.get("chance") or {}).get("uniform"),
            "n_synthetic": entry.get("n_synthetic"),
            "n_real_test": entry.get("n_real_test"),
            "n_ceiling_train": (entry.get("ceiling") or {}).get("n_train"),
            "per_class": entry.get("per_class") or {},
        }
    classes = manifest.get("classes") or {}
    names = list(classes.get("names") or [])
    sizes = list(classes.get("sizes") or [])
    noisy: list[float] | None = None
    counts_file = path / "checkpoints" / "class_counts.npz"
    if counts_file.is_file():
        with np.load(counts_file, allow_pickle=False) as z:
            if "noisy_counts" in z.files:
                noisy = [float(v) for v in z["noisy_counts"]]
    rows = []
    for i, name in enumerate(names):
        rows.append({"class": name, "dp_size": int(sizes[i]) if i < len(sizes) else None,
                     "dp_count": None if noisy is None or i >= len(noisy) else noisy[i],
                     "private_count": int(private_counts.get(name, 0))})
    return {"accuracy": acc, "classes": rows, "class_sizes": classes.get("class_sizes"),
            "release": str(path / "release"), "report": str(path / "report.html")}


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}%"


_CLASSIFIER = {"accuracy-linear": "linear probe (EfficientNet features)", "accuracy-cnn": "small CNN (pixels)"}


def format_summary(s: Mapping[str, Any]) -> str:
    """The demo's printout: accuracy table, then the class sizes table (private counts marked NOT DP)."""
    lines = []
    sizes = s.get("sizes") or {}
    if sizes:
        lines.append(f"class-conditional demo: epsilon = {sizes.get('epsilon')}, delta = {sizes.get('delta')}, "
                     f"{sizes.get('num_private')} private images, population {sizes.get('population')} over 10 "
                     f"classes, T = {sizes.get('iterations')}, {sizes.get('images_per_caption')} images per caption")
    lines.append("accuracy on held-out real Fashion-MNIST test images (classifier trained on the synthetic set; "
                 "NOT DP w.r.t. the test images):")
    acc = s.get("accuracy") or {}
    last = next((a["last_iteration"] for a in acc.values() if a.get("last_iteration")), None)
    lines.append(f"  {'classifier':38s} {'release':>8s} {'iter 0':>8s} {f'iter {last}' if last else 'iter T':>8s} "
                 f"{'ceiling':>8s} {'chance':>8s}")
    for name, a in acc.items():
        lines.append(f"  {_CLASSIFIER.get(name, name):38s} {_pct(a['release']):>8s} {_pct(a['iteration_0']):>8s} "
                     f"{_pct(a.get('iteration_last')):>8s} {_pct(a['ceiling']):>8s} {_pct(a['chance']):>8s}")
    if acc:
        a = next(iter(acc.values()))
        lines.append(f"  release: trained on its {a['n_synthetic']} images ({sizes.get('images_per_caption', '?')} "
                     "per DP caption); iter 0 / iter T: one image per caption of that iteration's population (iter 0: "
                     "written from the class names alone, no private data)")
        lines.append(f"  ceiling: the same classifier trained on {a['n_ceiling_train']} real images; all tested on "
                     f"{a['n_real_test']} held-out real images")
    rows = s.get("classes") or []
    if rows:
        lines.append("class sizes: DP (what the run used) vs private (NOT DP: known to the demo only, never to "
                     "the pipeline)")
        lines.append(f"  {'class':12s} {'DP size':>8s} {'DP count':>9s} {'private (NOT DP)':>17s}")
        for r in rows:
            dp_count = "-" if r["dp_count"] is None else f"{r['dp_count']:.1f}"
            lines.append(f"  {r['class']:12s} {r['dp_size'] if r['dp_size'] is not None else '-':>8} "
                         f"{dp_count:>9s} {r['private_count']:>17d}")
        lines.append("  (DP size: population members of the class, from the noisy DP count; "
                     f"class_sizes = {s.get('class_sizes')})")
    if "wall_seconds" in s:
        lines.append(f"wall time: {s['wall_seconds'] / 60:.1f} min")
    lines.append(f"release: {s.get('release')}")
    lines.append(f"report:  {s.get('report')}")
    return "\n".join(lines)


def cli_demo(a: Any) -> int:
    """``spti demo --conditional``: the parsed flags (None: not given, the conditional defaults apply)."""
    if getattr(a, "voting", None) == "text":
        logger.warning("demo --conditional with text voting: the offline tag captioner keeps too little of an "
                       "image for text voting to find the classes (docs/QUALITY.md); image voting is the default")

    def given(key: str, default: Any) -> Any:
        v = getattr(a, key, None)
        return default if v is None else v

    D = CONDITIONAL_DEFAULTS
    run_conditional_demo(
        out=a.out or "runs/demo-conditional",
        num_private=given("num_private", D["num_private"]),
        num_eval=given("num_eval", D["num_eval"]),
        pool_size=given("pool_size", D["pool_size"]),
        population=given("population", D["population"]),
        iterations=given("iterations", D["iterations"]),
        variations=given("variations", D["variations"]),
        images_per_caption=given("images_per_caption", D["images_per_caption"]),
        epsilon=given("epsilon", 1.0),
        voting=given("voting", D["voting"]),
        cnn=not getattr(a, "no_cnn", False),
        seed=given("seed", 0),
        progress=not getattr(a, "no_progress", False),
    )
    return 0
