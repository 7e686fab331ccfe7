"""Where the DP noise comes from.

The guarantee of the Gaussian mechanism holds only if the noise is unknown to the adversary. So the noise
is never drawn from the experiment's seed (which is written to manifest.json and often a small integer) or
from numpy's global state (which any library may seed): it comes from its own generator, seeded from the
operating system's entropy for every call. This is the "secure mode" idea of Opacus; DPSDA's ``pe`` library,
by contrast, draws its noise from the global ``np.random``.

For tests and debugging there is an explicitly *insecure* mode with a fixed seed, in which the noise of
iteration t is a deterministic function of (seed, t) only: a run resumed at iteration t draws exactly the
noise an uninterrupted run would have drawn, whatever happened before.

Known limitation of the default, stated honestly. The default noise is sampled in IEEE double precision by
numpy's PCG64 generator and ziggurat normal sampler and then added to the vote counts in floating point.
Mironov ("On significance of the least significant bits for differential privacy", CCS 2012) showed that
textbook floating-point Laplace sampling leaks the un-noised value through which doubles can and cannot be
output, and Jin, McMurtry, Rubinstein & Ohrimenko ("Are we there yet? Timing and floating-point attacks on
differential privacy systems", IEEE S&P 2022) showed the same for common Gaussian samplers. The formal
guarantee of the default is for the idealised real-valued Gaussian mechanism. In spti the noisy histograms
are only used to choose which synthetic captions survive (they are kept in checkpoints/, never in
release/), which leaves an attacker far less to work with, but this is not a proof. PCG64 is also not a
cryptographically secure generator; each call is freshly seeded with 128 bits of OS entropy, so its output
cannot be predicted from anything spti stores or logs.

The exact alternative exists: :meth:`NoiseSource.discrete_gaussian` (``privacy.noise: discrete``, see
:mod:`spti.privacy.discrete`) samples the discrete Gaussian of Canonne, Kamath & Steinke (NeurIPS 2020)
exactly, with integer arithmetic only and 64-bit words from the OS CSPRNG (``secrets``), for integer vote
counts (user-level votes on an integer grid). What it costs: a few milliseconds per 14,000-bin histogram
(negligible next to voting), and some ε: its privacy is accounted with the zCDP bound proven for it,
which is looser than the exact Gaussian-DP accounting of the default (``spti privacy`` prints both). The
continuous sampler stays the default because of that tight accounting.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from spti.errors import BudgetError, ConfigError
from spti.log import logger
from spti.privacy.discrete import exact_sigma
from spti.privacy.discrete_sampler import RandomBits, sample_discrete_gaussian

__all__ = ["INSECURE_WARNING", "NoiseSource"]

INSECURE_WARNING = (
    "DP noise comes from a fixed, insecure seed: anyone who knows the seed can recompute and subtract the "
    "noise, so the output is NOT differentially private. Use insecure_seed only for tests and debugging."
)


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise ConfigError(f"noise shape must be an int or a tuple of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ConfigError(f"noise shape must contain non-negative ints, got {tuple(shape)!r}")
        out.append(int(s))
    return tuple(out)


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise BudgetError(f"sigma must be a number, got {type(sigma).__name__}")
    s = float(sigma)
    if not math.isfinite(s) or s < 0:
        raise BudgetError(f"sigma = {s} must be a finite number >= 0")
    return s


def _check_iteration(iteration: Any) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise ConfigError(f"iteration must be a non-negative integer, got {iteration!r}")
    return int(iteration)


class NoiseSource:
    """Gaussian noise for the DP histograms, from a generator of its own.

    ``NoiseSource()`` (the default) is secure: every call to :meth:`gaussian` seeds a fresh
    ``np.random.Generator(PCG64)`` with ``np.random.SeedSequence()``, i.e. 128 bits from the operating
    system's entropy pool (``secrets``). Nothing about the noise is stored, logged or derived from any seed
    the user sets.

    ``NoiseSource(insecure_seed=123)`` is reproducible and therefore NOT private (a warning is logged):
    the noise of iteration ``t`` is drawn from ``SeedSequence(123, spawn_key=(t,))``, so it depends on the
    seed and the iteration only (not on numpy's global state nor on the order of calls), which lets tests
    check that a resumed run equals an uninterrupted one.

    Iterations: PE's histogram of iteration t (1..T) uses ``iteration=t``. Iteration 0 (the initial
    population) releases no histogram, so ``iteration=0`` is the noise stream of a labelled run's class counts
    (:func:`spti.stages.budget.class_sizes_stage`), drawn once: in the insecure mode too, the counts' noise
    never coincides with a histogram's.
    """

    def __init__(self, *, insecure_seed: int | None = None) -> None:
        if insecure_seed is not None:
            if isinstance(insecure_seed, bool) or not isinstance(insecure_seed, numbers.Integral):
                raise ConfigError(
                    f"insecure_seed must be a non-negative integer or None (secure), got {insecure_seed!r}"
                )
            if insecure_seed < 0:
                raise ConfigError(f"insecure_seed must be a non-negative integer, got {insecure_seed}")
            insecure_seed = int(insecure_seed)
            logger.warning(INSECURE_WARNING)
        self._seed = insecure_seed

    @property
    def secure(self) -> bool:
        """True when the noise comes from OS entropy (the only mode in which the run is private)."""
        return self._seed is None

    @property
    def insecure_seed(self) -> int | None:
        return self._seed

    def _generator(self, iteration: int) -> np.random.Generator:
        if self._seed is None:
            return np.random.Generator(np.random.PCG64(np.random.SeedSequence()))
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self._seed, spawn_key=(iteration,)))
        )

    def gaussian(self, shape: int | tuple[int, ...], sigma: float, iteration: int) -> np.ndarray:
        """Draw i.i.d. N(0, σ²) noise of ``shape`` (float64) for PE iteration ``iteration``.

        ``sigma`` is the standard deviation itself (for an L2-sensitivity-1 histogram, the σ of the
        :class:`~spti.privacy.budget.PrivacyBudget`). ``sigma == 0`` returns zeros; it is meant only
        for runs that are explicitly not private. In secure mode ``iteration`` only labels the call.
        """
        shp = _check_shape(shape)
        s = _check_sigma(sigma)
        _check_iteration(iteration)
        if s == 0.0:
            return np.zeros(shp, dtype=np.float64)
        return self._generator(int(iteration)).standard_normal(shp, dtype=np.float64) * s

    def random_bits(self, iteration: int) -> RandomBits:
        """The integer randomness of the exact discrete sampler for PE iteration ``iteration``.

        Secure mode: 64-bit words from the OS CSPRNG (``secrets``), fresh for every call. Insecure mode:
        PCG64 seeded with sha256("spti/privacy/discrete-gaussian/v1", seed, iteration), a deterministic
        function of (seed, iteration) only, like :meth:`gaussian` (and NOT private).
        """
        it = _check_iteration(iteration)
        if self._seed is None:
            return RandomBits.secure_source()
        return RandomBits.insecure_source(self._seed, it)

    def discrete_gaussian(
        self, shape: int | tuple[int, ...], sigma: float, iteration: int, *, scale: int = 1
    ) -> np.ndarray:
        """Draw i.i.d. exact discrete Gaussian noise N_Z(0, σ_grid²) of ``shape`` (int64) for iteration t.

        The noise lives on the integer vote grid of resolution ``scale``: σ_grid² is (scale·σ)² rounded up
        to the exact rational of :func:`spti.privacy.discrete.exact_sigma`, so the noise multiplier per
        unit of vote weight is at least ``sigma``. Add it to integer counts and divide by ``scale``
        (:func:`spti.privacy.discrete.add_discrete_noise` does both and records the exact σ).
        ``sigma == 0`` returns zeros (explicitly not-private runs only).
        """
        shp = _check_shape(shape)
        s = _check_sigma(sigma)
        it = _check_iteration(iteration)
        if s == 0.0:
            return np.zeros(shp, dtype=np.int64)
        params = exact_sigma(s, scale)
        n = math.prod(shp)
        return sample_discrete_gaussian(n, params, self.random_bits(it)).reshape(shp)

    def describe(self) -> dict[str, Any]:
        """What manifest.json records about the noise (never the noise itself)."""
        if self._seed is None:
            return {"secure": True, "source": "os-entropy"}
        return {"secure": False, "insecure_seed": self._seed, "warning": INSECURE_WARNING}

    def __repr__(self) -> str:
        return "NoiseSource(secure)" if self._seed is None else f"NoiseSource(insecure_seed={self._seed})"
