"""``evaluate()``: compare a synthetic image set with the private (real) one.

Every number here is computed against private data and is therefore NOT differentially private: it is
for the data owner's eyes (``metrics.json`` in the run folder, never in ``release/``). Each metric entry
says so itself (``"differentially_private": false`` and a note), so that a number copied out of the file
keeps its warning.

Metric names and the feature space each one uses (override a space's embedder with ``embedders``):

============== ================= ============================================================
metric         feature space     notes
============== ================= ============================================================
fid            ``inception``     clean-fid protocol: the embedder resizes both sets itself
fd-dinov2      ``dinov2``        Fréchet distance, same code as FID
fd-clip        ``clip``          Fréchet distance, same code as FID
fd-efficientnet ``efficientnet`` Fréchet distance, same code as FID (bundled, works offline)
prdc           ``prdc_space``    default inception when it can be built, else efficientnet
memorization   ``memorization_space`` default: the PRDC space
clip-score     ``clip``          needs a clip embedder with ``embed_text`` and captions
accuracy-linear ``accuracy_space`` linear probe trained on the labelled synthetic set, tested on
               (default: PRDC's) real labelled images (see :mod:`~spti.metrics.accuracy`)
accuracy-cnn   pixels            small CNN trained from scratch, same protocol
accuracy       both of the above
============== ================= ============================================================

Module map: :mod:`~spti.metrics.imagesets` loads the two sets, :mod:`~spti.metrics.features` embeds them
(through the feature cache), :mod:`~spti.metrics.entries` holds the tables above and builds each entry;
this module sequences them.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import BackendError, ConfigError, InputError, SptiError
from spti.log import logger
from spti.metrics.accuracy import ACCURACY_METRICS, expand_accuracy
from spti.metrics.entries import (
    FD_METRICS,
    FEATURE_SPACES,
    METRICS,
    NOT_DP,
    SPACE_ALIASES,
    clip_score,
    metric_entry,
)
from spti.metrics.features import embed_set, open_feature_cache
from spti.metrics.imagesets import real_set as _real_set
from spti.metrics.imagesets import subset, synthetic_set

__all__ = ["evaluate", "METRICS", "FEATURE_SPACES", "NOT_DP"]


class _Embedders:
    """The image embedders of one evaluation: each feature space's embedder is built on first use, a
    space that failed to load fails again at once (with the same message), and the embedders built here
    (not those the caller passed ready-made) are closed — one at a time, to free GPU memory before the
    next model loads. Also records a metric's error (or raises it, with ``strict``)."""

    def __init__(self, space_cfg: Mapping[str, Any], *, strict: bool, errors: dict[str, str]):
        self.space_cfg = space_cfg
        self.strict = strict
        self.errors = errors
        self.built: dict[str, Any] = {}  # space -> embedder in use
        self.infos: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self._default: str | None = None

    def get(self, space: str) -> Any:
        """The embedder of ``space`` (built on first use); BackendError when it cannot be loaded."""
        space = SPACE_ALIASES.get(space, space)
        if space in self.built:
            return self.built[space]
        if space in self.failed:
            raise BackendError(self.failed[space])
        cfg = self.space_cfg.get(space)
        from spti.models.image_embedder import ImageEmbedder

        try:
            emb = cfg if isinstance(cfg, ImageEmbedder) else self._build(cfg)
        except Exception as e:
            msg = f"cannot load the {space!r} image embedder ({type(e).__name__}: {e})"
            self.failed[space] = msg
            raise BackendError(msg) from e
        self.built[space] = emb
        self.infos[space] = _safe_info(emb)
        return emb

    @staticmethod
    def _build(cfg: Any) -> Any:
        """The embedder of a space: on the running command's executor when that is remote (a Ray pool embeds
        the images, :func:`spti.metrics.features.embed_set` sends it whole jobs), else in this process."""
        from spti.executor import active_executor
        from spti.models.image_embedder import REGISTRY

        ex = active_executor()
        if ex is not None and ex.kind != "local":
            return ex.backend("image_embedder", cfg)
        return REGISTRY.build(cfg)

    def owned(self, space: str) -> bool:
        """Whether the embedder of ``space`` was built here (and so is ours to close)."""
        from spti.models.image_embedder import ImageEmbedder

        return not isinstance(self.space_cfg.get(space), ImageEmbedder)

    def default_space(self) -> str:
        """The space of prdc / memorization when none is given: inception when it can be built, else
        efficientnet (decided once)."""
        if self._default is None:
            try:
                self.get("inception")
                self._default = "inception"
            except BackendError as e:
                logger.info("evaluate: %s; PRDC/memorization use the efficientnet space instead", e)
                self._default = "efficientnet"
        return self._default

    def release(self, space: str) -> None:
        """Done with ``space``: close its embedder if we built it."""
        if space in self.built and self.owned(space):
            self.built.pop(space).close()
        else:
            self.built.pop(space, None)

    def close(self) -> None:
        for space, emb in list(self.built.items()):
            if self.owned(space):
                emb.close()

    def record_error(self, metric: str, e: Exception) -> None:
        """A metric that could not be computed: raised with ``strict``, else logged and recorded."""
        if self.strict:
            raise e
        logger.warning("evaluate: %s not computed: %s", metric, e)
        self.errors[metric] = str(e)


def evaluate(
    real: str | os.PathLike | Sequence[Image.Image] | Any,
    synthetic: str | os.PathLike | Sequence[Image.Image],
    *,
    metrics: Sequence[str] = ("fid", "prdc", "memorization"),
    embedders: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 32,
    max_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    prdc_space: str | None = None,
    nearest_k: int = 5,
    memorization_space: str | None = None,
    memorization_threshold: float = 0.5,
    memorization_percentile: float = 50.0,
    captions: Sequence[str] | None = None,
    strict: bool = False,
    seed: int = 0,
    real_labelled: Any = None,
    real_train: Any = None,
    synthetic_labels: Sequence[str | None] | None = None,
    accuracy_on_private: bool = False,
    accuracy_space: str | None = None,
    accuracy_ceiling: bool = True,
    cnn: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute ``metrics`` of ``synthetic`` against ``real`` and return them as a JSON-ready dict.

    ``real``: the private images, as a path that :func:`spti.data.images.ingest` reads (folder, ImageFolder
    or listing; verified and deduplicated like the pipeline does), an ``IngestResult`` or list of
    ``ImageRecord`` (the run's ``private/ingest.jsonl``: nothing is decoded twice), or a list of PIL
    images. ``synthetic``: a folder of images (read recursively) or a list of PIL images; a folder that is
    a release (``metadata.jsonl`` next to ``images/``, or a run folder with ``release/``)
    is read through its metadata, which also supplies the captions for ``clip-score``; with a list of
    images pass ``captions``. ``embedders`` maps a feature space ("inception", "dinov2", "clip",
    "efficientnet" or a new name usable as ``prdc_space``) to an embedder config (``{"backend": ...,
    ...}``, a backend name or ``"pkg.mod:Class"``) or to a ready :class:`ImageEmbedder`; spaces not given
    use :data:`FEATURE_SPACES`. Features are cached under ``cache_dir`` per (embedder ``cache_key``,
    content sha256) when it is given (the cache holds private embeddings: keep it private).

    With ``strict=False`` a metric whose model cannot be loaded is recorded under ``"errors"`` (and
    logged) instead of aborting the others: evaluation runs after hours of generation and should not
    throw the rest away. ``out`` (a folder, or a path ending in ``.json``) receives the result as
    ``metrics.json``, atomically, replacing any file there: this function never merges into a file
    another writer owns (a run's ``metrics.json`` is written by the pipeline's evaluate stage).

    Accuracy (``accuracy`` = ``accuracy-linear`` + ``accuracy-cnn``): classifiers trained on the labelled
    synthetic images (a release's ``label`` column, an ImageFolder's sub-folders, or ``synthetic_labels``
    with a list of images) and tested on ``real_labelled`` (a path read by
    :func:`~spti.metrics.labelled.read_labelled`, or a ``LabelledImages``; default: ``real`` when it is a
    path). Without ``real_train`` the real labelled set is split into two stratified halves: the ceiling
    (the classifier trained on real images, ``accuracy_ceiling``) learns on one, everything is tested on the
    other. The run's private images are used only with ``accuracy_on_private``. ``cnn`` overrides
    :data:`~spti.metrics.accuracy.CNN_DEFAULTS` (``epochs``, ``resolution``, ``batch_size``, ``lr``,
    ``device``, ``threads``); ``accuracy_space`` is the linear probe's feature space (default: as PRDC's).
    """
    metrics = expand_accuracy(list(dict.fromkeys(metrics)))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 2:
        raise ConfigError(f"max_images must be >= 2 (or None for all), got {max_images}")

    space_cfg: dict[str, Any] = dict(FEATURE_SPACES)
    for k, v in (embedders or {}).items():
        space_cfg[SPACE_ALIASES.get(k, k)] = v
    for name, val in (("prdc_space", prdc_space), ("memorization_space", memorization_space),
                      ("accuracy_space", accuracy_space)):
        if val is not None and SPACE_ALIASES.get(val, val) not in space_cfg:
            raise ConfigError(f"{name}={val!r} is not a feature space; known: {', '.join(sorted(space_cfg))}")

    # the private set is read only for a metric that compares with it (accuracy has its own real set)
    need_real = any(m not in ACCURACY_METRICS for m in metrics)
    if need_real and real is None:
        raise ConfigError(f"real images are needed for {', '.join(m for m in metrics if m not in ACCURACY_METRICS)}")
    real_set = subset(_real_set(real), max_images, seed) if need_real else None
    syn_all = synthetic_set(synthetic, captions)
    if synthetic_labels is not None:
        if len(synthetic_labels) != len(syn_all):
            raise InputError(f"{len(synthetic_labels)} synthetic_labels for {len(syn_all)} synthetic images")
        syn_all.labels = [None if lb is None else str(lb) for lb in synthetic_labels]
    syn_set = subset(syn_all, max_images, seed + 1)

    result: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **NOT_DP,
        "real": (
            {"source": str(real_set.source), "n_images": len(real_set), **real_set.info}
            if real_set is not None
            else {"source": str(real) if isinstance(real, (str, os.PathLike)) else "<not read>",
                  "not_read": "only accuracy metrics were asked: see real_labelled"}
        ),
        "synthetic": {"source": str(syn_set.source), "n_images": len(syn_set)},
        "metrics": {},
        "errors": {},
        "skipped": {},
    }
    try:
        from spti._version import __version__

        result["spti_version"] = __version__
    except ImportError:  # pragma: no cover
        pass

    models = _Embedders(space_cfg, strict=strict, errors=result["errors"])
    metric_space: dict[str, str] = {m: s for m, s in FD_METRICS.items() if m in metrics}
    if "prdc" in metrics:
        metric_space["prdc"] = (
            SPACE_ALIASES.get(prdc_space, prdc_space) if prdc_space else models.default_space()
        )
    if "memorization" in metrics:
        if memorization_space:
            metric_space["memorization"] = SPACE_ALIASES.get(memorization_space, memorization_space)
        else:
            metric_space["memorization"] = metric_space.get("prdc") or models.default_space()
    clip_captions: list[str] | None = None
    if "clip-score" in metrics:
        reason = None
        if "clip" not in (embedders or {}) and "fd-clip" not in metrics:
            reason = "no CLIP model configured (give embedders={'clip': ...})"
        elif syn_set.captions is None or any(c is None for c in syn_set.captions):
            reason = "no captions for the synthetic images (metadata.jsonl with 'text', or captions=)"
        if reason:
            result["skipped"]["clip-score"] = reason
            logger.info("evaluate: clip-score skipped: %s", reason)
        else:
            metric_space["clip-score"] = "clip"
            clip_captions = [c or "" for c in (syn_set.captions or [])]
    acc_metrics = [m for m in metrics if m in ACCURACY_METRICS]
    plan = None
    if acc_metrics:
        plan = _accuracy_plan(acc_metrics, real, real_labelled, real_train, syn_set, models, result,
                              on_private=accuracy_on_private, ceiling=accuracy_ceiling, seed=seed)
        if plan is None:
            acc_metrics = []
        elif "accuracy-linear" in acc_metrics:
            metric_space["accuracy-linear"] = (
                SPACE_ALIASES.get(accuracy_space, accuracy_space) if accuracy_space
                else metric_space.get("prdc") or models.default_space()
            )

    feats: dict[tuple[str, str], tuple[np.ndarray, list[int]]] = {}
    clip_text_score: float | None = None
    spaces = list(dict.fromkeys(metric_space.values()))
    try:
        for space in spaces:
            users = [m for m, s in metric_space.items() if s == space]
            try:
                emb = models.get(space)
                cache = open_feature_cache(cache_dir, emb)
                if real_set is not None and any(m not in ("clip-score", *ACCURACY_METRICS) for m in users):
                    feats[(space, "real")] = embed_set(
                        emb, real_set, batch_size=batch_size, cache=cache, desc=f"real/{space}"
                    )
                if plan is not None and "accuracy-linear" in users:
                    feats[(space, "labelled")] = embed_set(
                        emb, plan.test.images, batch_size=batch_size, cache=cache, desc=f"real labelled/{space}"
                    )
                    if plan.ceiling_train is not None:
                        feats[(space, "labelled-train")] = embed_set(
                            emb, plan.ceiling_train.images, batch_size=batch_size, cache=cache,
                            desc=f"real labelled train/{space}",
                        )
                feats[(space, "synthetic")] = embed_set(
                    emb, syn_set, batch_size=batch_size, cache=cache, desc=f"synthetic/{space}"
                )
                if "clip-score" in users and clip_captions is not None:
                    if not callable(getattr(emb, "embed_text", None)):
                        result["skipped"]["clip-score"] = (
                            f"the {space!r} embedder ({getattr(emb, 'backend_name', '?')}) has no embed_text()"
                        )
                    else:
                        f, kept = feats[(space, "synthetic")]
                        clip_text_score = clip_score(emb, f, [clip_captions[i] for i in kept])
            except SptiError as e:
                for m in users:
                    models.record_error(m, e)
            finally:
                models.release(space)  # free GPU memory before the next model loads

        for m, space in metric_space.items():
            if m in result["errors"]:
                continue
            if m == "accuracy-linear":
                try:
                    result["metrics"][m] = _linear_entry(feats, space, plan, syn_set, models.infos.get(space, {}))
                except SptiError as e:
                    models.record_error(m, e)
                continue
            try:
                entry = metric_entry(
                    m,
                    space,
                    feats,
                    models.infos.get(space, {}),
                    real_set=real_set,
                    syn_set=syn_set,
                    nearest_k=nearest_k,
                    threshold=memorization_threshold,
                    percentile=memorization_percentile,
                    clip_score=clip_text_score,
                )
            except SptiError as e:
                models.record_error(m, e)
                continue
            if entry is not None:
                result["metrics"][m] = entry
        if plan is not None and "accuracy-cnn" in acc_metrics:
            try:
                result["metrics"]["accuracy-cnn"] = _cnn_entry(plan, syn_set, dict(cnn or {}), seed)
            except SptiError as e:
                models.record_error("accuracy-cnn", e)
    finally:
        models.close()

    if real_set is not None:
        result["real"]["n_unreadable"] = len(real_set.bad)
    result["synthetic"]["n_unreadable"] = len(syn_set.bad)
    for k in ("errors", "skipped"):
        if not result[k]:
            del result[k]

    if out is not None:
        from spti.data.io import atomic_write_json

        path = _resolve_out(out)
        atomic_write_json(path, result)
        logger.info("evaluate: wrote %s", path)
    return result


def _accuracy_plan(names: Sequence[str], real: Any, real_labelled: Any, real_train: Any, syn_set: Any,
                   models: _Embedders, result: dict[str, Any], *, on_private: bool, ceiling: bool,
                   seed: int) -> Any:
    """The accuracy metrics' real sets (recorded as ``result["real_labelled"]``), or None with the reason
    recorded under ``skipped`` (no labels, no real labelled set) or ``errors`` (an unreadable set)."""
    from spti.metrics.accuracy import accuracy_plan

    if syn_set.labels is None or all(lb is None for lb in syn_set.labels):
        reason = "the synthetic images have no labels (a release's metadata.jsonl 'label' column, or ImageFolder)"
    else:
        try:
            plan = accuracy_plan(real, real_labelled, real_train, on_private=on_private, ceiling=ceiling, seed=seed)
        except SptiError as e:
            for m in names:
                models.record_error(m, e)
            return None
        if not isinstance(plan, str):
            result["real_labelled"] = plan.describe()
            return plan
        reason = plan
    for m in names:
        result["skipped"][m] = reason
    logger.info("evaluate: accuracy skipped: %s", reason)
    return None


def _labels_at(labels: Sequence[Any], kept: Sequence[int]) -> list[Any]:
    return [labels[i] for i in kept]


def _linear_entry(feats: Mapping[tuple[str, str], tuple[np.ndarray, list[int]]], space: str, plan: Any,
                  syn_set: Any, info: dict[str, Any]) -> dict[str, Any]:
    from spti.metrics.accuracy import accuracy_entry, fit_linear_probe, linear_description

    sx, skept = feats[(space, "synthetic")]
    tx, tkept = feats[(space, "labelled")]
    ceiling = None
    if plan.ceiling_train is not None and (space, "labelled-train") in feats:
        cx, ckept = feats[(space, "labelled-train")]
        ceiling = (cx, _labels_at(plan.ceiling_train.labels, ckept))
    return accuracy_entry(
        linear_description(space), fit_linear_probe, (sx, _labels_at(syn_set.labels, skept)),
        (tx, _labels_at(plan.test.labels, tkept)), ceiling, plan, {"feature_space": space, "embedder": info},
    )


def _cnn_entry(plan: Any, syn_set: Any, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    from spti.metrics.accuracy import CNN_DEFAULTS, accuracy_entry, cnn_description, fit_cnn
    from spti.metrics.labelled import load_pixels

    o = {**CNN_DEFAULTS, **opts}
    res = int(o["resolution"])
    if res < 8 or res % 8:
        raise ConfigError(f"accuracy-cnn: resolution must be a multiple of 8, got {res}")

    def fit(x: np.ndarray, y: np.ndarray, k: int) -> Any:
        return fit_cnn(x, y, k, epochs=int(o["epochs"]), batch_size=int(o["batch_size"]), lr=float(o["lr"]),
                       seed=seed, device=o.get("device"), threads=o.get("threads"))

    sx, skept = load_pixels(syn_set, res)
    tx, tkept = plan.test.pixels(res)
    ceiling = None
    if plan.ceiling_train is not None:
        cx, ckept = plan.ceiling_train.pixels(res)
        ceiling = (cx, _labels_at(plan.ceiling_train.labels, ckept))
    device = o.get("device")
    if device is None:
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    return accuracy_entry(
        cnn_description(int(o["epochs"]), res), fit, (sx, _labels_at(syn_set.labels, skept)),
        (tx, _labels_at(plan.test.labels, tkept)), ceiling, plan,
        {"cnn": {"epochs": int(o["epochs"]), "resolution": res, "batch_size": int(o["batch_size"]),
                 "lr": float(o["lr"]), "device": device, "seed": seed}},
    )


def _safe_info(embedder: Any) -> dict[str, Any]:
    try:
        info = embedder.info()
    except Exception as e:  # info() is for the record; a failure there must not lose the metric
        return {"backend": getattr(embedder, "backend_name", "?"), "info_error": str(e)}
    return dict(info) if isinstance(info, Mapping) else {"info": str(info)}


def _resolve_out(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p if p.suffix.lower() == ".json" else p / "metrics.json"
