"""Benchmark of voting at scale (not a test): every figure is a ratio to the single-process numpy vote of the
same shape measured in the same run (this machine is shared and noisy: compare ratios, not seconds).

    python benchmarks/bench_scale.py            # 20k x 14k x 384 (torch vs numpy on CPU) and
                                                # 100k x 14k x 2048 (Ray, 2 workers, vs one process)
    python benchmarks/bench_scale.py --quick    # small shapes, ~1 min with Ray's start

Part 1 (CPU, 20k x 14k x 384): spti's numpy vote (the baseline), the same loop WITHOUT the fp32 near-tie
re-decision (what spti did before: the cost of exactness), and spti's torch vote on the CPU.
Part 2 (100k x 14k x 2048, 0.8 GB of private rows): the single-process numpy vote (baseline) against sharded
voting on a local Ray cluster of 2 workers (one CPU each), with the rows read from a memory-mapped file by
each worker and with the rows put in Ray's object store. Every sharded result is checked equal to the
baseline's. The data are random unit vectors (real embeddings have more near-ties: more re-decided rows).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from spti.pe.histogram import _Keys, normalize_rows, vote_histogram


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def plain_fp32_votes(q: np.ndarray, k: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The pre-exactness loop: fp32 matmul + argmax per chunk, no near-tie re-decision."""
    k = np.ascontiguousarray(k, np.float32)
    hs = 0.5 * np.einsum("ij,ij->i", k, k)
    idx = np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        sc = q[s : s + chunk] @ k.T
        sc -= hs
        idx[s : s + chunk] = sc.argmax(1)
    return np.bincount(idx, minlength=len(k)).astype(np.float64)


def redecided_share(q: np.ndarray, k: np.ndarray, rows: int = 4096) -> float:
    """Share of rows whose best two fp32 scores lie inside the error window (re-decided in float64)."""
    keys = _Keys(k)
    qs = q[:rows]
    sc = qs @ keys.keys.T - keys.half_sq
    top2 = np.partition(sc, -2, axis=1)[:, -2:].astype(np.float64)
    return float(np.mean(np.abs(top2[:, 1] - top2[:, 0]) <= keys.window(qs)))


def row(name: str, t: float, base: float, flops: float, note: str = "") -> None:
    print(f"  {name:<46} {t:8.2f} s {base / t:7.2f}x  {flops / t / 1e9:7.1f} GFLOP/s  {note}")


def part1(n: int, m: int, d: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    q = normalize_rows(rng.standard_normal((n, d), dtype=np.float32))
    k = normalize_rows(rng.standard_normal((m, d), dtype=np.float32))
    flops = 2.0 * n * m * d
    print(f"\n{n} x {m} x {d} (CPU, one process; ratio = baseline time / time, >1 is faster)")
    base, want = timed(lambda: vote_histogram(q, k, backend="numpy", normalize=False, show_progress=False), repeat)
    row("spti vote numpy (baseline)", base, base, flops)
    t, plain = timed(lambda: plain_fp32_votes(q, k), repeat)
    moved = int(np.abs(plain - want).sum() / 2)
    row("plain fp32 argmax (no near-tie re-decision)", t, base, flops, f"{moved} of {n} votes differ")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  torch not installed: torch row skipped")
    else:
        t, got = timed(lambda: vote_histogram(q, k, backend="torch:cpu", normalize=False, show_progress=False), repeat)
        row(f"spti vote torch cpu ({torch.get_num_threads()} threads)", t, base, flops,
            "equal" if np.array_equal(got, want) else "DIFFERENT")
    print(f"  rows re-decided in float64: {100 * redecided_share(q, k):.2f}%")


def part2(n: int, m: int, d: int, workers: int) -> None:
    import ray

    rng = np.random.default_rng(1)
    print(f"\n{n} x {m} x {d} ({n * d * 4 / 2**30:.2f} GiB private rows; ratio = baseline time / time)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.npy"
        q = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        for s in range(0, n, 10_000):
            q[s : s + 10_000] = normalize_rows(rng.standard_normal((min(10_000, n - s), d), dtype=np.float32))
        q.flush()
        del q
        mm = np.load(path, mmap_mode="r")
        k = normalize_rows(rng.standard_normal((m, d), dtype=np.float32))
        flops = 2.0 * n * m * d
        base, want = timed(lambda m_=mm, k_=k: vote_histogram(m_, k_, normalize=False, show_progress=False), 1)
        row("one process, numpy, memmap rows (baseline)", base, base, flops)
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        print(f"  (ray.init: {time.perf_counter() - t0:.1f} s, not counted below)")
        try:
            from spti.scale.ray_voting import ray_vote_histogram

            # warm-up (not counted): starts the worker processes and imports spti in them
            ray_vote_histogram(np.asarray(mm[:workers * 64]), k[:64], shards=workers, num_cpus=1,
                               transport="object_store", normalize=False, show_progress=False)
            for transport in ("memmap", "object_store"):
                src = mm if transport == "memmap" else np.asarray(mm)
                t, got = timed(lambda s=src, tr=transport: ray_vote_histogram(
                    s, k, shards=workers, num_cpus=1, transport=tr, normalize=False, show_progress=False), 1)
                row(f"Ray, {workers} workers x 1 CPU, rows via {transport}", t, base, flops,
                    "equal" if np.array_equal(got, want) else "DIFFERENT")
        finally:
            ray.shutdown()
        del mm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    if a.quick:
        part1(4000, 2000, 384, a.repeat)
        if not a.skip_ray:
            part2(10_000, 2000, 512, a.workers)
    else:
        part1(20_000, 14_000, 384, a.repeat)
        if not a.skip_ray:
            part2(100_000, 14_000, 2048, a.workers)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
