"""Evaluation stages: metrics of the release (``evaluate_stage``) and of each PE iteration
(:class:`PerIterationEvaluator`), both against the private images — NOT differentially private.

``metrics.json`` has one writer, :class:`MetricsFile`: the final metrics and the ``per_iteration`` curve
are merged there, never by :func:`spti.metrics.evaluate` (which only computes). The per-iteration
evaluator records which image it rendered for each population member in its own file,
``checkpoints/iter_XXX/population_images.jsonl`` (``{"text", "image"}`` rows; the engine alone writes
``population.jsonl``). The accuracy metrics (labelled runs) test on ``evaluate.real_labelled`` (or, only
with ``evaluate.accuracy_on_private``, on the run's private images); per iteration they are trained on the
population's renders with its classes (``IterationRecord.labels``), without the ceiling. With ``evaluate.ceiling`` (text voting), :func:`ceiling_stage` also renders a sample
of the private captions into ``private/ceiling/`` and adds their metrics as metrics.json's ``ceiling`` entry.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from spti.config import Config
from spti.data.cache import RenderCache, render_seed
from spti.data.io import atomic_write_json, atomic_write_jsonl, read_json
from spti.data.run import RunDir
from spti.log import logger
from spti.pe.engine import IterationRecord
from spti.stages.render import build_run_renderer, release_pairs

#: The feature space (of spti.metrics) that the run's own image embedder backend serves.
_SPACE_OF_BACKEND = {"efficientnet-lite0": "efficientnet", "inception": "inception", "dinov2": "dinov2", "clip": "clip"}

POPULATION_IMAGES = "population_images.jsonl"


def eval_cache_dir(run_dir: RunDir) -> Path:
    """Where evaluation caches image features: ``private/eval-cache``. Why under private/: the cache holds
    the features of the private (real) images. The synthetic images' features share the same cache (one
    namespace per embedder, keyed by content hash, the way :func:`spti.metrics.evaluate` opens it): splitting
    it would gain nothing, since only release/ is ever published, and one rule stays simple to check —
    everything computed from private data lives in private/."""
    return run_dir.private / "eval-cache"


def _eval_space(cfg: Config) -> str | None:
    return cfg.evaluate.space or _SPACE_OF_BACKEND.get(cfg.image_embedder.get("backend", ""))


def _eval_embedders(cfg: Config) -> dict[str, Any]:
    """The run's own image embedder serves its feature space in evaluation (same options, e.g. the
    demo's ``invert``); other spaces use evaluate()'s defaults."""
    space = _SPACE_OF_BACKEND.get(cfg.image_embedder.get("backend", ""))
    return {space: dict(cfg.image_embedder)} if space else {}


class MetricsFile:
    """``<run>/metrics.json``, its only writer: the release's metrics (:meth:`write_final`) and the
    per-iteration curve (:meth:`add_iteration`), each keeping what the other wrote. Every write is atomic
    and the file always says it is not differentially private."""

    def __init__(self, run_dir: RunDir):
        self.path = run_dir.path / "metrics.json"

    def read(self) -> dict[str, Any]:
        return read_json(self.path) if self.path.is_file() else {}

    def has_iteration(self, iteration: int) -> bool:
        return any(r.get("iteration") == iteration for r in self.read().get("per_iteration", []))

    def add_iteration(self, row: dict[str, Any]) -> None:
        """Add (or replace) one iteration's row of the ``per_iteration`` curve, kept sorted by iteration."""
        from spti.metrics import NOT_DP

        data = self.read()
        others = [r for r in data.get("per_iteration", []) if r.get("iteration") != row["iteration"]]
        data["per_iteration"] = sorted(others + [row], key=lambda r: r["iteration"])
        for k, v in NOT_DP.items():
            data.setdefault(k, v)
        atomic_write_json(self.path, data)

    def write_final(self, result: dict[str, Any]) -> None:
        """Write the release's metrics (``evaluate()``'s result), keeping a ``per_iteration`` curve already
        in the file."""
        try:
            old = self.read()
        except (OSError, ValueError):  # a damaged file is replaced
            old = None
        if isinstance(old, dict) and "per_iteration" in old and "per_iteration" not in result:
            result = {**result, "per_iteration": old["per_iteration"]}
        atomic_write_json(self.path, result)
        logger.info("evaluate: wrote %s", self.path)


_ACCURACY_NAMES = ("accuracy", "accuracy-linear", "accuracy-cnn")


def _wants_accuracy(metrics) -> bool:
    return any(m in _ACCURACY_NAMES for m in metrics)


def private_labelled(cfg: Config, ingested) -> Any:
    """The run's private images with their class names, as the accuracy metrics' real set — used only with
    ``evaluate.accuracy_on_private`` (marked ``run_private``: evaluate() refuses it otherwise)."""
    from spti.metrics.imagesets import real_set
    from spti.metrics.labelled import LabelledImages
    from spti.stages.private import private_labels

    labels = private_labels(cfg, ingested)
    if labels is None:
        return None
    return LabelledImages(real_set(ingested), [labels.names[int(i)] for i in labels.index], run_private=True,
                          description="the run's PRIVATE images (evaluate.accuracy_on_private)")


def accuracy_options(cfg: Config, ingested, real_labelled: Any = None) -> dict[str, Any]:
    """evaluate()'s accuracy arguments of a run: the real labelled set (``evaluate.real_labelled``, or the
    private images with ``evaluate.accuracy_on_private``), the ceiling's training set, the linear probe's
    feature space (the run's). Empty when no accuracy metric is asked for (the call stays as it was)."""
    ev = cfg.evaluate
    if not _wants_accuracy(ev.metrics):
        return {}
    if real_labelled is None:
        real_labelled = ev.real_labelled
        if real_labelled is None and ev.accuracy_on_private:
            real_labelled = private_labelled(cfg, ingested)
    return {"real_labelled": real_labelled, "real_train": ev.real_train,
            "accuracy_on_private": ev.accuracy_on_private, "accuracy_space": _eval_space(cfg)}


def evaluate_stage(run_dir: RunDir, cfg: Config) -> dict:
    """Final metrics of the release against the private images (NOT differentially private)."""
    from spti.data.images import IngestResult
    from spti.metrics.evaluate import evaluate

    ingested = IngestResult.load(run_dir.private)
    res = evaluate(
        ingested,
        run_dir.release,
        metrics=tuple(cfg.evaluate.metrics),
        embedders=_eval_embedders(cfg),
        prdc_space=_eval_space(cfg),
        memorization_space=_eval_space(cfg),
        cache_dir=eval_cache_dir(run_dir),
        max_images=cfg.evaluate.max_images,
        **accuracy_options(cfg, ingested),
    )
    if cfg.evaluate.ceiling:
        ceiling = ceiling_stage(run_dir, cfg, ingested)
        if ceiling is not None:
            res = {**res, "ceiling": ceiling}
    MetricsFile(run_dir).write_final(res)
    run_dir.mark_stage("evaluate", metrics=list(cfg.evaluate.metrics))
    return res


CEILING_DIR = "ceiling"
CEILING_NOTE = (
    "the non-private caption ceiling: the PRIVATE captions rendered with the release renderer and measured "
    "like the release. NOT differentially private (computed from the private captions and images); the "
    "images stay in private/ceiling/ and never enter release/"
)


def private_captions(run_dir: RunDir) -> list[str]:
    """The captions of the private images (text voting's ``private/captions/`` shards), empty ones dropped."""
    from spti.data.io import read_jsonl

    shard_dir = run_dir.private / "captions"
    if not shard_dir.is_dir():
        return []
    out: list[str] = []
    for shard in sorted(shard_dir.glob("shard-*.jsonl")):
        out.extend(t for r in read_jsonl(shard) if isinstance(t := r.get("text"), str) and t.strip())
    return out


def ceiling_stage(run_dir: RunDir, cfg: Config, ingested) -> dict[str, Any] | None:
    """``evaluate.ceiling``: render the private captions once with the release renderer and measure the
    renders like the release, so that a user sees how much of the gap to the private data is the DP noise
    (release vs ceiling) and how much is the captioner and text-to-image model (ceiling vs the private
    images themselves). Returns the ``ceiling`` entry of metrics.json (NOT differentially private), or None
    with a logged note when there is nothing to render (image voting has no private captions).

    As many captions as the release has images are rendered (a seeded sample, fewer if there are fewer
    captions): Fréchet distances are biased by sample size, so the two numbers are comparable only at equal
    sizes. Renders go through a :class:`RenderCache` rooted in ``private/ceiling/`` (a resumed run reuses
    them; counted as ``renderer_calls.ceiling``), and ``private/ceiling/images.jsonl`` lists which image is
    which caption. Nothing is written to release/."""
    import numpy as np
    from PIL import Image

    from spti.data.listing import list_images
    from spti.metrics.evaluate import evaluate

    if cfg.pe.voting != "text":
        logger.info("evaluate: no caption ceiling: it needs the private captions of text voting, and this run "
                    "votes with images (pe.voting: %s)", cfg.pe.voting)
        return None
    captions = private_captions(run_dir)
    n_release = len(list_images(run_dir.release / "images")) if (run_dir.release / "images").is_dir() else 0
    n = min(len(captions), n_release)
    if n < 2:
        logger.info("evaluate: no caption ceiling: too few private captions or release images to compare")
        return None
    rng = np.random.default_rng([int(cfg.seed), 0xCE1])
    chosen = [captions[i] for i in sorted(rng.choice(len(captions), size=n, replace=False).tolist())]
    root = run_dir.private / CEILING_DIR
    stats: Counter = Counter(run_dir.stats().get("renderer_calls", {}))
    stats.setdefault("ceiling", 0)
    renderer = build_run_renderer(run_dir, cfg, cfg.release_renderer or cfg.renderer)
    cache = RenderCache(root, renderer, stats, "ceiling")
    # the release's seed rule: a caption that occurs twice gets a fresh seed the second time
    paths = cache.get_paths(release_pairs(chosen, 1, cfg.render.seed), desc="rendering the ceiling")
    run_dir.update_stats("renderer_calls", stats)
    atomic_write_jsonl(root / "images.jsonl",
                       ({"text": t, "image": p.relative_to(run_dir.path).as_posix()} for t, p in zip(chosen, paths)))
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    # accuracy needs each image's class, which the sampled private captions do not keep
    res = evaluate(
        ingested, images, metrics=tuple(m for m in cfg.evaluate.metrics
                                        if m != "memorization" and m not in _ACCURACY_NAMES),
        embedders=_eval_embedders(cfg), prdc_space=_eval_space(cfg), cache_dir=eval_cache_dir(run_dir),
        max_images=cfg.evaluate.max_images, captions=chosen,
    )
    entry: dict[str, Any] = {"differentially_private": False, "note": CEILING_NOTE, "n_images": n,
                             "images": (root / "images.jsonl").relative_to(run_dir.path).as_posix(),
                             "metrics": res.get("metrics", {})}
    for key in ("errors", "skipped"):
        if res.get(key):
            entry[key] = res[key]
    vals = _curve_values(entry["metrics"])
    if vals:
        logger.info("evaluate: caption ceiling (not DP): %s", ", ".join(f"{k}={v:.4g}" for k, v in vals.items()))
    return entry


def _curve_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of one evaluation worth a curve: each metric's ``value``, for PRDC its four scores, for
    accuracy also each class's (``accuracy-linear.per_class.<class>``)."""
    out: dict[str, float] = {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("value"), (int, float)):
            out[name] = float(entry["value"])
        for k in ("precision", "recall", "density", "coverage"):
            if isinstance(entry.get(k), (int, float)):
                out[f"{name}.{k}"] = float(entry[k])
        per_class = entry.get("per_class")
        if isinstance(per_class, dict):
            for c, v in per_class.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{name}.per_class.{c}"] = float(v)
    return {k: v for k, v in out.items() if math.isfinite(v)}


class PerIterationEvaluator:
    """``evaluate.per_iteration``: after each PE iteration, render the population (one image per caption,
    through ``render_cache``), list which image belongs to which caption in the iteration's
    ``population_images.jsonl`` (for the report's per-iteration grids) and add the iteration's metrics to
    ``metrics.json``'s ``per_iteration`` curve. Idempotent: an iteration already evaluated is skipped, so a
    resumed run does not duplicate rows. Memorization is left to the final evaluation."""

    def __init__(self, run_dir: RunDir, cfg: Config, render_cache: RenderCache, ingest_result):
        self.run_dir, self.cfg, self.render_cache, self.ingest_result = run_dir, cfg, render_cache, ingest_result
        self.metrics = tuple(m for m in cfg.evaluate.metrics if m != "memorization")
        self.metrics_file = MetricsFile(run_dir)
        self._accuracy: dict[str, Any] | None = None  # evaluate()'s accuracy arguments, built once
        self._label_names: list[str] | None = None

    def _accuracy_args(self, rec: IterationRecord) -> dict[str, Any]:
        """The accuracy arguments of one iteration: the real labelled set read once (its features and
        pixels are then reused), the population's class names, no ceiling (it does not change)."""
        if not _wants_accuracy(self.metrics):
            return {}
        if self._accuracy is None:
            from spti.metrics.labelled import read_labelled

            ev = self.cfg.evaluate
            real = read_labelled(ev.real_labelled) if ev.real_labelled else None
            self._accuracy = accuracy_options(self.cfg, self.ingest_result, real)
        labels = getattr(rec, "labels", None)
        names: list[str | None] | None = None
        if labels is not None:
            if self._label_names is None and any(not isinstance(v, str) for v in labels):
                from spti.stages.private import private_labels

                ls = private_labels(self.cfg, self.ingest_result)
                self._label_names = list(ls.names) if ls is not None else []
            table = self._label_names or []
            names = [v if isinstance(v, str) else (table[int(v)] if 0 <= int(v) < len(table) else str(int(v)))
                     for v in list(labels)]
        return {**self._accuracy, "synthetic_labels": names, "accuracy_ceiling": False}

    def __call__(self, rec: IterationRecord) -> None:
        from PIL import Image

        from spti.metrics.evaluate import evaluate

        if self.metrics_file.has_iteration(rec.iteration) or not self.metrics:
            return
        pairs = [(t, render_seed(self.cfg.render.seed, 0)) for t in rec.population]
        paths = self.render_cache.get_paths(pairs, desc=f"rendering population {rec.iteration}")
        atomic_write_jsonl(
            self.run_dir.checkpoints / f"iter_{rec.iteration:03d}" / POPULATION_IMAGES,
            ({"text": t, "image": p.relative_to(self.run_dir.path).as_posix()} for t, p in zip(rec.population, paths)),
        )
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        res = evaluate(
            self.ingest_result, images, metrics=self.metrics, embedders=_eval_embedders(self.cfg),
            prdc_space=_eval_space(self.cfg),
            cache_dir=eval_cache_dir(self.run_dir), max_images=self.cfg.evaluate.max_images, captions=list(rec.population),
            **self._accuracy_args(rec),
        )
        row = {"iteration": rec.iteration, **_curve_values(res.get("metrics", {}))}
        self.metrics_file.add_iteration(row)
        logger.info("iteration %d metrics: %s", rec.iteration, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "iteration"))


def per_iteration_evaluator(run_dir: RunDir, cfg: Config, ingest_result,
                            renders: RenderCache | None) -> PerIterationEvaluator | None:
    """The evaluator to call after each PE iteration, or None when ``evaluate.per_iteration`` is off.

    Image voting passes the loop's render cache (``renders``): the population was rendered while
    voting, so evaluating it costs no renderer call. Text voting has none: its populations are rendered
    with the release renderer, counted under ``renderer_calls.per_iteration``."""
    if not (cfg.evaluate.per_iteration and cfg.evaluate.metrics):
        return None
    if renders is None:
        renderer = build_run_renderer(run_dir, cfg, cfg.release_renderer or cfg.renderer)
        renders = RenderCache(run_dir.cache, renderer, Counter(run_dir.stats().get("renderer_calls", {})), "per_iteration")
    return PerIterationEvaluator(run_dir, cfg, renders, ingest_result)
