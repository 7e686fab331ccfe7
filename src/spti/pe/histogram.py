"""Nearest-neighbour voting: every private sample gives its vote weight to its nearest candidate.

Sensitivity: with add/remove-one adjacency a record (or user) holds total weight <= 1 spread over its rows
(:func:`contribution_weights`), and each row's weight lands on exactly one bin, so adding or removing one
record changes the vote vector by at most 1 in L2 (and L1). The accountant in :mod:`spti.privacy` relies on
exactly this.

The release: :func:`release_histogram` is the ONE place where DP noise is added to a vote vector. The engine
draws every histogram through it, and the empirical audit (:mod:`spti.audit`) calls the same function, so
what is audited is what runs. :func:`vote_weights` gives the matching vote weights: real-valued
:func:`contribution_weights` for the Gaussian, integer :func:`~spti.privacy.discrete.grid_weights` on the
vote grid for the exact discrete Gaussian (whose sampler needs integer counts).

Scale: private features may be a memory-mapped (N, d) array with N = 300k; we process them in chunks of
``chunk_size`` rows, so memory is O(chunk × candidates), and each chunk is one BLAS matmul (or a faiss flat
search). No Python loop per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spti.errors import InputError
from spti.log import progress

if TYPE_CHECKING:  # pragma: no cover
    from spti.privacy.noise import NoiseSource


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-L2 rows as float32 (zero rows stay zero). Why: for unit vectors nearest-in-L2 equals largest
    inner product, one matmul and no square roots."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def contribution_weights(owners: Sequence | np.ndarray | None, n_rows: int) -> np.ndarray:
    """Vote weight of each row so that each owner (record or user) holds total weight exactly 1.

    ``owners[i]`` names the record/user that row i belongs to; None means one row per owner (weight 1).
    A user with 3 captions gives each 1/3: removing the user removes at most 1 unit of L2 mass.
    """
    if owners is None:
        return np.ones(n_rows, dtype=np.float64)
    owners = np.asarray(owners)
    if owners.shape[0] != n_rows:
        raise InputError(f"owners has {owners.shape[0]} entries for {n_rows} rows")
    _, inverse, counts = np.unique(owners, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].astype(np.float64)


def _faiss_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def nearest_candidates(
    queries: np.ndarray,
    keys: np.ndarray,
    *,
    chunk_size: int = 4096,
    backend: str = "numpy",
    normalize_queries: bool = False,
    show_progress: bool = True,
) -> np.ndarray:
    """Index of the L2-nearest key for every query row (ties -> lowest index).

    ``argmin ||q - k||² = argmax (q·k - ||k||²/2)``: one matmul per chunk whether or not the keys are unit
    vectors (lookahead means are not). ``backend="faiss"`` uses an exact flat L2 index. The keys (and the
    faiss index) are prepared once; queries are read, and normalised if asked, one chunk at a time, so a
    memory-mapped query array is never copied whole.
    """
    n = queries.shape[0]
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    out = np.empty(n, dtype=np.int64)
    if keys.shape[0] == 0:
        raise InputError("no candidates to vote for")
    if n and queries.shape[1] != keys.shape[1]:
        raise InputError(f"private features have dim {queries.shape[1]} but candidates have {keys.shape[1]}")
    starts = range(0, n, chunk_size)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatL2(keys.shape[1])
        index.add(keys)
        for s in progress(starts, desc="voting", total=len(starts)) if show_progress else starts:
            q = np.asarray(queries[s : s + chunk_size], dtype=np.float32)
            q = np.ascontiguousarray(normalize_rows(q) if normalize_queries else q)
            _, idx = index.search(q, 1)
            out[s : s + len(q)] = idx[:, 0]
        return out
    if backend != "numpy":
        raise ValueError(f"unknown nearest-neighbour backend {backend!r}")
    half_sq = 0.5 * np.einsum("ij,ij->i", keys, keys)
    for s in progress(starts, desc="voting", total=len(starts)) if show_progress else starts:
        q = np.asarray(queries[s : s + chunk_size], dtype=np.float32)
        if normalize_queries:
            q = normalize_rows(q)
        scores = q @ keys.T
        scores -= half_sq
        out[s : s + len(q)] = np.argmax(scores, axis=1)
        del scores  # free this chunk's (chunk x candidates) block before the next one is allocated
    return out


def vote_histogram(
    private_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    chunk_size: int = 4096,
    backend: str = "auto",
    normalize: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    """The (noise-free, PRIVATE) vote vector: ``counts[j]`` = total weight of private rows whose nearest
    candidate is j. Never release it without noise.

    ``normalize`` applies to the private rows (per chunk, so a memmap is never copied whole); candidate
    features are used as given (the caller normalises them, or passes lookahead means).
    """
    m = candidate_features.shape[0]
    n = private_features.shape[0]
    if weights is None:
        weights = np.ones(n, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {weights.shape}")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise InputError("vote weights must be finite and >= 0")
    if backend == "auto":
        backend = "numpy"  # measured: numpy BLAS >= faiss flat here (shared/FACTS.md)
    elif backend == "faiss" and not _faiss_available():
        raise InputError("pe.nn_backend 'faiss' needs faiss: pip install 'spti[faiss]'")
    idx = nearest_candidates(
        private_features, candidate_features, chunk_size=chunk_size, backend=backend,
        normalize_queries=normalize, show_progress=show_progress,
    )
    return np.bincount(idx, weights=weights, minlength=m).astype(np.float64)


def vote_weights(owners: Sequence | np.ndarray | None, n_rows: int, *, noise: str = "gaussian",
                 grid: int | None = None) -> np.ndarray:
    """Each row's vote weight for the noise kind a run uses: :func:`contribution_weights` (each owner's rows
    share weight 1) for ``"gaussian"``; for ``"discrete"`` the integer weights of
    :func:`spti.privacy.discrete.grid_weights` on the grid ``grid`` (each owner's rows share exactly
    ``grid``), so the counts are integers and :func:`release_histogram` divides them back by ``grid``."""
    if noise == "gaussian":
        return contribution_weights(owners, n_rows)
    if noise == "discrete":
        from spti.privacy.discrete import grid_weights

        return grid_weights(owners, n_rows, 1 if grid is None else grid).astype(np.float64)
    raise InputError(f"unknown noise kind {noise!r}; use 'gaussian' or 'discrete'")


def release_histogram(counts: np.ndarray, sigma: float, *, noise: NoiseSource, iteration: int,
                      kind: str = "gaussian", grid: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Add the DP noise to a (PRIVATE) vote vector: the only way spti turns votes into a release.

    ``kind="gaussian"``: ``counts + noise.gaussian(counts.shape, σ, iteration)`` (float64).
    ``kind="discrete"``: ``counts`` are the integer votes of :func:`vote_weights` on the grid ``grid``; the
    exact discrete Gaussian N_Z(0, (grid·σ)²) is added and the result divided by ``grid``
    (:func:`spti.privacy.discrete.add_discrete_noise`). Either way the noise multiplier per unit of vote
    weight is σ. ``counts`` may have any shape (the audit passes a batch of copies, one release per row).

    Returns ``(noisy, record)``: ``record`` says what was done (kind, σ, grid, whether the randomness was
    secure; for the discrete sampler the exact σ² and ρ), never the noise or the counts.
    """
    if kind == "gaussian":
        noisy = counts + noise.gaussian(counts.shape, sigma, iteration=iteration)
        return noisy, {"noise": "gaussian", "sigma": float(sigma), "secure": noise.secure}
    if kind == "discrete":
        from spti.privacy.discrete import add_discrete_noise

        return add_discrete_noise(counts, sigma, iteration=iteration, source=noise, scale=1 if grid is None else grid)
    raise InputError(f"unknown noise kind {kind!r}; use 'gaussian' or 'discrete'")
