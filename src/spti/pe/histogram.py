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
search, or a torch matmul on a GPU with the candidates resident there). No Python loop per sample. Across
machines: :func:`partial_votes` (one shard of rows) + :func:`sum_partials` / :func:`release_votes` (the
driver: sum, then noise once), run on Ray by :mod:`spti.scale.ray_voting` (``pe.nn_backend: ray``).

Reproducibility: fp32 scores depend on the BLAS's summation order (threads, chunk size, CPU or GPU), so a
near-tie could go either way depending on the machine. :func:`nearest_candidates` re-decides every row whose
best two scores are within a rigorous fp32 error bound in float64, so every backend, device, chunk size and
shard layout gives the same votes, and exact ties go to the lowest candidate index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
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


#: Unit roundoff of float32: every fp32 operation is exact up to a relative error of at most this.
_U32 = 2.0**-24
#: Backends of :func:`vote_histogram` (``pe.nn_backend``); "torch" takes ``torch:<device>``, "ray" takes
#: ``ray:<backend of each worker>``.
NN_BACKENDS = ("auto", "numpy", "faiss", "torch", "ray")


def _faiss_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


class _Keys:
    """The candidates, prepared once per vote: fp32 rows, ``||k||²/2`` (fp32, the numbers every backend
    subtracts) and the largest norm (float64, for the error bound)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.ascontiguousarray(keys, dtype=np.float32)
        self.m, self.d = self.keys.shape
        self.half_sq = 0.5 * np.einsum("ij,ij->i", self.keys, self.keys)
        norms = np.sqrt(np.einsum("ij,ij->i", self.keys, self.keys, dtype=np.float64)) if self.m else np.zeros(0)
        self.kmax = float(norms.max()) if self.m else 0.0

    def window(self, q: np.ndarray) -> np.ndarray:
        """Per query row, twice a rigorous bound on the fp32 error of a score ``q·k - ||k||²/2``.

        Why it is rigorous for every backend: a dot product of d terms summed in ANY order (BLAS blocking,
        threads, split-K on a GPU, FMA or not) is within γ_d·Σ|q_i k_i| <= γ_d·||q||·||k|| of the exact value
        (γ_n = n·u/(1 - n·u), Higham, Accuracy and Stability, §3.1); ``||k||²/2`` likewise, and the final
        subtraction adds one rounding. Two scores closer than twice that bound may be in the wrong order; any
        pair further apart is certainly in the right order. A factor 2 of slack on top covers the bound's
        second-order terms.
        """
        qn = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
        n = self.d + 2
        gamma = n * _U32 / (1.0 - n * _U32)
        return 4.0 * gamma * (qn * self.kmax + 0.5 * self.kmax * self.kmax)


def _exact_winners(q: np.ndarray, keys: _Keys, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> np.ndarray:
    """For each of ``n_rows`` query rows, the best of its listed candidates (pairs ``rows[i], cols[i]``) by the
    float64 score of the same fp32 inputs; ties -> lowest candidate index.

    Why float64 on a few pairs: the fp32 scores of these candidates are within rounding error of each other,
    so their fp32 order depends on how the BLAS (threads, chunk size, CPU or GPU) summed. The float64 score of
    the same fp32 vectors is ~10⁹ times more accurate and computed the same way by every backend, so every
    backend, shard layout and device votes for the same candidate. Pairs are scored in blocks of bounded
    size (many duplicate candidates can put hundreds in one row's window).
    """
    s = np.empty(rows.shape[0], dtype=np.float64)
    block = max(1, (1 << 21) // max(1, keys.d))
    for a in range(0, rows.shape[0], block):
        qa = q[rows[a : a + block]].astype(np.float64)
        ka = keys.keys[cols[a : a + block]].astype(np.float64)
        s[a : a + block] = np.einsum("ij,ij->i", qa, ka) - 0.5 * np.einsum("ij,ij->i", ka, ka)
    order = np.lexsort((cols, -s, rows))  # by row, then highest score, then lowest index
    r = rows[order]
    first = order[np.r_[True, r[1:] != r[:-1]]]
    out = np.zeros(n_rows, dtype=np.int64)
    out[rows[first]] = cols[first]
    return out


def _nearest_chunk_numpy(q: np.ndarray, keys: _Keys) -> np.ndarray:
    """Nearest candidate of each row of ``q`` (fp32 matmul), rows whose best two scores lie within the fp32
    error window re-decided by :func:`_exact_winners`."""
    scores = q @ keys.keys.T
    scores -= keys.half_sq
    idx = np.argmax(scores, axis=1)
    if keys.m > 1 and len(q):
        ar = np.arange(len(q))
        best = scores[ar, idx]
        scores[ar, idx] = -np.inf
        second = scores.max(axis=1)
        scores[ar, idx] = best
        win = keys.window(q)
        amb = np.flatnonzero(best.astype(np.float64) - second <= win)
        if amb.size:
            r, c = np.nonzero(scores[amb] >= (best[amb] - win[amb])[:, None])
            idx[amb] = _exact_winners(q[amb], keys, r, c, amb.size)
    del scores  # free this chunk's (chunk x candidates) block before the next one is allocated
    return idx


def torch_device(device: str | None = None) -> Any:
    """The torch device to vote on: ``device`` if given ("cpu", "cuda", "cuda:1", ...), else the current CUDA
    device when one is available, else the CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _ExactFp32Matmul:
    """Context: CUDA matmuls in IEEE fp32 (no TF32) while voting, restored afterwards.

    Why: TF32 keeps 10 mantissa bits, so its error exceeds the window of :meth:`_Keys.window` and a vote
    could silently change. torch has two APIs for the switch and refuses to mix them, so whichever the process
    already uses is the one set and restored here."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.restore: Any = None

    def __enter__(self) -> None:
        t = self.torch
        try:
            prev = t.get_float32_matmul_precision()  # raises when the per-backend API is in use
        except RuntimeError:
            m = t.backends.cuda.matmul
            prev_new = m.fp32_precision
            m.fp32_precision = "ieee"
            self.restore = lambda: setattr(m, "fp32_precision", prev_new)
            return
        t.set_float32_matmul_precision("highest")
        self.restore = lambda: t.set_float32_matmul_precision(prev)

    def __exit__(self, *exc: object) -> None:
        if self.restore is not None:
            self.restore()


def _nearest_torch(queries: Any, keys: _Keys, starts: Any, out: np.ndarray, *, chunk_size: int,
                   normalize_queries: bool, device: str | None) -> None:
    """The torch path of :func:`nearest_candidates`: candidates resident on the device, private rows streamed
    one chunk at a time. Same arithmetic as the numpy path (fp32 ``q·k - ||k||²/2``, the same fp32
    ``||k||²/2`` and the same normalised query rows, computed on the host), and the same near-tie rule, so
    the votes equal numpy's exactly."""
    import torch

    dev = torch_device(device)
    k = torch.from_numpy(keys.keys).to(dev)
    hs = torch.from_numpy(keys.half_sq).to(dev)
    guard = _ExactFp32Matmul(torch) if dev.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), guard:
        for s in starts:
            q = np.asarray(queries[s : s + chunk_size], dtype=np.float32)
            q = np.ascontiguousarray(normalize_rows(q) if normalize_queries else q)
            if not q.flags.writeable:  # a read-only memmap / object-store view: torch wants its own buffer
                q = q.copy()
            qt = torch.from_numpy(q)
            if dev.type == "cuda":
                qt = qt.pin_memory().to(dev, non_blocking=True)
            scores = qt @ k.T
            scores -= hs
            best, idx = scores.max(dim=1)
            if keys.m > 1 and len(q):
                col = idx[:, None]
                scores.scatter_(1, col, float("-inf"))
                second = scores.amax(dim=1)
                scores.scatter_(1, col, best[:, None])
                win = torch.from_numpy(keys.window(q)).to(dev)
                amb = torch.nonzero((best.double() - second.double()) <= win).flatten()
                idx_h = idx.cpu().numpy()
                if amb.numel():
                    thr = best[amb].double() - win[amb]
                    rc = torch.nonzero(scores[amb].double() >= thr[:, None]).cpu().numpy()
                    amb_h = amb.cpu().numpy()
                    idx_h[amb_h] = _exact_winners(q[amb_h], keys, rc[:, 0], rc[:, 1], amb_h.size)
            else:
                idx_h = idx.cpu().numpy()
            out[s : s + len(q)] = idx_h
            del scores


def _nearest_faiss(queries: Any, keys: _Keys, starts: Any, out: np.ndarray, *, chunk_size: int,
                   normalize_queries: bool) -> None:
    """The faiss path: an exact flat L2 index searched for the best two; rows whose two distances lie within
    faiss's own fp32 error window go through :func:`_nearest_chunk_numpy`, so the votes equal numpy's."""
    import faiss

    index = faiss.IndexFlatL2(keys.d)
    index.add(keys.keys)
    n_best = 2 if keys.m > 1 else 1
    n = keys.d + 2
    gamma = n * _U32 / (1.0 - n * _U32)
    for s in starts:
        q = np.asarray(queries[s : s + chunk_size], dtype=np.float32)
        q = np.ascontiguousarray(normalize_rows(q) if normalize_queries else q)
        dist, idx = index.search(q, n_best)
        best = idx[:, 0].astype(np.int64)
        if n_best == 2 and len(q):
            # faiss: ||q||² + ||k||² - 2 q·k in fp32; each term within γ of its size (slack 4 as above)
            qn = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
            win = 8.0 * gamma * (qn + keys.kmax) ** 2
            amb = np.flatnonzero(dist[:, 1].astype(np.float64) - dist[:, 0] <= win)
            if amb.size:
                best[amb] = _nearest_chunk_numpy(q[amb], keys)
        out[s : s + len(q)] = best


def nearest_candidates(
    queries: np.ndarray,
    keys: np.ndarray,
    *,
    chunk_size: int = 4096,
    backend: str = "numpy",
    normalize_queries: bool = False,
    show_progress: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """Index of the L2-nearest key for every query row; exact ties -> lowest index.

    ``argmin ||q - k||² = argmax (q·k - ||k||²/2)``: one fp32 matmul per chunk whether or not the keys are
    unit vectors (lookahead means are not). Rows whose two best fp32 scores are closer than the fp32 error
    bound (:meth:`_Keys.window`: near-ties, and exact ties such as duplicate candidates) are re-decided in
    float64 on those few candidates. Why: otherwise the vote of a near-tie depends on the BLAS's summation
    order, which changes with threads, chunk size, shard layout and device; with the re-decision numpy, torch
    (CPU or GPU), faiss, any ``chunk_size`` and any sharding give the same votes.

    ``backend``: "numpy" (BLAS), "faiss" (exact flat L2 index) or "torch" (``device``: "cpu", "cuda:1", ...;
    default the CUDA device when available). The keys are prepared once (resident on the torch device);
    queries are read, and normalised if asked, one chunk at a time, so a memory-mapped query array is never
    copied whole.
    """
    n = queries.shape[0]
    k = _Keys(keys)
    out = np.empty(n, dtype=np.int64)
    if k.m == 0:
        raise InputError("no candidates to vote for")
    if n and queries.shape[1] != k.d:
        raise InputError(f"private features have dim {queries.shape[1]} but candidates have {k.d}")
    starts = range(0, n, chunk_size)
    if show_progress:
        starts = progress(starts, desc="voting", total=len(starts))
    if backend == "numpy":
        for s in starts:
            q = np.asarray(queries[s : s + chunk_size], dtype=np.float32)
            out[s : s + len(q)] = _nearest_chunk_numpy(normalize_rows(q) if normalize_queries else q, k)
    elif backend == "torch":
        _nearest_torch(queries, k, starts, out, chunk_size=chunk_size, normalize_queries=normalize_queries,
                       device=device)
    elif backend == "faiss":
        _nearest_faiss(queries, k, starts, out, chunk_size=chunk_size, normalize_queries=normalize_queries)
    else:
        raise ValueError(f"unknown nearest-neighbour backend {backend!r}")
    return out


def parse_backend(backend: str) -> tuple[str, str | None]:
    """``"torch:cuda:1"`` -> ``("torch", "cuda:1")``, ``"ray:torch"`` -> ``("ray", "torch")``, ``"numpy"`` ->
    ``("numpy", None)``; an unknown name is an :class:`InputError`."""
    name, _, opt = str(backend).partition(":")
    if name not in NN_BACKENDS or (opt and name not in ("torch", "ray")):
        raise InputError(f"unknown pe.nn_backend {backend!r}: use auto, numpy, faiss, torch[:<device>] or "
                         "ray[:<numpy|faiss|torch>]")
    if name == "ray" and opt and opt.partition(":")[0] not in ("auto", "numpy", "faiss", "torch"):
        raise InputError(f"pe.nn_backend {backend!r}: each Ray worker votes with auto, numpy, faiss or torch")
    return name, opt or None


def _check_installed(name: str) -> None:
    import importlib.util

    extra = {"faiss": "faiss", "torch": "hf", "ray": "ray"}[name]
    if importlib.util.find_spec(name) is None:
        raise InputError(f"pe.nn_backend {name!r} needs {name}: pip install 'spti[{extra}]'")


def vote_histogram(
    private_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    chunk_size: int = 4096,
    backend: str = "auto",
    normalize: bool = True,
    show_progress: bool = True,
    device: str | None = None,
    ray_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The (noise-free, PRIVATE) vote vector: ``counts[j]`` = total weight of private rows whose nearest
    candidate is j. Never release it without noise (:func:`release_histogram`).

    ``normalize`` applies to the private rows (per chunk, so a memmap is never copied whole); candidate
    features are used as given (the caller normalises them, or passes lookahead means). ``backend``: see
    :data:`NN_BACKENDS` (``"auto"`` is numpy: measured at least as fast as faiss on CPUs, shared/FACTS.md);
    ``"torch"``/``"torch:<device>"`` votes on a GPU; ``"ray"``/``"ray:<worker backend>"`` shards the private
    rows over the workers of a Ray cluster (:func:`spti.scale.ray_voting.ray_vote_histogram`) and returns the
    sum of their partial vote vectors; ``ray_options`` are passed on to it (``shards``, ``num_cpus``,
    ``num_gpus``, ``transport``, ``address``; :func:`spti.scale.ray_voting.ray_options_from_config` reads them
    from a run config's ``executor`` section). Every backend gives the same votes (:func:`nearest_candidates`).
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
    name, opt = parse_backend(backend)
    if name == "auto":
        name = "numpy"  # measured: numpy BLAS >= faiss flat here (shared/FACTS.md)
    if name in ("faiss", "torch", "ray"):
        _check_installed(name)
    if name == "ray":
        from spti.scale.ray_voting import ray_vote_histogram

        return ray_vote_histogram(private_features, candidate_features, weights=weights, chunk_size=chunk_size,
                                  normalize=normalize, backend=opt or "auto", show_progress=show_progress,
                                  **dict(ray_options or {}))
    idx = nearest_candidates(
        private_features, candidate_features, chunk_size=chunk_size, backend=name,
        normalize_queries=normalize, show_progress=show_progress, device=opt or device,
    )
    return np.bincount(idx, weights=weights, minlength=m).astype(np.float64)


# ----------------------------------------------------------------------------- sharded voting
def shard_ranges(n_rows: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous row ranges ``[start, stop)`` splitting ``n_rows`` into at most ``shards`` non-empty parts of
    near-equal size (in order). Any split gives the same total votes (:func:`nearest_candidates`)."""
    if shards < 1:
        raise InputError("the number of shards must be >= 1")
    shards = max(1, min(shards, n_rows))
    bounds = [round(i * n_rows / shards) for i in range(shards + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def partial_votes(
    private_features: np.ndarray,
    candidate_features: np.ndarray,
    rows: tuple[int, int],
    *,
    weights: np.ndarray | None = None,
    chunk_size: int = 4096,
    backend: str = "auto",
    normalize: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """The PRIVATE partial vote vector of the private rows ``rows = (start, stop)``: a pure function, so a
    worker that dies and is retried returns the same vector. ``weights`` holds the weights of ALL rows (or
    None). Sum the partials of a partition with :func:`sum_partials` (or release them with
    :func:`release_votes`). A partial is private like the full histogram: it is never written or logged.
    """
    a, b = rows
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[a:b]
    if parse_backend(backend)[0] == "ray":
        raise InputError("partial_votes runs inside one worker: give it a local backend, not 'ray'")
    return vote_histogram(private_features[a:b], candidate_features, weights=w, chunk_size=chunk_size,
                          backend=backend, normalize=normalize, show_progress=False, device=device)


def sum_partials(partials: Iterable[np.ndarray], n_candidates: int) -> np.ndarray:
    """The vote vector of the whole private set: the sum of the partial vectors of a partition of its rows,
    added in the order given (so the float sum is reproducible). Integer weights give exactly the
    single-process counts; fractional weights agree to float rounding (~1e-15 relative)."""
    total = np.zeros(n_candidates, dtype=np.float64)
    for p in partials:
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (n_candidates,):
            raise InputError(f"a partial vote vector has shape {p.shape}, expected ({n_candidates},)")
        total += p
    return total


def release_votes(partials: Iterable[np.ndarray], n_candidates: int, sigma: float, *, noise: NoiseSource,
                  iteration: int, kind: str = "gaussian", grid: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The driver's side of sharded voting: sum the workers' partial vote vectors and add the DP noise ONCE,
    through :func:`release_histogram` (the one noise function). Noise per shard would multiply the noise
    variance by the number of shards; the sum's sensitivity is that of the single-process histogram (each
    private row is in exactly one shard), so σ is unchanged."""
    counts = sum_partials(partials, n_candidates)
    try:
        return release_histogram(counts, sigma, noise=noise, iteration=iteration, kind=kind, grid=grid)
    finally:
        del counts  # the clean histogram is private: never kept


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
