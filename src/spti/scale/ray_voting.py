"""Sharded nearest-neighbour voting on Ray: the private rows split across workers, each worker returns the
PRIVATE partial vote vector of its shard, the driver sums them (the engine then adds the noise once, through
:func:`spti.pe.histogram.release_histogram`).

How the data travels:

- the candidates (M × d fp32, public) are put ONCE in Ray's object store; every worker on a node reads the
  same shared-memory copy (zero-copy numpy), so they cost M·d·4 bytes per node, not per worker;
- the private rows: ``transport="memmap"`` sends each worker only (file, offset, shape, rows) of the
  memory-mapped features file and the worker reads its own rows from it (no copy through Ray; the file must
  be on storage every node sees — the run folder, see docs/SCALING.md); ``"object_store"`` puts each shard
  (shard × d fp32) in the object store; ``"auto"``: memmap when the features are a memory-mapped file and the
  cluster has one node, else the object store;
- a worker holds its shard's rows (paged in from the file, or its object-store copy) plus one chunk's score
  block (``chunk_size`` × M fp32): memory O(shard × d + chunk × M), plus the candidates shared per node.

Privacy: a partial vote vector is as private as the histogram. spti never writes or logs one: it exists in
the worker, in Ray's in-memory object store between the task's return and the driver's ``ray.get`` (then it
is dropped), and in the driver until it is summed. Ray spills objects to local disk only when a node's object
store is full; on a shared cluster, give Ray a private ``object_spilling_config`` directory (or enough object
store memory) — the same holds for the private shards with ``transport="object_store"``.

Faults: shard tasks are pure functions of their inputs (:func:`spti.pe.histogram.partial_votes`), so a task
whose worker dies is re-run by Ray (``max_retries``) and returns the same vector: no duplicates, no gaps.

Exactness: every shard layout, worker backend and device gives the same votes as one process
(:func:`spti.pe.histogram.nearest_candidates` re-decides fp32 near-ties in float64). With integer weights the
summed counts are equal; with fractional (user-level) weights equal to float rounding of the sum.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.log import logger, progress
from spti.pe.histogram import _check_installed, parse_backend, partial_votes, shard_ranges, sum_partials

TRANSPORTS = ("auto", "memmap", "object_store")


@dataclass(frozen=True)
class MemmapShard:
    """Where a worker finds its rows: a C-ordered (n, d) array at byte ``offset`` of ``filename``, rows
    ``start:stop``. Carries no private values, only the location (never logged: the path may name the data)."""

    filename: str
    dtype: str
    offset: int
    shape: tuple[int, int]
    start: int
    stop: int

    def open(self) -> np.ndarray:
        try:
            mm = np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape)
        except OSError:
            # no path in the message: it may name the private data set
            raise InputError(
                "a Ray worker could not open the memory-mapped private features: the run folder must be on "
                "storage every node sees, or vote with transport='object_store'"
            ) from None
        return mm[self.start : self.stop]


def memmap_location(x: Any) -> tuple[str, str, int, tuple[int, int]] | None:
    """(filename, dtype, byte offset, shape) of a C-contiguous 2-D ``np.memmap`` (a view of rows too), or None
    when ``x`` is not one (then the shards go through the object store)."""
    if not isinstance(x, np.memmap) or x.ndim != 2 or not x.flags.c_contiguous or not x.filename:
        return None
    mm = getattr(x, "_mmap", None)
    off = getattr(x, "offset", None)
    if not isinstance(mm, mmap.mmap) or off is None:
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data  # where the file's mapping starts in memory
    except (TypeError, ValueError):
        return None
    mapped_from = off - off % mmap.ALLOCATIONGRANULARITY  # numpy maps from the granularity boundary
    file_offset = mapped_from + (x.ctypes.data - base)
    if file_offset < 0:
        return None
    return str(x.filename), x.dtype.str, int(file_offset), (int(x.shape[0]), int(x.shape[1]))


def shard_votes(source: Any, candidates: np.ndarray, weights: np.ndarray | None, *, chunk_size: int,
                backend: str, normalize: bool) -> np.ndarray:
    """The body of one Ray task: the partial vote vector of one shard (its rows given as a
    :class:`MemmapShard` or as the array itself). ``backend="auto"``: torch on the GPU Ray gave this task,
    numpy when it gave none."""
    rows = source.open() if isinstance(source, MemmapShard) else source
    device = None
    if backend == "auto":
        backend = "numpy"
        try:
            import ray

            if ray.get_gpu_ids():
                backend, device = "torch", "cuda"
        except ImportError:  # pragma: no cover - only ever called inside a Ray worker
            pass
    return partial_votes(rows, candidates, (0, rows.shape[0]), weights=weights, chunk_size=chunk_size,
                         backend=backend, normalize=normalize, device=device)


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to the cluster already initialised in this process, else to
    ``address``, else (Ray's own rule) to ``RAY_ADDRESS`` or the cluster started on this machine with
    ``ray start``, else to a new local one."""
    _check_installed("ray")
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True)
        res = ray.cluster_resources()
        logger.info("connected to Ray: %g CPUs, %g GPUs", res.get("CPU", 0), res.get("GPU", 0))
    return ray


def ray_options_from_config(cfg: Any) -> dict[str, Any]:
    """:func:`ray_vote_histogram` options from a run config's ``executor`` section: its ``address``, and the
    ``voting`` role's ``workers`` (-> shards), ``cpus_per_replica`` / ``gpus_per_replica`` (-> per-shard
    resources) when ``executor.roles.voting`` gives them. Anything not given keeps the defaults (one shard per
    GPU, else per CPU). Read duck-typed, so a config without an executor section gives ``{}``."""
    ex = getattr(cfg, "executor", None)
    if ex is None:
        return {}
    out: dict[str, Any] = {}
    if getattr(ex, "address", None):
        out["address"] = ex.address
    role = (getattr(ex, "roles", None) or {}).get("voting") or {}
    for src, dst in (("workers", "shards"), ("cpus_per_replica", "num_cpus"), ("gpus_per_replica", "num_gpus")):
        if role.get(src) is not None:
            out[dst] = role[src]
    return out


_REMOTE: dict[str, Any] = {}


def _remote_shard_votes(ray: Any) -> Any:
    """:func:`shard_votes` as a Ray remote function, registered once per process."""
    if "f" not in _REMOTE:
        _REMOTE["f"] = ray.remote(shard_votes)
    return _REMOTE["f"]


def _alive_nodes(ray: Any) -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def ray_vote_histogram(
    private_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    chunk_size: int = 4096,
    normalize: bool = True,
    backend: str = "auto",
    shards: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    transport: str = "auto",
    address: str | None = None,
    max_retries: int = 3,
    show_progress: bool = True,
) -> np.ndarray:
    """The PRIVATE vote vector of ``private_features`` (N, d; an array or a memmap) over
    ``candidate_features`` (M, d), computed as the sum of per-shard partial vote vectors on Ray workers.
    Equal to :func:`spti.pe.histogram.vote_histogram` of one process. Never release it without noise.

    ``backend``: what each worker votes with ("auto": torch on its GPU if it has one, else numpy).
    ``num_gpus``/``num_cpus``: resources per shard task (default: one GPU each when the cluster has GPUs and
    the backend may use them, else one CPU; on a 2-core machine give fractions, e.g. 0.5 — shared/FACTS.md).
    ``shards``: default one per GPU (GPU tasks) or per ``num_cpus`` of the cluster's CPUs.
    """
    if transport not in TRANSPORTS:
        raise InputError(f"unknown transport {transport!r}; use one of {TRANSPORTS}")
    if parse_backend(backend)[0] == "ray":
        raise InputError("the workers of Ray voting need a local backend (auto, numpy, faiss or torch)")
    n, m = int(private_features.shape[0]), int(candidate_features.shape[0])
    if m == 0:
        raise InputError("no candidates to vote for")
    if n and private_features.shape[1] != candidate_features.shape[1]:
        raise InputError(f"private features have dim {private_features.shape[1]} but candidates have "
                         f"{candidate_features.shape[1]}")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and w.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {w.shape}")
    if n == 0:
        return np.zeros(m, dtype=np.float64)
    ray = connect(address)
    res = ray.cluster_resources()
    if num_gpus is None:
        name, opt = parse_backend(backend)
        wants_gpu = name == "auto" or (name == "torch" and not (opt or "").startswith("cpu"))
        num_gpus = 1.0 if wants_gpu and res.get("GPU", 0) >= 1 else 0.0
    if num_cpus is None:
        num_cpus = 1.0
    if shards is None:
        shards = int(res.get("GPU", 0) // num_gpus) if num_gpus else int(res.get("CPU", 1) // max(num_cpus, 1e-9))
        shards = max(1, shards)
    loc = memmap_location(private_features) if transport != "object_store" else None
    if transport == "memmap" and loc is None:
        raise InputError("transport='memmap' needs the private features as a C-ordered np.memmap (np.load(..., "
                         "mmap_mode='r'))")
    if transport == "auto" and loc is not None and _alive_nodes(ray) > 1:
        loc = None  # several nodes: do not assume they all see the file
    ranges = shard_ranges(n, shards)
    task = _remote_shard_votes(ray).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    cand_ref = ray.put(np.ascontiguousarray(candidate_features, dtype=np.float32))
    refs = []
    for a, b in ranges:
        if loc is not None:
            src: Any = MemmapShard(loc[0], loc[1], loc[2], loc[3], a, b)
        else:
            src = ray.put(np.ascontiguousarray(private_features[a:b], dtype=np.float32))
        refs.append(task.remote(src, cand_ref, None if w is None else w[a:b], chunk_size=chunk_size,
                                backend=backend, normalize=normalize))
        del src
    logger.info("voting on Ray: %d shards, %g CPU / %g GPU each, rows via %s", len(refs), num_cpus, num_gpus,
                "memmap" if loc is not None else "object store")

    def finished(pending: list[Any]):
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ready[0]

    done = finished(list(refs))
    for _ in progress(done, desc="voting (ray)", total=len(refs)) if show_progress else done:
        pass
    partials = ray.get(refs)
    del refs, cand_ref  # drop the object-store copies now
    try:
        return sum_partials(partials, m)
    finally:
        del partials
