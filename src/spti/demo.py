"""``spti demo``: the whole pipeline offline, on CPU, with real data and the bundled weights.

Private set: a *shoe shop*: ``num_private`` Fashion-MNIST *test* images (Debian package
``dataset-fashion-mnist``) with a skewed class mix, by default 70 % footwear (sandal, sneaker, ankle boot,
a third each) and 30 % spread evenly over the 7 other classes. Public pool: ``pool_size`` Fashion-MNIST
*train* images drawn uniformly (about 10 % per class). Why skewed: an uninformed generator writes about
the pool's balanced mix, so with a balanced private set there would be nothing for Private Evolution to
recover; with a shoe shop, how far the release moves from the pool's mix toward 70 % footwear is what the
privacy budget buys.

The labels are never shown to the pipeline. Afterwards the demo reads the class of every synthetic
caption through the *public* pool's labels (the retrieval renderer maps a caption to a pool image) and
prints, per iteration and for the release, the total-variation distance (TV) of the class mix to the
private mix, next to the references: iteration 0 (no private data), the uniform pool and an ideal sampler
drawing as many images straight from the private mix. It writes them to ``class_mix.json`` in the run
folder, which the report draws as a bar chart. That file is computed from the private labels: it is NOT
differentially private, says so, and never goes into ``release/``.

Captioner: EfficientNet-Lite0 labels; LLM: SmolLM2-135M-Instruct (GGUF, llama.cpp, ``n_threads: auto``:
fewer threads while other processes keep cores busy); embedder: all-MiniLM-L6-v2; renderer: retrieval
over the pool.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from spti.errors import InputError
from spti.log import logger

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FOOTWEAR = (5, 7, 9)  # sandal, sneaker, ankle boot
CLASS_MIX_FILE = "class_mix.json"  # the name spti.report.summary reads (not imported here: the report is heavy)
#: δ of the demo: below 1/N at every demo size and below the 1e-5 above which spti warns that the guarantee
#: protects little (the default 1/(N ln N) is 1.4e-4 at N = 1,000).
DEMO_DELTA = 1e-6
#: Why image voting is the demo's default, said in its output (docs/QUALITY.md, benchmarks/bench_quality.py).
VOTING_NOTE = {
    "image": "voting: image. The private images vote for the candidates' rendered images in EfficientNet feature "
             "space. Why not the captions: this offline tag captioner (\"a photo of a loafer, muzzle, plane\") "
             "keeps too little of an image for caption votes to tell the classes apart (about 75 % of image votes "
             "land on a candidate of the voter's own class, 20-35 % of caption votes), so image votes follow the "
             "private class mix more closely. --voting text to compare.",
    "text": "voting: text. The private images' captions vote for the candidate captions. Expect the release to "
            "follow the private class mix less closely than with --voting image (the default): this offline tag "
            "captioner (\"a photo of a loafer, muzzle, plane\") keeps too little of an image for caption votes to "
            "tell the classes apart (20-35 % of caption votes land on a candidate of the voter's own class, about "
            "75 % of image votes). Text voting pays off with a real captioner.",
}
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
    """The demo's run configuration: δ = :data:`DEMO_DELTA`; llama.cpp threads adapt to the machine's load;
    the variation API rephrases (see the comment below)."""
    out = Path(out)
    return {
        "out": str(out),
        "seed": seed,
        "progress": progress,
        "data": {"private": str(out / "private" / "fashion-mnist-test"), "public_pool": str(out / "cache" / "fashion-mnist-train")},
        "privacy": {"epsilon": epsilon, "delta": DEMO_DELTA},
        "generation": {
            "domain": "a product photo of a single clothing item or accessory (a shirt, trouser, dress, coat, shoe, sandal, sneaker or bag) on a plain background",
            "examples": list(examples or []),
            # rephrase, not fill-in: SmolLM2-135M leaves a blank unfilled in ~40 % of fill-in replies, each asked
            # again (1.9 LLM calls per variation); rephrased it needs 1.03 and keeps as many of the parent's words
            # (benchmarks/bench_fill_in.py)
            "variation_mode": "rephrase",
            "temperature": 0.7,
            "max_new_tokens": 40,
            "min_length": 4,
            "max_length": 20,
            "length_std": 2.0,
        },
        "pe": {"iterations": iterations, "population": population, "variations": variations, "voting": voting},
        "captioner": {"backend": "efficientnet-lite0", "invert": True, "top_k": 3},
        "llm": {"backend": "llamacpp", "n_threads": "auto"},
        "text_embedder": {"backend": "sentence-transformers"},
        "renderer": {"backend": "retrieval"},
        "image_embedder": {"backend": "efficientnet-lite0", "invert": True},
        "evaluate": {"metrics": ["fd-efficientnet", "prdc", "memorization"]},
    }


#: ``voting``: image by default (:data:`VOTING_NOTE`; with the retrieval renderer, rendering a candidate is a
#: lookup). ``footwear``: the shoe shop's share of sandals, sneakers and ankle boots (0.3: the balanced mix).
DEFAULTS = {"num_private": 1000, "pool_size": 1000, "population": 40, "iterations": 2, "variations": 2,
            "voting": "image", "footwear": 0.7}


# ---------------------------------------------------------------------------------------------- the shop
def private_mix(footwear: float) -> np.ndarray:
    """The shoe shop's class mix: ``footwear`` split evenly over sandal, sneaker and ankle boot, the rest
    evenly over the 7 other classes."""
    if not 0.0 <= footwear <= 1.0:
        raise InputError(f"--footwear must be a share in [0, 1], got {footwear}")
    p = np.full(len(FASHION_CLASSES), (1.0 - footwear) / (len(FASHION_CLASSES) - len(FOOTWEAR)))
    p[list(FOOTWEAR)] = footwear / len(FOOTWEAR)
    return p


def class_counts(mix: np.ndarray, n: int) -> np.ndarray:
    """``n`` split by ``mix`` (largest remainder: the counts sum to ``n``, each within 1 of n × share)."""
    exact = np.asarray(mix, dtype=float) / float(np.sum(mix)) * n
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]] += 1
    return counts


def shop_counts(n: int, footwear: float) -> np.ndarray:
    """Images per class of a shoe shop of ``n``: round(n × footwear) footwear, split evenly over the three
    footwear classes, the rest evenly over the 7 others (so "70 %" is 700 of 1,000 exactly)."""
    p = private_mix(footwear)
    foot = np.zeros(len(p), dtype=bool)
    foot[list(FOOTWEAR)] = True
    n_foot = int(round(n * footwear))
    counts = np.zeros(len(p), dtype=np.int64)
    if n_foot:
        counts[foot] = class_counts(p[foot] if p[foot].sum() else np.ones(foot.sum()), n_foot)
    if n - n_foot:
        counts[~foot] = class_counts(p[~foot] if p[~foot].sum() else np.ones((~foot).sum()), n - n_foot)
    return counts


def skewed_subset(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``counts[c]`` items of each class ``c`` of ``labels`` (no item twice)."""
    labels = np.asarray(labels)
    counts = np.asarray(counts, dtype=np.int64)
    have = np.bincount(labels, minlength=len(counts))[: len(counts)]
    if np.any(counts > have):
        short = [FASHION_CLASSES[c] if len(counts) == len(FASHION_CLASSES) else str(c) for c in np.flatnonzero(counts > have)]
        raise InputError(f"the private set needs more images of {', '.join(short)} than the test set holds "
                         f"({int(have.min())} per class); use a smaller --num-private or --footwear")
    picks = [rng.choice(np.flatnonzero(labels == c), int(counts[c]), replace=False) for c in range(len(counts))]
    return np.sort(np.concatenate(picks))


def describe_shop(n: int, footwear: float) -> str:
    """The demo's statement of its private set (the mix is a demo parameter, not a secret of the data)."""
    rest = (1.0 - footwear) / (len(FASHION_CLASSES) - len(FOOTWEAR))
    return (f"private set: a shoe shop: {n:,} Fashion-MNIST test images, {footwear:.0%} footwear (sandal, sneaker, "
            f"ankle boot: {footwear / len(FOOTWEAR):.1%} each) and {rest:.1%} of each of the 7 other classes; the "
            "pipeline never sees these labels")


def run_demo(out: str | Path = "runs/demo", *, num_private: int = DEFAULTS["num_private"],
             pool_size: int = DEFAULTS["pool_size"], population: int = DEFAULTS["population"],
             iterations: int = DEFAULTS["iterations"], variations: int = DEFAULTS["variations"], epsilon: float = 1.0,
             voting: str = DEFAULTS["voting"], seed: int = 0, progress: bool = True, num_examples: int = 64,
             footwear: float = DEFAULTS["footwear"]):
    """Run the offline demo; returns the :class:`~spti.data.run.RunDir`.

    ``num_examples`` public pool images are captioned up front and given to the LLM as few-shot examples
    of the caption style (public data: allowed; private captions never are)."""
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.pipeline import run

    if voting not in VOTING_NOTE:
        raise InputError(f"--voting must be one of {', '.join(VOTING_NOTE)}, got {voting!r}")
    private_mix(footwear)  # checks --footwear before anything is loaded
    files = find_fashion_mnist()
    rng = np.random.default_rng(seed)
    test_x, test_y = load_idx(files["test_images"]), load_idx(files["test_labels"], labels=True)
    train_x, train_y = load_idx(files["train_images"]), load_idx(files["train_labels"], labels=True)
    if not (1 <= num_private <= len(test_x)) or not (1 <= pool_size <= len(train_x)):
        raise InputError(f"--num-private must be in [1, {len(test_x)}] and --pool-size in [1, {len(train_x)}]")
    priv_idx = skewed_subset(test_y, shop_counts(num_private, footwear), rng)
    pool_idx = np.sort(rng.choice(len(train_x), pool_size, replace=False))
    print(describe_shop(num_private, footwear))
    print(f"public pool: {pool_size:,} Fashion-MNIST train images drawn uniformly (about 10 % of each class)")
    print(VOTING_NOTE[voting], flush=True)
    examples = _public_examples(train_x, pool_idx, num_examples, rng) if num_examples else []
    cfg = Config.from_dict(demo_config(out, population=population, iterations=iterations, variations=variations,
                                       epsilon=epsilon, voting=voting, seed=seed, progress=progress, examples=examples))
    # the folder is a run folder (and locked) before the images are written into it
    with RunDir.open(out, cfg, command="demo"):
        _check_same_shop(Path(out), {"num_private": num_private, "pool_size": pool_size, "footwear": footwear,
                                     "seed": seed})
        _write_pngs(test_x[priv_idx], Path(cfg.data.private))
        _write_pngs(train_x[pool_idx], Path(cfg.data.public_pool))
        logger.info("demo: %d private Fashion-MNIST test images, %d public train images in the pool", num_private, pool_size)
        run_dir = run(cfg, command="demo")
    data = _class_mix(run_dir, cfg, test_y[priv_idx], train_y[pool_idx], seed=seed)
    write_class_mix(run_dir.path, data)
    print(format_class_mix(data))
    from spti.report import build_report

    build_report(run_dir.path)  # once more, now with the class-mix chart
    return run_dir


def _check_same_shop(out: Path, settings: dict) -> None:
    """A demo folder is resumed only with the same private set and pool: the images already written are
    kept (``_write_pngs`` skips existing files), and the class mix is computed from the labels of the
    images drawn now. The settings that draw them are not all in the run's config, so they are kept in
    ``private/demo_private_set.json``."""
    from spti.data.io import atomic_write_json, read_json

    path = out / "private" / "demo_private_set.json"
    if path.is_file() and read_json(path) != settings:
        raise InputError(f"{out} holds a demo with another private set or pool (other --num-private, --pool-size, "
                         "--footwear or --seed); use a new --out, or the same settings to resume")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _public_examples(train_x: np.ndarray, pool_idx: np.ndarray, k: int, rng: np.random.Generator) -> list[str]:
    """Captions of ``k`` random *public* pool images, as few-shot examples of the caption style."""
    from PIL import Image

    from spti.models.captioner import build_captioner

    cap = build_captioner({"backend": "efficientnet-lite0", "invert": True, "top_k": 3})
    pick = rng.choice(pool_idx, size=min(k, len(pool_idx)), replace=False)
    return sorted(set(cap.caption([Image.fromarray(train_x[i], mode="L").convert("RGB") for i in pick])))


# ---------------------------------------------------------------------------------------------- class mix
def class_mix(labels: np.ndarray, n_classes: int = len(FASHION_CLASSES)) -> np.ndarray:
    """Share of each class among ``labels`` (all zeros for no labels)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels, minlength=n_classes)[:n_classes] / max(len(labels), 1)


def tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance of two class mixes: the share of images that would have to change class."""
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def class_mix_data(private_labels: np.ndarray, pool_labels: np.ndarray, steps: list[tuple[str, np.ndarray]],
                   *, seed: int = 0, draws: int = 500) -> dict:
    """The content of ``class_mix.json``, in the format :mod:`spti.report.summary` draws.

    ``steps``: (name, class labels) of each iteration's population and of the release, in order (the
    release last). References, for ``n`` = the release's size: the uniform public pool (its own mix;
    ``expected_tv``: the mean TV of ``n`` random draws from the pool) and an ideal sampler drawing ``n``
    images straight from the private mix (``expected_tv``: the mean TV over ``draws`` draws; its ``mix`` is
    the draw whose TV is closest to that mean: a typical one). The private set comes first: the report
    measures every series' TV against the first series that is not differentially private.
    """
    n_classes = len(FASHION_CLASSES)
    p = class_mix(private_labels, n_classes)
    n = len(steps[-1][1]) if steps else 0
    rng = np.random.default_rng(seed)

    def typical(sample) -> tuple[float, np.ndarray]:
        mixes = [class_mix(sample(), n_classes) for _ in range(draws)] if n else [np.zeros(n_classes)]
        tvs = np.array([tv(p, q) for q in mixes])
        return float(tvs.mean()), mixes[int(np.argmin(np.abs(tvs - tvs.mean())))]

    ideal_tv, ideal_mix = typical(lambda: rng.choice(n_classes, size=n, p=p))
    pool_tv, _ = typical(lambda: rng.choice(np.asarray(pool_labels), size=n))

    def series(name: str, mix: np.ndarray, dp: bool, **extra) -> dict:
        return {"name": name, "mix": [round(float(v), 4) for v in mix], "differentially_private": dp,
                "tv_to_private": round(tv(p, mix), 4), **extra}

    out = [series("private set", p, False, images=int(len(private_labels)))]
    out += [series(name, class_mix(labels, n_classes), True, images=int(len(labels))) for name, labels in steps]
    out.append(series("uniform pool", class_mix(pool_labels, n_classes), True, expected_tv=round(pool_tv, 4),
                      note=f"the public pool's mix; {n} random draws from it are at TV {pool_tv:.3f} on average"))
    out.append(series(f"ideal sampler ({n} private images)", ideal_mix, False, expected_tv=round(ideal_tv, 4),
                      note=f"{n} images drawn straight from the private mix are at TV {ideal_tv:.3f} on average "
                           "(a typical draw shown)"))
    return {
        "classes": list(FASHION_CLASSES),
        "series": out,
        "differentially_private": False,
        "note": ("NOT differentially private: the private set's mix and every distance to it are computed from the "
                 "private labels; keep this file with the run, never publish it. Each synthetic caption's class is "
                 "the label of the public pool image the retrieval renderer returns for it; the labels were never "
                 "shown to the pipeline."),
    }


def format_class_mix(data: dict) -> str:
    """The demo's printout of ``class_mix.json``: per step its TV to the private mix and its footwear share,
    then one summary line (the one the README quotes)."""
    series = data["series"]
    foot = lambda s: sum(s["mix"][c] for c in FOOTWEAR)  # noqa: E731
    get = lambda prefix: next((s for s in series if s["name"].startswith(prefix)), None)  # noqa: E731
    first, rel, pool, ideal = get("iteration 0"), get("release"), get("uniform pool"), get("ideal sampler")
    n = rel["images"] if rel else 0
    width = max(len(s["name"]) for s in series) + 2
    lines = ["class mix (labels never seen by the pipeline; TV = total-variation distance to the private mix, "
             "lower is better; NOT differentially private):"]
    for s in series:
        tv_txt = "" if s["name"] == "private set" else f"TV {s['tv_to_private']:.3f}"
        exp = f"  ({n} random draws: TV {s['expected_tv']:.3f} on average)" if "expected_tv" in s else ""
        lines.append(f"  {s['name']:<{width}}{tv_txt:<10}  footwear {foot(s):4.0%}{exp}")
    if first and rel and pool and ideal:
        lines.append(f"total-variation distance to the private class mix: iteration 0 (no private data) "
                     f"{first['tv_to_private']:.3f}, release {rel['tv_to_private']:.3f}; uniform pool "
                     f"{pool['expected_tv']:.3f}; an ideal sampler of {n} private images "
                     f"{ideal['expected_tv']:.3f}")
    return "\n".join(lines)


def write_class_mix(run_path: str | Path, data: dict) -> Path:
    """``class_mix.json`` at the top of the run folder, beside the report: never in ``release/`` (whose
    allow-list would not take it either)."""
    from spti.data.io import atomic_write_json

    path = Path(run_path) / CLASS_MIX_FILE
    atomic_write_json(path, data)
    return path


def _class_mix(run_dir, cfg, private_labels: np.ndarray, pool_labels: np.ndarray, *, seed: int = 0) -> dict:
    """Use the labels the pipeline never saw: the class of each caption of each iteration's population and
    of the release is the label of the pool image the retrieval renderer returns for it."""
    from spti.data.io import read_jsonl
    from spti.stages.render import build_run_renderer

    renderer = build_run_renderer(run_dir, cfg, cfg.renderer)
    label_of = {name: int(pool_labels[int(Path(name).stem)]) for name in renderer.pool_files}

    def labels_for(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.int64)
        idx, _ = renderer.nearest(texts)
        return np.array([label_of[renderer.pool_files[i[0]]] for i in idx], dtype=np.int64)

    steps = []
    for t in range(cfg.pe.iterations + 1):
        path = run_dir.checkpoints / f"iter_{t:03d}" / "population.jsonl"
        if path.is_file():
            steps.append(("iteration 0 (no private data)" if t == 0 else f"iteration {t}",
                          labels_for([r["text"] for r in read_jsonl(path)])))
    steps.append(("release", labels_for([r["text"] for r in read_jsonl(run_dir.release / "dp_captions.jsonl")])))
    return class_mix_data(private_labels, pool_labels, steps, seed=seed)
