"""What PE does with a noisy histogram: threshold it, then pick the next parents.

Everything here is post-processing of the DP output (the noisy counts), so it costs no privacy; it may use
the experiment's ordinary random generator.
"""

from __future__ import annotations

import numpy as np

from spti.errors import ConfigError


def threshold_counts(noisy_counts: np.ndarray, threshold: float) -> np.ndarray:
    """Counts below ``threshold`` H become 0 (and negative counts always do): with H > 0, candidates that
    received only noise are not selected by ``sample`` selection (PE's H)."""
    c = np.asarray(noisy_counts, dtype=np.float64).copy()
    c[c < max(threshold, 0.0)] = 0.0
    c[c < 0] = 0.0
    return c


def select(counts: np.ndarray, num: int, method: str = "rank", rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of the next population.

    ``rank``: the ``num`` highest counts, ties broken by index (deterministic), without repetition
    (if fewer candidates than ``num``, candidates are cycled in rank order).
    ``sample``: ``num`` draws with replacement with probability ∝ counts (uniform when all counts are 0).
    """
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.shape[0]
    if m == 0:
        raise ConfigError("cannot select from zero candidates")
    if num < 1:
        raise ConfigError("population size must be >= 1")
    if method == "rank":
        order = np.lexsort((np.arange(m), -counts))  # primary: count desc; secondary: index asc
        if num <= m:
            return order[:num]
        return np.resize(order, num)
    if method == "sample":
        if rng is None:
            raise ConfigError("sample selection needs a random generator")
        total = counts.sum()
        p = counts / total if total > 0 else np.full(m, 1.0 / m)
        return rng.choice(m, size=num, replace=True, p=p)
    raise ConfigError(f"unknown selection method {method!r}; use 'rank' or 'sample'")
