"""Benchmark of ``spti audit`` (not a test): time and bound of the black-box ε audit at the issue's scale.

    python benchmarks/bench_audit.py            # 20k private x 14k candidates x 384, 1e4 and 1e5 trials
    python benchmarks/bench_audit.py --quick    # the offline demo's scale: 1000 x 120 x 384

For each setting: the time of the two clean votes + the noise draws, with the noise drawn on the full
histogram (what the engine does) and on the canary's bin only, and the bound for the correct mechanism
(σ for ε = 1 per histogram) and for σ halved. Noise comes from the secure (OS entropy) NoiseSource, as in
a real audit.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spti.audit import HistogramMechanism, audit_histogram_mechanism, per_release_epsilon
from spti.pe.histogram import normalize_rows
from spti.privacy import sigma_from_epsilon


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, nargs="*", default=None)
    a = ap.parse_args()
    n, m, d = (1000, 120, 384) if a.quick else (20000, 14000, 384)
    trials = a.trials or ([10_000, 100_000] if not a.quick else [100_000])
    rng = np.random.default_rng(0)
    priv = normalize_rows(rng.standard_normal((n, d), dtype=np.float32))
    cand = normalize_rows(rng.standard_normal((m, d), dtype=np.float32))
    delta = 1.0 / (n * np.log(n))
    sigma = sigma_from_epsilon(1.0, delta, 1)
    claim = per_release_epsilon(sigma, delta)
    print(f"{n} private x {m} candidates x {d}; delta = {delta:.3g}; sigma = {sigma:.4g} (eps = 1 per histogram)")
    print(f"{'trials':>8} {'noise on':>10} {'sigma':>8} {'bound':>7} {'claim':>6} {'seconds':>8}")
    for t in trials:
        for full in (False, True):
            for s, label in ((sigma, "sigma"), (sigma / 2, "sigma/2")):
                mech = HistogramMechanism.gaussian(s)
                t0 = time.perf_counter()
                r = audit_histogram_mechanism(priv, cand, mechanism=mech, trials=t, delta=delta,
                                              claimed_epsilon=claim, full_histogram=full)
                dt = time.perf_counter() - t0
                print(f"{t:8d} {'all bins' if full else 'canary':>10} {label:>8} {r.epsilon_lower_bound:7.3f} "
                      f"{claim:6.3f} {dt:8.1f}", flush=True)


if __name__ == "__main__":
    main()
