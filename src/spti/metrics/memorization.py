"""Memorization audit: is any synthetic image suspiciously close to one private image?

DP bounds what the *release* can reveal, but a bug (noise off, a private caption leaking into a prompt, a
renderer that memorised its own training data) shows up as synthetic images that are near-copies of
private ones. For every synthetic image we take the L2 distance (in an image-feature space) to its
nearest private image and compare it with how close private images are to *each other*: the distribution
of private-to-private nearest-neighbour distances (each private image against all the others).

The score is ``ratio = d_nn(synthetic) / reference``, where ``reference`` is the median (or another
percentile) of the private-to-private NN distances. A synthetic image is *flagged* when ``ratio <
threshold``. The default threshold 0.5 means: "this synthetic image is closer to a private image than
half the distance at which a typical private image finds its nearest other private image". Independent
samples from the same distribution sit around ratio ≈ 1 (a bit above, in high dimensions NN distances
concentrate); an exact copy has ratio 0. Lower the threshold to flag only near-duplicates, raise it (or
use a low ``reference_percentile``) to inspect more pairs. The audit is a heuristic on top of DP, not a
privacy guarantee, and it is itself computed against private data (not differentially private).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.metrics.prdc import DEFAULT_CHUNK, kth_nn_distances, nearest_neighbour

__all__ = ["MemorizationResult", "memorization_audit", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.5


@dataclass
class MemorizationResult:
    """Per-synthetic nearest-private distances and what they mean relative to the private set."""

    nn_distance: np.ndarray  # (n_synthetic,) distance to nearest private image
    nn_index: np.ndarray  # (n_synthetic,) index of that private image
    ratio: np.ndarray  # nn_distance / reference_distance
    private_nn_distance: np.ndarray  # (n_private,) private-to-private NN distances (self excluded)
    reference_distance: float
    reference_percentile: float
    threshold: float
    flagged: list[int] = field(default_factory=list)  # synthetic indices with ratio < threshold
    closest_pairs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, *, per_image: bool = True) -> dict[str, Any]:
        """JSON-ready summary for metrics.json (``per_image`` adds the per-synthetic arrays)."""
        q = np.percentile(self.private_nn_distance, [5, 25, 50, 75, 95])
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "reference": f"percentile {self.reference_percentile:g} of private-to-private NN distances",
            "reference_percentile": self.reference_percentile,
            "reference_distance": self.reference_distance,
            "private_nn_distance_quantiles": {
                "p5": float(q[0]),
                "p25": float(q[1]),
                "p50": float(q[2]),
                "p75": float(q[3]),
                "p95": float(q[4]),
            },
            "n_private": int(self.private_nn_distance.shape[0]),
            "n_synthetic": int(self.nn_distance.shape[0]),
            "n_flagged": len(self.flagged),
            "fraction_flagged": len(self.flagged) / max(1, self.nn_distance.shape[0]),
            "min_ratio": float(self.ratio.min()) if self.ratio.size else None,
            "median_ratio": float(np.median(self.ratio)) if self.ratio.size else None,
            "flagged": list(self.flagged),
            "closest_pairs": [dict(p) for p in self.closest_pairs],
        }
        if per_image:
            out["nn_distance"] = [float(v) for v in self.nn_distance]
            out["nn_index"] = [int(v) for v in self.nn_index]
            out["ratio"] = [_finite_or_none(v) for v in self.ratio]
        return out


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def memorization_audit(
    private: np.ndarray,
    synthetic: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    reference_percentile: float = 50.0,
    n_closest: int = 16,
    chunk_size: int = DEFAULT_CHUNK,
) -> MemorizationResult:
    """Audit ``synthetic`` features (m, d) against ``private`` features (n, d); see the module docstring.

    ``closest_pairs`` lists the ``n_closest`` synthetic images with the smallest ratio (flagged or not) as
    ``{"synthetic": i, "private": j, "distance": d, "ratio": r, "flagged": bool}``, for the report.
    """
    private = np.asarray(private, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    if private.ndim != 2 or synthetic.ndim != 2:
        raise InputError(f"features must be 2-d arrays, got {private.shape} and {synthetic.shape}")
    if private.shape[1] != synthetic.shape[1]:
        raise InputError(
            f"private and synthetic features differ in dimension: {private.shape[1]} vs {synthetic.shape[1]}"
        )
    if private.shape[0] < 2:
        raise InputError(f"the memorization audit needs at least 2 private images, got {private.shape[0]}")
    if synthetic.shape[0] < 1:
        raise InputError("the memorization audit needs at least 1 synthetic image")
    if not (np.isfinite(private).all() and np.isfinite(synthetic).all()):
        raise InputError("features contain NaN or infinite values")
    if not 0.0 < threshold:
        raise InputError(f"memorization threshold must be > 0, got {threshold}")
    if not 0.0 <= reference_percentile <= 100.0:
        raise InputError(f"reference_percentile must be in [0, 100], got {reference_percentile}")

    private_nn, _ = kth_nn_distances(private, 1, chunk_size=chunk_size)
    nn_dist, nn_idx = nearest_neighbour(synthetic, private, chunk_size=chunk_size)
    reference = float(np.percentile(private_nn, reference_percentile))
    if reference > 0:
        ratio = nn_dist / reference
    else:
        # The private set is mostly duplicates: any positive distance is "far", only zero is a copy.
        ratio = np.where(nn_dist > 0, np.inf, 0.0)
    flagged = [int(i) for i in np.flatnonzero(ratio < threshold)]
    order = np.argsort(ratio, kind="stable")[: max(0, n_closest)]
    pairs = [
        {
            "synthetic": int(i),
            "private": int(nn_idx[i]),
            "distance": float(nn_dist[i]),
            "ratio": _finite_or_none(ratio[i]),
            "flagged": bool(ratio[i] < threshold),
        }
        for i in order
    ]
    return MemorizationResult(
        nn_distance=nn_dist,
        nn_index=nn_idx,
        ratio=ratio,
        private_nn_distance=private_nn,
        reference_distance=reference,
        reference_percentile=float(reference_percentile),
        threshold=float(threshold),
        flagged=flagged,
        closest_pairs=pairs,
    )
