"""Privacy accounting of the exact discrete Gaussian: zCDP per histogram, composed and converted to (ε, δ).

Why zCDP and not the exact GDP curve of the continuous Gaussian, and what that costs in ε: the module
docstring of :mod:`spti.privacy.discrete`. ρ per histogram is computed from the exact (rounded-up) σ the
sampler uses (:func:`~spti.privacy.discrete.exact_sigma`), and converted by :mod:`spti.privacy.zcdp`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from spti.errors import BudgetError
from spti.privacy.accountant import (
    epsilon_from_sigma,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_sigma,
    validate_unit,
)
from spti.privacy.discrete import exact_sigma, validate_scale
from spti.privacy.zcdp import epsilon_for_rho, rho_for_epsilon

__all__ = [
    "NoiseComparison",
    "compare_noise",
    "epsilon_discrete",
    "rho_discrete",
    "sigma_for_epsilon_discrete",
]

_THEOREM = {
    "record": (
        "CKS 2020 Thm. 4: one record changes a single bin by its integer vote (scale), and the 1-D discrete "
        "Gaussian with integer shift D is D^2/(2 sigma_grid^2)-zCDP; T histograms compose to T rho; "
        "(eps, delta) by CKS Prop. 12 / Cor. 13"
    ),
    "user": (
        "CKS 2020 Thm. 14: one user changes the integer grid votes by a vector of L2 norm <= scale, and "
        "independent discrete Gaussians in every bin are (L2^2/(2 sigma_grid^2))-zCDP; T histograms compose "
        "to T rho; (eps, delta) by CKS Prop. 12 / Cor. 13"
    ),
}


def rho_discrete(sigma: float, iterations: int, *, unit: str = "record", scale: int = 1) -> float:
    """Total zCDP ρ of T discrete-Gaussian histograms with noise multiplier σ on the grid ``scale``.

    Per histogram ρ = Δ₂²/(2σ_grid²) with Δ₂ = scale (record level: one bin changes by scale, CKS Thm. 4;
    user level: the user's integer votes sum to scale, so L2 ≤ L1 = scale, CKS Thm. 14 — the multivariate
    theorem is dimension-free, so the number of bins does not enter). σ_grid² is the exact rounded-up value
    of :func:`exact_sigma`, so ρ ≤ T/(2σ²). Composition: ρ adds up (Bun & Steinke 2016, Lemma 2.3).
    """
    validate_unit(unit)
    t = validate_iterations(iterations)
    return t * exact_sigma(sigma, scale).rho()


def epsilon_discrete(
    sigma: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> float:
    """ε spent by T histograms with exact discrete Gaussian noise of multiplier σ, at δ.

    A *proven* upper bound: ρ from :func:`rho_discrete`, converted by CKS's tight zCDP → (ε, δ) conversion
    (:func:`spti.privacy.zcdp.epsilon_for_rho`). Always ≥ the continuous Gaussian's exact ε at the
    same σ (:func:`spti.privacy.accountant.epsilon_from_sigma`): see :func:`compare_noise`.
    """
    d = validate_delta(delta)
    return epsilon_for_rho(rho_discrete(sigma, iterations, unit=unit, scale=scale), d)


def sigma_for_epsilon_discrete(
    epsilon: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> float:
    """The smallest noise multiplier σ (up to ~1e-10) with ``epsilon_discrete(σ, T, δ) <= ε``.

    ρ_total = :func:`~spti.privacy.zcdp.rho_for_epsilon` (ε, δ), σ = √(T/(2ρ_total)), then nudged
    up until the exact (rounded-up) sampler parameter spends at most ε.
    """
    e = validate_epsilon(epsilon)
    t = validate_iterations(iterations)
    d = validate_delta(delta)
    validate_unit(unit)
    sc = validate_scale(scale)
    sigma = math.sqrt(t / (2.0 * rho_for_epsilon(e, d))) * (1.0 + 1e-12)
    for _ in range(200):
        if epsilon_discrete(sigma, t, d, unit=unit, scale=sc) <= e:
            return sigma
        sigma *= 1.0 + 1e-10
    raise BudgetError(  # pragma: no cover - the roots are accurate to ~1e-15
        f"could not calibrate the discrete sigma for epsilon = {e:g}, delta = {d:g}, T = {t}"
    )


@dataclass(frozen=True)
class NoiseComparison:
    """One row of ``spti privacy``: what the exact discrete sampler costs in ε next to the continuous one.

    ``epsilon_continuous``: exact GDP accounting of the floating-point Gaussian (tight).
    ``epsilon_discrete``: the proven zCDP bound for the discrete sampler (what spti charges for it).
    ``epsilon_continuous_zcdp``: the same zCDP conversion applied to the continuous Gaussian; it differs from
    ``epsilon_discrete`` only by the rounding of σ, which shows that the extra ε comes from the looser
    accounting, not from worse noise.
    """

    sigma: float
    iterations: int
    delta: float
    unit: str
    scale: int
    sigma_exact: float
    rho: float
    epsilon_continuous: float
    epsilon_discrete: float
    epsilon_continuous_zcdp: float
    theorem: str

    @property
    def extra_epsilon(self) -> float:
        return self.epsilon_discrete - self.epsilon_continuous

    @property
    def extra_percent(self) -> float:
        return 100.0 * self.extra_epsilon / self.epsilon_continuous if self.epsilon_continuous > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra_epsilon"] = self.extra_epsilon
        d["extra_percent"] = self.extra_percent
        return d

    def describe(self) -> str:
        return (
            f"sigma = {self.sigma:.4g}, T = {self.iterations}, delta = {self.delta:.3g} ({self.unit} level): "
            f"continuous Gaussian epsilon = {self.epsilon_continuous:.4g} (exact GDP); exact discrete "
            f"Gaussian epsilon = {self.epsilon_discrete:.4g} (zCDP bound, +{self.extra_percent:.1f}%)"
        )


def compare_noise(
    sigma: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> NoiseComparison:
    """ε of the continuous Gaussian (exact GDP) next to ε of the discrete sampler (proven zCDP bound)."""
    s = validate_sigma(sigma)
    t = validate_iterations(iterations)
    d = validate_delta(delta)
    u = validate_unit(unit)
    params = exact_sigma(s, scale)
    rho = t * params.rho()
    return NoiseComparison(
        sigma=s,
        iterations=t,
        delta=d,
        unit=u,
        scale=params.scale,
        sigma_exact=params.sigma_effective,
        rho=rho,
        epsilon_continuous=epsilon_from_sigma(s, t, d),
        epsilon_discrete=epsilon_for_rho(rho, d),
        epsilon_continuous_zcdp=epsilon_for_rho(t / (2.0 * s * s), d),
        theorem=_THEOREM[u],
    )
