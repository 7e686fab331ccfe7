"""Features of an :class:`~spti.metrics.imagesets.ImageSet` in one embedder's space, through the run's
:class:`~spti.data.cache.FeatureCache`.

Why a cache: evaluation runs after every PE iteration and again at the end, always against the same
private images; each image (private or synthetic) is embedded once per embedder, keyed by the sha256 of its
content, whatever the file is called. The cache holds embeddings of private images: it must stay with the
private run data (``<run>/private/eval-cache/``), never in ``release/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from spti.data.cache import FeatureCache
from spti.errors import BackendError, InputError, SptiError
from spti.hashing import content_key
from spti.log import logger, progress
from spti.metrics.imagesets import ImageSet

__all__ = ["embed_set", "open_feature_cache"]


def open_feature_cache(cache_dir: str | os.PathLike[str] | None, embedder: Any) -> FeatureCache | None:
    """The on-disk feature cache of ``embedder`` under ``cache_dir`` (one namespace per embedder
    ``cache_key``), or None without a ``cache_dir``."""
    if cache_dir is None:
        return None
    return FeatureCache(Path(cache_dir), f"image-features-{embedder.cache_key}")


def embed_set(
    embedder: Any, s: ImageSet, *, batch_size: int, cache: FeatureCache | None, desc: str
) -> tuple[np.ndarray, list[int]]:
    """Features of every readable image of ``s`` and the indices they belong to. Each batch computed is
    stored in ``cache`` at once, so an interrupted evaluation keeps what it embedded."""
    key = embedder.cache_key
    feats: dict[int, np.ndarray] = {}
    keys: dict[int, str] = {}
    todo: list[int] = []
    for i in range(len(s)):
        if cache is not None:
            try:
                keys[i] = content_key(key, s.content_hash(i))
            except OSError:
                s.bad.add(i)
                continue
            v = cache.get(keys[i])
            if v is not None:
                feats[i] = v
                continue
        todo.append(i)
    if feats:
        logger.info("evaluate: %d/%d %s features from the cache", len(feats), len(s), desc)
    batches = [todo[j : j + batch_size] for j in range(0, len(todo), batch_size)]
    remote = _remote_batches(embedder, s, batches, batch_size, desc) if _is_remote(embedder) else None
    for batch in progress(batches, desc=desc, total=len(batches), unit="batch") if remote is None else remote:
        if remote is None:
            imgs, idx = [], []
            for i in batch:
                im = s.load(i)
                if im is not None:
                    imgs.append(im)
                    idx.append(i)
            if not imgs:
                continue
            out = _embed_batch(embedder, imgs)
        else:
            idx, out = batch
        for i, v in zip(idx, out):
            feats[i] = v
        if cache is not None:
            new = {keys[i]: v for i, v in zip(idx, out)}  # an image repeated in the batch is stored once
            cache.put_many(list(new), np.stack(list(new.values())))
    kept = sorted(feats)
    if s.bad:
        # Counts only: the names of private files are private.
        logger.warning("evaluate: %d %s image(s) could not be read and were left out", len(s.bad), desc)
    if not kept:
        raise InputError(f"{desc}: none of the {len(s)} images could be read")
    dims = {feats[i].shape for i in kept}
    if len(dims) != 1:
        raise BackendError(f"{desc}: features of different shapes {sorted(dims)} (a stale cache entry?)")
    return np.stack([feats[i] for i in kept]).astype(np.float32, copy=False), kept


#: Batches sent to an executor's replicas per job (:func:`_remote_batches`): enough work for every replica,
#: few enough decoded images held on this process at once.
REMOTE_BATCHES_PER_JOB = 32


def _is_remote(embedder: Any) -> bool:
    from spti.executor import is_remote

    return is_remote(embedder)


def _remote_batches(embedder: Any, s: ImageSet, batches: list[list[int]], batch_size: int,
                    desc: str) -> Any:
    """``(indices, features)`` per batch of ``batches``, in order, for an embedder whose model lives on an
    executor's replicas (:class:`spti.executor.proxy.RemoteBackend`, e.g. on Ray). Images are decoded here
    as :meth:`ImageSet.load` decodes them (the same pixels as the local path), and
    :data:`REMOTE_BATCHES_PER_JOB` batches go to the replicas per job, where calling the proxy once per
    batch would start one job per batch. Each batch's features are checked as :func:`_embed_batch` checks
    them, and the caller caches them batch by batch, as it does locally."""
    import dataclasses

    from spti.executor import step_for

    ex, step = step_for("image_embedder", embedder, name=desc)
    step = dataclasses.replace(step, batch_size=batch_size)  # evaluation's batch size, not the backend's
    for g in range(0, len(batches), REMOTE_BATCHES_PER_JOB):
        group = []
        for batch in batches[g : g + REMOTE_BATCHES_PER_JOB]:
            imgs, idx = [], []
            for i in batch:
                im = s.load(i)
                if im is not None:
                    imgs.append(im)
                    idx.append(i)
            if imgs:
                group.append((idx, imgs))
        flat = [im for _, imgs in group for im in imgs]
        if not flat:
            continue
        rows = ex.map(step, flat, desc=desc)
        k = 0
        for idx, imgs in group:
            out = np.asarray(np.stack(rows[k : k + len(imgs)]), dtype=np.float32)
            k += len(imgs)
            if not np.isfinite(out).all():
                raise BackendError(f"image embedder {embedder.backend_name!r} returned NaN or infinite features")
            yield idx, out


def _embed_batch(embedder: Any, imgs: list[Any]) -> np.ndarray:
    """``embedder.embed(imgs)`` checked: one finite row per image; a failure names the backend."""
    try:
        out = np.asarray(embedder.embed(imgs), dtype=np.float32)
    except SptiError:
        raise
    except Exception as e:  # a backend bug or OOM: say which backend, keep the cause
        raise BackendError(f"image embedder {embedder.backend_name!r} failed on a batch: {e}") from e
    if out.ndim != 2 or out.shape[0] != len(imgs):
        raise BackendError(
            f"image embedder {embedder.backend_name!r} returned shape {out.shape} for {len(imgs)} images"
        )
    if not np.isfinite(out).all():
        raise BackendError(f"image embedder {embedder.backend_name!r} returned NaN or infinite features")
    return out
