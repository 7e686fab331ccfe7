"""Benchmark of the DP noise (not a test): the exact discrete Gaussian sampler against the continuous numpy
sampler on one histogram, and both against the voting that produces the histogram, measured in the same run.

    python benchmarks/bench_noise.py            # 14,000 bins, sigma in {5, 14, 50}; voting 20k x 14k x 384
    python benchmarks/bench_noise.py --quick    # voting 2k x 1.4k x 384, a few seconds
    python benchmarks/bench_noise.py --reference  # also the pure-Python scalar CKS sampler (about 0.5 s each)

"discrete user" is the user-level grid (scale 2520, sigma_grid = 2520 sigma). Times are the best of
``--repeat`` runs. The privacy cost of the discrete sampler (its epsilon next to the continuous one) is
printed at the end for T = 10, delta = 1e-6.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from spti.pe.histogram import normalize_rows, vote_histogram
from spti.privacy.discrete import DEFAULT_USER_SCALE, exact_sigma
from spti.privacy.discrete_accounting import compare_noise
from spti.privacy.discrete_sampler import RandomBits, sample_discrete_gaussian_reference
from spti.privacy.noise import NoiseSource


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reference", action="store_true", help="also time the pure-Python scalar sampler")
    ap.add_argument("--bins", type=int, default=14_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    n, m, d = (2_000, 1_400, 384) if a.quick else (20_000, 14_000, 384)
    rng = np.random.default_rng(0)
    priv = normalize_rows(rng.standard_normal((n, d), dtype=np.float32))
    cand = normalize_rows(rng.standard_normal((m, d), dtype=np.float32))
    vote_t = best_of(
        lambda: vote_histogram(priv, cand, backend="numpy", show_progress=False), min(a.repeat, 2)
    )
    print(f"voting {n} x {m} x {d} (numpy, chunk 4096): {vote_t * 1e3:.1f} ms")
    print(
        f"{'sigma':>6} {'sampler':>26} {'ms / ' + str(a.bins) + ' bins':>16} {'vs continuous':>14} {'% of voting':>12}"
    )
    secure, insecure = NoiseSource(), NoiseSource(insecure_seed=0)
    for sigma in (5.0, 14.0, 50.0):
        rows = [
            ("continuous (numpy)", lambda s=sigma: secure.gaussian(a.bins, s, 1)),
            ("discrete secure", lambda s=sigma: secure.discrete_gaussian(a.bins, s, 1)),
            (
                "discrete secure user grid",
                lambda s=sigma: secure.discrete_gaussian(a.bins, s, 1, scale=DEFAULT_USER_SCALE),
            ),
            ("discrete insecure", lambda s=sigma: insecure.discrete_gaussian(a.bins, s, 1)),
        ]
        if a.reference:
            p = exact_sigma(sigma)
            rows.append(
                (
                    "pure-Python reference",
                    lambda p=p: sample_discrete_gaussian_reference(a.bins, p, RandomBits.secure_source()),
                )
            )
        base = None
        for name, fn in rows:
            t = best_of(fn, 1 if name.startswith("pure") else a.repeat)
            base = base or t
            print(f"{sigma:6g} {name:>26} {t * 1e3:16.2f} {t / base:14.1f} {100 * t / vote_t:12.2f}")
    print("\nprivacy cost at T = 10, delta = 1e-6 (record level):")
    for sigma in (5.0, 14.2, 50.0):
        print("  " + compare_noise(sigma, 10, 1e-6).describe())


if __name__ == "__main__":
    main()
