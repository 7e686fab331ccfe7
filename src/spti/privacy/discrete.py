"""Exact discrete Gaussian noise on integer vote counts: the exact σ, the integer vote grid, the release.

Why this exists. spti's default noise is a floating-point Gaussian: numpy draws doubles and adds them to the
vote counts. The formal guarantee is for real-valued noise, and floating-point samplers are known to leak
(Mironov, CCS 2012; Jin et al., IEEE S&P 2022). ``privacy.noise: discrete`` instead adds *integer* noise
from the discrete Gaussian N_Z(0, σ²), P[Y = y] ∝ exp(−y²/2σ²) on the integers (Canonne, Kamath & Steinke,
"The Discrete Gaussian for Differential Privacy", NeurIPS 2020, arXiv:2004.00010; "CKS" below), to integer
counts, sampled *exactly* by CKS Algorithms 1–3 with integer arithmetic only (no floating point anywhere in
an accept/reject decision) and with randomness from the operating system's CSPRNG (``secrets``).

The trade-off (why the continuous Gaussian stays the default).

* Continuous (default): its privacy curve is exactly the Gaussian's, so spti accounts it *exactly* with
  Gaussian DP (no slack at all), but the guarantee is for idealised real-valued noise, not for the doubles
  numpy produces.
* Discrete (``privacy.noise: discrete``): no floating-point attack surface (the noisy counts are integers
  on a grid, the sampler is exact), but its privacy curve is not exactly the Gaussian's, so spti accounts it
  with a bound *proven* for it: ρ-zero-concentrated DP per histogram, ρ = Δ₂²/(2σ²) (CKS Thm. 4 for one
  changed coordinate, Thm. 14 for several), ρ added over iterations, then converted to (ε, δ) by CKS's
  tight conversion (Prop. 12 / Cor. 13). That conversion is not tight for Gaussians: at the same σ the
  discrete sampler is charged more ε than the continuous one — about 7-10 % at δ = 1e-6 for typical PE
  budgets (σ = 14.2, T = 10: ε = 1.010 instead of 0.936), 2-7 % when ε is large, up to ~30 % when ε ≪ 1 and
  δ is large. Equivalently, the same (ε, δ) needs ~5-7 % more noise (ε = 1, T = 10, δ = 1e-6: σ = 14.33
  instead of 13.36). ``spti privacy`` prints both (:func:`~spti.privacy.discrete_accounting.compare_noise`). The noise itself is no worse: its
  zCDP is exactly the continuous Gaussian's and its variance is slightly *below* σ²; the gap is the price of
  accounting with a bound that is proven for it (at record level a numerical privacy-loss-distribution
  accountant of the discrete Gaussian would recover most of it: dp_accounting gives 0.941 for the example
  above; spti does not use it yet). Sampling costs ~10-30 ms per 14,000-bin histogram on a
  busy 2-core machine, 0.15-0.4 % of the voting of 20k x 14k x 384 measured in the same run
  (benchmarks/bench_noise.py); the plain scalar Python version of the same algorithm would take 0.5-1.3 s.

Integer grid for user-level votes. Record-level votes are already integers (each record adds 1 to one bin:
L1 = L2 sensitivity 1). User-level votes give each of a user's k rows weight 1/k; on a grid of resolution
``scale`` = s every row gets an integer weight, s // k or s // k + 1 (the first s mod k rows of the user, in
row order, get the +1), so each user's weights sum to exactly s (:func:`grid_weights`). Removing a user then
changes the integer counts by a non-negative vector of L1 norm s, hence L2 ≤ s. The sampler adds
N_Z(0, σ_grid²) with σ_grid ≥ s·σ and the noisy counts are divided by s (:func:`add_discrete_noise`), so
the privacy is that of noise multiplier σ. With s = 2520 (:data:`DEFAULT_USER_SCALE`) the weights are
exactly 1/k for every user with k ≤ 10 rows; a user with more than s rows gives weight 0 to the rows past
the s-th (keep s above the largest number of rows per user).

σ is given as a float; the sampler needs an exact rational σ². :func:`exact_sigma` rounds σ_grid² = (s·σ)²
*up* to t·m/D (D a power of two chosen so that every integer of the sampler fits in 64 bits; relative error
below ~3e-8 for σ_grid ≥ 1), so the noise is never smaller than claimed; the accounting uses that exact σ².

Timing: CKS's sampler is a rejection sampler, so its running time depends on the noise drawn. spti samples a
whole histogram at once and never releases per-bin timings; this is a small residual channel, stated here.

Where the parts live: this module holds the exact σ (:func:`exact_sigma`), the integer vote grid
(:func:`grid_weights`) and the noisy release (:func:`add_discrete_noise`); the sampler itself (CKS Algorithms
1–3 and their random integers) is :mod:`spti.privacy.discrete_sampler`, its accounting (ρ, ε, σ for ε and
the comparison with the continuous Gaussian) :mod:`spti.privacy.discrete_accounting`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from spti.errors import BudgetError, ConfigError, InputError
from spti.privacy.accountant import validate_sigma

if TYPE_CHECKING:  # pragma: no cover
    from spti.privacy.noise import NoiseSource

__all__ = [
    "DEFAULT_USER_SCALE",
    "NOISE_KINDS",
    "DiscreteSigma",
    "add_discrete_noise",
    "exact_sigma",
    "grid_weights",
    "validate_scale",
]

#: Values of ``privacy.noise``: the floating-point Gaussian (default) and the exact discrete Gaussian.
NOISE_KINDS = ("gaussian", "discrete")

#: Grid resolution for user-level votes: lcm(1..10), so 1/k is exact for users with up to 10 rows.
DEFAULT_USER_SCALE = 2520

#: Name written to manifests and ledgers.
SAMPLER_NAME = "discrete_gaussian (Canonne-Kamath-Steinke 2020, Alg. 1-3, exact integer arithmetic)"

# σ_grid² = t·m/D is chosen with 2·t·m·D ≤ 2^52, so Bernoulli(r/(2tmD·K)) stays vectorised up to K = 2^10.
_DEN_LIMIT = 1 << 52


# ---------------------------------------------------------------------------------------------------------
# Validation and the exact σ.
# ---------------------------------------------------------------------------------------------------------


def validate_scale(scale: Any) -> int:
    """Return the integer grid resolution s ≥ 1 (votes are multiplied by s before the noise)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ConfigError(
            f"scale (the integer vote grid) must be an integer >= 1, got {scale!r}; use 1 for record-level "
            f"votes and e.g. {DEFAULT_USER_SCALE} for user-level votes"
        )
    return int(scale)


@dataclass(frozen=True)
class DiscreteSigma:
    """The exact noise parameter of the discrete sampler: σ_grid² = t·m/D, a rational ≥ (scale·σ)².

    ``sigma`` is the noise multiplier the user asked for (std per unit of sensitivity); ``scale`` the
    vote grid; ``t = ⌊scale·σ⌋ + 1`` the discrete Laplace scale of CKS Algorithm 3 (any t ≥ 1 is correct;
    this one is CKS's efficient choice); ``denominator`` D is a power of two.
    """

    sigma: float
    scale: int
    t: int
    m: int
    denominator: int

    @property
    def sigma2_grid(self) -> Fraction:
        """σ_grid² exactly (on the grid, i.e. in units of 1/scale votes)."""
        return Fraction(self.t * self.m, self.denominator)

    @property
    def sigma_effective(self) -> float:
        """The noise multiplier actually used, √(σ_grid²)/scale (≥ ``sigma``), as a float."""
        return math.sqrt(self.t * self.m / self.denominator) / self.scale

    def rho(self) -> float:
        """zCDP ρ of ONE histogram with grid sensitivity Δ₂ ≤ scale: scale²/(2σ_grid²), rounded up."""
        exact = Fraction(self.scale * self.scale * self.denominator, 2 * self.t * self.m)
        r = float(exact)
        return math.nextafter(r, math.inf) if Fraction(r) < exact else r

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record (the exact σ² as the string "numerator/denominator")."""
        d = asdict(self)
        q = self.sigma2_grid
        d["sigma2_grid"] = f"{q.numerator}/{q.denominator}"
        d["sigma_effective"] = self.sigma_effective
        return d


def exact_sigma(sigma: float, scale: int = 1) -> DiscreteSigma:
    """Round σ_grid² = (scale·σ)² *up* to the exact rational the sampler uses (see :class:`DiscreteSigma`).

    D = 2^k is the largest power of two with 2·t·m·D ≤ 2^52, where m = ⌈(scale·σ)²·D/t⌉: the relative
    excess of σ² is at most t/(D·σ_grid²), below ~3e-8 for σ_grid ≥ 1 (below 1e-5 down to σ_grid = 0.01).
    The float σ is a dyadic rational, so (scale·σ)² is computed exactly.
    """
    s = validate_sigma(sigma)
    sc = validate_scale(scale)
    target = Fraction(s) * sc
    t = math.floor(target) + 1
    target2 = target * target

    def m_den(k: int) -> tuple[int, int]:
        d = 1 << k
        m = math.ceil(target2 * d / t)
        return m, 2 * t * m * d

    k = min(60, max(0, int(25.5 - math.log2(float(target)))))  # 2σ²D² ≈ 2^52; corrected exactly below
    while k > 0 and m_den(k)[1] > _DEN_LIMIT:
        k -= 1
    while m_den(k + 1)[1] <= _DEN_LIMIT:
        k += 1
    m, den = m_den(k)
    if den > _DEN_LIMIT:
        raise BudgetError(
            f"sigma x scale = {float(target):.6g} is too large for the discrete sampler (at most about "
            f"{2**25:.3g}); use a smaller vote grid scale"
        )
    return DiscreteSigma(sigma=s, scale=sc, t=t, m=m, denominator=1 << k)


# ---------------------------------------------------------------------------------------------------------
# Integer votes and adding the noise.
# ---------------------------------------------------------------------------------------------------------


def grid_weights(owners: Sequence | np.ndarray | None, n_rows: int, scale: int) -> np.ndarray:
    """Integer vote weight of every row on a grid of resolution ``scale``: each owner's weights sum to
    exactly ``scale`` (the integer version of :func:`spti.pe.histogram.contribution_weights`).

    An owner with k rows gives scale // k to each row and one more to its first scale mod k rows (in row
    order): exact integer arithmetic, no rounding drift, and never more than ``scale`` per owner, so the
    L1 (hence L2) sensitivity of the integer vote vector is ``scale``. ``owners=None`` means one row per
    owner (record level): every row weighs ``scale``.
    """
    sc = validate_scale(scale)
    if isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral) or n_rows < 0:
        raise InputError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if owners is None:
        return np.full(int(n_rows), sc, dtype=np.int64)
    owners = np.asarray(owners)
    if owners.ndim != 1 or owners.shape[0] != n_rows:
        raise InputError(f"owners has {owners.shape[0] if owners.ndim else 0} entries for {n_rows} rows")
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(owners, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = np.arange(n_rows) - starts[inverse[order]]
    counts = counts.astype(np.int64)
    base, rem = sc // counts, sc % counts
    return base[inverse] + (rank < rem[inverse]).astype(np.int64)


def _integer_counts(counts: Any) -> np.ndarray:
    a = np.asarray(counts)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise InputError(f"vote counts must be numbers, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError("vote counts must be finite")
        if np.any(np.abs(a) >= 2.0**53) or np.any(a != np.round(a)):
            raise InputError(
                "the discrete sampler needs integer vote counts (below 2^53); vote with grid_weights(...) "
                "so that every count is an integer"
            )
    elif a.dtype.kind == "u" and a.size and int(a.max()) >= 2**53:
        raise InputError("vote counts must be below 2^53")
    out = a.astype(np.int64)
    if out.size and int(np.abs(out).max()) >= 2**53:
        raise InputError("vote counts must be below 2^53 in absolute value")
    return out


def add_discrete_noise(
    counts: Any,
    sigma: float,
    *,
    iteration: int,
    source: NoiseSource,
    scale: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Add exact discrete Gaussian noise to an integer vote histogram on the grid ``scale``.

    ``counts`` are the integer votes (record level: plain counts with ``scale = 1``; user level: the sums
    of :func:`grid_weights` with the same ``scale``; integral floats as returned by ``np.bincount`` are
    accepted). Returns ``(noisy, record)``: ``noisy = (counts + N_Z(0, σ_grid²)) / scale`` as float64 (the
    division is post-processing), and a JSON-safe ``record`` of what was done — the sampler, the exact σ²,
    the grid, ρ per histogram, whether the randomness was secure — never the noise or the counts.
    ``sigma = 0`` adds no noise (explicitly not-private runs only).
    """
    from spti.privacy.noise import NoiseSource

    if not isinstance(source, NoiseSource):
        raise ConfigError(f"source must be a NoiseSource, got {type(source).__name__}")
    sc = validate_scale(scale)
    c = _integer_counts(counts)
    s = validate_sigma(sigma, allow_zero=True)
    record: dict[str, Any] = {"noise": "discrete", "secure": source.secure, "scale": sc, "sigma": s}
    if s == 0.0:
        record.update(sampler="none (sigma = 0: not private)", rho=math.inf)
        return c.astype(np.float64) / sc, record
    params = exact_sigma(s, sc)
    noise = source.discrete_gaussian(c.shape, s, iteration, scale=sc)
    record.update(
        sampler=SAMPLER_NAME,
        sigma2_grid=params.to_dict()["sigma2_grid"],
        sigma_effective=params.sigma_effective,
        rho=params.rho(),
    )
    return (c + noise).astype(np.float64) / sc, record
