"""The metrics :func:`~spti.metrics.evaluate.evaluate` knows, the feature space each one uses, and how one
metric entry of ``metrics.json`` is built from already computed features.

Why apart from ``evaluate()``: the table of metrics and spaces is what a reader (and the pipeline, which
picks an evaluation space) looks up; the entries are pure functions of feature matrices, testable without
any model. Every entry computed against private data carries :data:`NOT_DP`, so that a number copied out of
the file keeps its warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spti.errors import BackendError, ConfigError, SptiError
from spti.metrics.accuracy import ACCURACY_METRICS
from spti.metrics.imagesets import ImageSet, display_name

__all__ = [
    "FD_METRICS",
    "FEATURE_SPACES",
    "METRICS",
    "NOT_DP",
    "SPACE_ALIASES",
    "clip_score",
    "metric_entry",
]

NOT_DP: dict[str, Any] = {
    "differentially_private": False,
    "note": "computed against private data — do not publish",
}

#: Default embedder config for each feature space (``embedders`` overrides or adds spaces).
FEATURE_SPACES: dict[str, dict[str, Any]] = {
    "inception": {"backend": "inception"},
    "dinov2": {"backend": "dinov2"},
    "clip": {"backend": "clip"},
    "efficientnet": {"backend": "efficientnet-lite0"},
}
#: Other names of a feature space (a backend name used as a space name).
SPACE_ALIASES = {"efficientnet-lite0": "efficientnet"}

#: Fréchet-distance metrics and their feature space.
FD_METRICS = {
    "fid": "inception",
    "fd-dinov2": "dinov2",
    "fd-clip": "clip",
    "fd-efficientnet": "efficientnet",
}
#: ``accuracy`` is both accuracy metrics (see :mod:`spti.metrics.accuracy`).
METRICS = (*FD_METRICS, "prdc", "clip-score", "memorization", "accuracy", *ACCURACY_METRICS)

#: Features of a set in a space: (space, "real" | "synthetic") -> (matrix, indices of the readable images).
Features = Mapping[tuple[str, str], tuple[np.ndarray, list[int]]]


def metric_entry(
    metric: str,
    space: str,
    feats: Features,
    info: dict[str, Any],
    *,
    real_set: ImageSet,
    syn_set: ImageSet,
    nearest_k: int,
    threshold: float,
    percentile: float,
    clip_score: float | None,
) -> dict[str, Any] | None:
    """One metric entry (value + provenance + the not-DP marks) from already computed features; None for a
    clip-score that could not be computed."""
    syn_f, syn_kept = feats[(space, "synthetic")]
    base: dict[str, Any] = {
        "feature_space": space,
        "embedder": info,
        "n_synthetic": len(syn_kept),
    }
    if metric == "clip-score":
        if clip_score is None:
            return None
        return {
            "value": clip_score,
            "definition": "mean over images of max(100 * cos(CLIP image, CLIP caption), 0)",
            **base,
            "differentially_private": False,
            "computed_against_private_data": False,
            "note": "uses only the synthetic images and their captions; listed in metrics.json, which as a "
            "whole is not differentially private",
        }
    real_f, real_kept = feats[(space, "real")]
    base["n_real"] = len(real_kept)
    if metric in FD_METRICS:
        entry = _fd_entry(metric, real_f, syn_f, info, base)
    elif metric == "prdc":
        from spti.metrics.prdc import prdc

        r = prdc(real_f, syn_f, nearest_k=nearest_k)
        entry = {k: r[k] for k in ("precision", "recall", "density", "coverage", "nearest_k")} | base
    elif metric == "memorization":
        entry = (
            _memorization_entry(real_f, syn_f, real_set, syn_set, real_kept, syn_kept, threshold, percentile)
            | base
        )
    else:  # pragma: no cover - guarded by METRICS
        raise ConfigError(f"unknown metric {metric!r}")
    return {**entry, **NOT_DP}


def _fd_entry(
    metric: str, real_f: np.ndarray, syn_f: np.ndarray, info: Mapping[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    from spti.metrics.frechet import fid_from_features

    e: dict[str, Any] = {"value": fid_from_features(real_f, syn_f), **base}
    if metric == "fid":
        e = {
            "value": e["value"],
            "implementation": "spti/clean-fid-protocol",
            "mode": "clean",
            "weights_sha256": _find_key(info, "weights_sha256", "sha256", contains="sha256"),
            "resolution": _find_key(info, "resolution", "image_size", "input_size", contains="resolution"),
            **base,
        }
    n_real, n_syn = base["n_real"], base["n_synthetic"]
    if n_real != n_syn:
        # FID is biased by sample size: papers compare sets of equal size (or a fixed count).
        e["warning"] = (
            f"{n_real} real vs {n_syn} synthetic images: FID depends on the number of "
            "images; compare FIDs only at equal counts (use max_images / --max-images)"
        )
    return e


def _memorization_entry(
    real_f: np.ndarray,
    syn_f: np.ndarray,
    real_set: ImageSet,
    syn_set: ImageSet,
    real_kept: list[int],
    syn_kept: list[int],
    threshold: float,
    percentile: float,
) -> dict[str, Any]:
    from spti.metrics.memorization import memorization_audit

    res = memorization_audit(real_f, syn_f, threshold=threshold, reference_percentile=percentile)
    d = res.to_dict()
    # Feature rows -> image indices/files (unreadable images were dropped from the features).
    d["flagged"] = [syn_kept[i] for i in d["flagged"]]
    d["nn_index"] = [real_kept[j] for j in d["nn_index"]]
    d["synthetic_files"] = [syn_set.names[i] for i in syn_kept]
    for p in d["closest_pairs"]:
        si, pj = syn_kept[p["synthetic"]], real_kept[p["private"]]
        p["synthetic"], p["private"] = si, pj
        p["synthetic_file"] = syn_set.names[si]  # relative to the release folder
        p["synthetic_path"] = display_name(syn_set, si)
        p["private_file"] = display_name(real_set, pj)
    d["flagged_files"] = [syn_set.names[i] for i in d["flagged"]]
    return d


def _find_key(d: Mapping[str, Any], *candidates: str, contains: str | None = None) -> Any:
    """The first of ``candidates`` set in ``d``, else the first key containing ``contains``."""
    for k in candidates:
        if d.get(k) is not None:
            return d[k]
    if contains:
        for k, v in d.items():
            if contains in str(k).lower() and v is not None:
                return v
    return None


def clip_score(embedder: Any, img_feats: np.ndarray, captions: list[str]) -> float:
    """CLIP score as in torchmetrics / Hessel et al. 2021 with w=100: mean of max(100·cos(image, text), 0)."""
    try:
        txt = np.asarray(embedder.embed_text(captions), dtype=np.float64)
    except SptiError:
        raise
    except Exception as e:  # a backend bug: name the backend, keep the cause
        raise BackendError(f"clip-score: embed_text of {embedder.backend_name!r} failed: {e}") from e
    img = np.asarray(img_feats, dtype=np.float64)
    if txt.shape != img.shape:
        raise BackendError(
            f"clip-score: text features {txt.shape} do not match image features {img.shape}; the clip "
            "embedder's embed() and embed_text() must return the same joint space"
        )
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    txt = txt / np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("ij,ij->i", img, txt)
    return float(np.mean(np.maximum(100.0 * cos, 0.0)))
