"""Benchmark of the voting step (not a test): nearest-candidate votes of N private embeddings over M
candidates of dimension d, against a plain numpy matmul of the same shape measured in the same run.

    python benchmarks/bench_voting.py                 # the issue's shapes: 20k x 14k x {384, 2048}
    python benchmarks/bench_voting.py --quick         # small shapes, a few seconds

Prints achieved GFLOP/s (2·N·M·d flops per pass), the ratio to the baseline matmul, and the peak memory
allocated during each measurement (tracemalloc sees numpy's buffers). The machine's OPENBLAS_CORETYPE
setting changes both numbers alike; run once with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to see
what users without it get.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import tracemalloc

import numpy as np

from spti.pe.histogram import normalize_rows, vote_histogram


def measure(fn, repeat: int = 2) -> tuple[float, float]:
    best = float("inf")
    peak = 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    shapes = [(2000, 1400, 384), (2000, 1400, 2048)] if a.quick else [(20000, 14000, 384), (20000, 14000, 2048)]
    rng = np.random.default_rng(0)
    print(f"{'N x M x d':>22} {'method':>28} {'seconds':>8} {'GFLOP/s':>8} {'vs matmul':>9} {'peak MiB':>9}")
    for n, m, d in shapes:
        priv = normalize_rows(rng.standard_normal((n, d), dtype=np.float32))
        cand = normalize_rows(rng.standard_normal((m, d), dtype=np.float32))
        flops = 2.0 * n * m * d
        base_t, base_mem = measure(lambda p=priv, c=cand: p @ c.T, a.repeat)
        rows = [("numpy matmul A @ B.T (baseline)", base_t, base_mem)]
        for chunk in (1024, 4096):
            t, mem = measure(lambda k=chunk, p=priv, c=cand: vote_histogram(p, c, chunk_size=k, backend="numpy", show_progress=False), a.repeat)
            rows.append((f"spti vote numpy chunk={chunk}", t, mem))
        if importlib.util.find_spec("faiss") is not None:
            t, mem = measure(lambda p=priv, c=cand: vote_histogram(p, c, chunk_size=4096, backend="faiss", show_progress=False), a.repeat)
            rows.append(("spti vote faiss chunk=4096", t, mem))
        for name, t, mem in rows:
            print(f"{f'{n} x {m} x {d}':>22} {name:>28} {t:8.2f} {flops / t / 1e9:8.1f} {base_t / t:9.2f} {mem:9.0f}")


if __name__ == "__main__":
    main()
