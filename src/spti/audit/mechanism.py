"""The mechanism under test: one PE histogram release (vote → noise → threshold), built from spti's own
functions, so that a bug in them shows in the audit (:mod:`spti.audit`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.pe.histogram import contribution_weights, release_histogram, vote_histogram
from spti.pe.selection import threshold_counts
from spti.privacy import NoiseSource

__all__ = ["HistogramMechanism", "NoiseFn", "VoteFn", "WeightsFn", "gaussian_noise_fn"]

VoteFn = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
"""``vote_fn(private_features, candidate_features, weights) -> clean counts (M,)``."""
WeightsFn = Callable[[Sequence | None, int], np.ndarray]
"""``weights_fn(owners, n_rows) -> vote weight of each row``."""
NoiseFn = Callable[[np.ndarray, int], np.ndarray]
"""``noise_fn(counts, draw) -> noisy counts`` of the same shape. ``counts`` is (B, M): B copies of one
clean histogram (a read-only view), each row an independent release; ``draw`` is a distinct integer per
call (an insecure seeded source uses it as its iteration, a secure one ignores it)."""


def gaussian_noise_fn(sigma: float, noise: NoiseSource | None = None) -> NoiseFn:
    """The engine's noisy release, ``counts + noise.gaussian(counts.shape, σ, iteration)``, as a NoiseFn.

    ``noise`` defaults to a secure :class:`~spti.privacy.NoiseSource` (OS entropy), which is what a real
    audit must use; tests pass ``NoiseSource(insecure_seed=...)`` for determinism.
    """
    source = noise if noise is not None else NoiseSource()
    s = float(sigma)

    def add_noise(counts: np.ndarray, draw: int) -> np.ndarray:  # the engine's own release function
        return release_histogram(counts, s, noise=source, iteration=draw)[0]

    add_noise.description = f"gaussian(sigma={s:.6g}, {'secure' if source.secure else 'INSECURE seeded'})"  # type: ignore[attr-defined]
    return add_noise


@dataclass
class HistogramMechanism:
    """One PE histogram release, built from spti's own functions so that a bug in them shows in the audit.

    ``vote_fn`` (default: :func:`spti.pe.histogram.vote_histogram` with this object's ``nn_backend``,
    ``chunk_size`` and ``normalize``), ``weights_fn`` (default: :func:`~spti.pe.histogram.contribution_weights`),
    ``noise_fn`` (see :data:`NoiseFn`; :func:`gaussian_noise_fn`, or a discrete sampler's adapter) and
    ``threshold`` (None: audit the noisy histogram as checkpointed, i.e. the DP release itself; H: audit
    ``threshold_counts(noisy, H)``, what selection sees). ``sensitivity`` is the L2 bound per record or
    user that the accountant assumes, in the units of the counts (1; an integer vote grid of resolution s
    — the discrete sampler's — has s). Each is a plain attribute, so a test plants a bug with
    :func:`dataclasses.replace` and a wrapper, never by editing spti.

    The exact discrete sampler plugs in the same way (``weights_fn`` = its integer grid weights,
    ``noise_fn`` = its noisy release, ``sensitivity`` = the grid's scale); prefer ``full_histogram=False``
    there, its exact integer sampler being much slower per draw than numpy's normal one.
    """

    noise_fn: NoiseFn
    threshold: float | None = None
    nn_backend: str = "auto"
    chunk_size: int = 4096
    normalize: bool = True
    vote_fn: VoteFn | None = None
    weights_fn: WeightsFn = contribution_weights
    sigma: float | None = None  # for the record only: the σ the noise_fn was built with
    noise_description: str = ""
    sensitivity: float = 1.0  # the L2 bound the accountant assumes, in count units (a vote grid: its scale)

    @classmethod
    def gaussian(cls, sigma: float, *, noise: NoiseSource | None = None, threshold: float | None = None,
                 nn_backend: str = "auto", chunk_size: int = 4096, normalize: bool = True) -> HistogramMechanism:
        """The mechanism ``spti run`` uses: real vote, real weights, NoiseSource Gaussian noise of std σ."""
        fn = gaussian_noise_fn(sigma, noise)
        return cls(noise_fn=fn, threshold=threshold, nn_backend=nn_backend, chunk_size=chunk_size,
                   normalize=normalize, sigma=float(sigma), noise_description=fn.description)  # type: ignore[attr-defined]

    @classmethod
    def discrete(cls, sigma: float, grid: int, *, noise: NoiseSource | None = None, threshold: float | None = None,
                 nn_backend: str = "auto", chunk_size: int = 4096, normalize: bool = True) -> HistogramMechanism:
        """The mechanism of a run with ``privacy.noise: discrete``: integer votes on the grid ``grid``
        (:func:`~spti.pe.histogram.vote_weights`), the exact discrete Gaussian of the engine's own
        :func:`~spti.pe.histogram.release_histogram`. Sensitivity ``grid`` (grid units). The release is
        kept in grid units (the engine divides by ``grid``; multiplying back is a bijection, so the test
        statistic and the bound are unchanged, and the clean and released counts share one unit)."""
        from spti.pe.histogram import vote_weights

        source = noise if noise is not None else NoiseSource()
        s, g = float(sigma), int(grid)

        def add_noise(counts: np.ndarray, draw: int) -> np.ndarray:
            return release_histogram(counts, s, noise=source, iteration=draw, kind="discrete", grid=g)[0] * g

        def weights(owners: Sequence | None, n_rows: int) -> np.ndarray:
            return vote_weights(owners, n_rows, noise="discrete", grid=g)

        desc = f"discrete gaussian(sigma={s:.6g}, grid={g}, {'secure' if source.secure else 'INSECURE seeded'})"
        add_noise.description = desc  # type: ignore[attr-defined]
        return cls(noise_fn=add_noise, threshold=None if threshold is None else threshold * g,
                   nn_backend=nn_backend, chunk_size=chunk_size, normalize=normalize, weights_fn=weights,
                   sigma=s, noise_description=desc, sensitivity=float(g))

    def weights(self, owners: Sequence | None, n_rows: int) -> np.ndarray:
        return np.asarray(self.weights_fn(owners, n_rows), dtype=np.float64)

    def clean_histogram(self, features: Any, candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The noise-free (PRIVATE) vote vector, through the real vote function unless replaced."""
        if self.vote_fn is not None:
            return np.asarray(self.vote_fn(features, candidates, weights), dtype=np.float64)
        return vote_histogram(features, candidates, weights=weights, chunk_size=self.chunk_size,
                              backend=self.nn_backend, normalize=self.normalize, show_progress=False)

    def release(self, counts: np.ndarray, draw: int) -> np.ndarray:
        """What one release outputs for each row of ``counts``: noise, then the thresholding if any."""
        noisy = np.asarray(self.noise_fn(counts, draw), dtype=np.float64)
        if noisy.shape != counts.shape:
            raise InputError(f"noise_fn returned shape {noisy.shape} for counts of shape {counts.shape}")
        return noisy if self.threshold is None else threshold_counts(noisy, self.threshold)

    def describe(self) -> dict[str, Any]:
        return {
            "noise": self.noise_description or getattr(self.noise_fn, "description", repr(self.noise_fn)),
            "sigma": self.sigma,
            "threshold": self.threshold,
            "nn_backend": self.nn_backend,
            "normalize": self.normalize,
            "vote_fn": "spti.pe.histogram.vote_histogram" if self.vote_fn is None else _qualname(self.vote_fn),
            "weights_fn": _qualname(self.weights_fn),
            "sensitivity": self.sensitivity,
        }


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


class _WithCanary:
    """D' = D followed by the canary rows, without copying D (which may be a memory-mapped 300k × 2048
    array). Supports what the vote reads: ``shape`` and contiguous row slices; ``np.asarray`` works too
    (it materialises)."""

    def __init__(self, base: Any, extra: np.ndarray) -> None:
        self.base = base
        self.extra = np.asarray(extra, dtype=np.float32)
        self.n_base = int(base.shape[0])
        self.shape = (self.n_base + self.extra.shape[0], int(base.shape[1]))
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            return np.asarray(self)[key]
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            return np.asarray(self)[key]
        parts = []
        if start < self.n_base:
            parts.append(np.asarray(self.base[start : min(stop, self.n_base)], dtype=np.float32))
        if stop > self.n_base:
            parts.append(self.extra[max(start - self.n_base, 0) : stop - self.n_base])
        if not parts:
            return np.zeros((0, self.shape[1]), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(self.base, dtype=np.float32), self.extra])
        return out if dtype is None else out.astype(dtype)
