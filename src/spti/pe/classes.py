"""Class-conditional voting: every private row votes only among its own class's candidates.

Why this costs no extra privacy (parallel composition): each private row still gives its weight to exactly
one bin of the ONE vote vector of an iteration (the concatenation of the per-class histograms), so a
record (or a user, whose rows share weight <= 1 even when they lie in several classes) still moves that
vector by at most 1 in L1 and hence in L2. The engine adds noise once to the whole vector
(:func:`spti.pe.histogram.release_histogram`), exactly as in an unlabelled run.

A private row whose class has no candidate in the iteration (the class was given no population: its DP
class size was 0) does not vote at all; dropping a vote never raises the sensitivity.

The per-class votes are computed by the real :func:`~spti.pe.histogram.vote_histogram` on a lazy view of
the class's rows, so a memory-mapped private feature array is still read one chunk at a time (a cluster
backend, ``pe.nn_backend: ray``, gets the rows of one class at a time as an array).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spti.errors import InputError
from spti.log import progress
from spti.pe.histogram import vote_histogram


class _RowView:
    """Rows ``index`` of ``base`` as an array-like that :func:`~spti.pe.histogram.nearest_candidates` can
    read chunk by chunk (``shape`` and slicing): only a chunk of rows is ever copied out of a memmap."""

    def __init__(self, base: np.ndarray, index: np.ndarray):
        self.base = base
        self.index = index
        self.shape = (int(index.shape[0]),) + tuple(base.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("a row view is read by slices")
        return np.asarray(self.base[self.index[key]])


def class_vote_histogram(
    private_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    private_labels: np.ndarray,
    candidate_labels: np.ndarray,
    weights: np.ndarray | None = None,
    chunk_size: int = 4096,
    backend: str = "auto",
    normalize: bool = True,
    show_progress: bool = True,
    **vote_options: Any,
) -> np.ndarray:
    """The (noise-free, PRIVATE) vote vector over all candidates, each private row voting for its nearest
    candidate *of its own class*: ``counts[j]`` = total weight of the rows of class ``candidate_labels[j]``
    whose nearest candidate of that class is j. Rows of a class without candidates do not vote.

    Same arguments as :func:`~spti.pe.histogram.vote_histogram` (``vote_options``: its ``device`` /
    ``ray_options``), plus the class index of every private row and of every candidate. Never release the
    result without noise.
    """
    n = private_features.shape[0]
    m = candidate_features.shape[0]
    private_labels = np.asarray(private_labels, dtype=np.int64)
    candidate_labels = np.asarray(candidate_labels, dtype=np.int64)
    if private_labels.shape != (n,):
        raise InputError(f"private labels must have shape ({n},), got {private_labels.shape}")
    if candidate_labels.shape != (m,):
        raise InputError(f"candidate labels must have shape ({m},), got {candidate_labels.shape}")
    if m == 0:
        raise InputError("no candidates to vote for")
    w = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {w.shape}")
    counts = np.zeros(m, dtype=np.float64)
    classes = np.unique(candidate_labels).tolist()
    for c in progress(classes, desc="voting (per class)", total=len(classes)) if show_progress else classes:
        rows = np.flatnonzero(private_labels == c)
        if rows.size == 0:
            continue  # nobody of this class: its candidates get only noise
        cands = np.flatnonzero(candidate_labels == c)
        # a lazy view for the in-process backends; a cluster backend ships real arrays: one class at a time
        queries = np.asarray(private_features[rows]) if str(backend).startswith("ray") else _RowView(private_features, rows)
        counts[cands] = vote_histogram(
            queries, candidate_features[cands], weights=w[rows], chunk_size=chunk_size,
            backend=backend, normalize=normalize, show_progress=False, **vote_options,
        )
    return counts
