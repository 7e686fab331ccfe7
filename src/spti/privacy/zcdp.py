"""Zero-concentrated DP (zCDP) and its conversion to (ε, δ)-DP.

Used for mechanisms whose exact trade-off curve is not the Gaussian one, e.g. the discrete Gaussian of
:mod:`spti.privacy.discrete`: for those, a ρ-zCDP bound per histogram is what is *proven*, ρ composes by
addition (Bun & Steinke 2016), and the total is converted here by the tight conversion of Canonne, Kamath &
Steinke 2020. The continuous Gaussian is accounted exactly in GDP instead (:mod:`spti.privacy.accountant`).
"""

from __future__ import annotations

import math
from typing import Any

from spti.errors import BudgetError
from spti.privacy.accountant import (
    _MAXITER,
    _brentq,
    _real,
    _validate_eps_nonneg,
    validate_delta,
    validate_epsilon,
)

__all__ = ["delta_for_rho", "epsilon_for_rho", "rho_for_epsilon", "validate_rho"]


def validate_rho(rho: Any) -> float:
    """Return a zCDP parameter ρ as a float ≥ 0 (ρ = ∞ allowed: it means no privacy)."""
    x = _real(rho, "rho")
    if x < 0:
        raise BudgetError(f"rho = {x:g} must be >= 0 (rho is the zero-concentrated DP parameter)")
    return x


def _zcdp_log_delta_at(x: float, log_x: float, rho: float, eps: float) -> float:
    """log δ of Canonne, Kamath & Steinke's conversion at Rényi order α = 1 + x (valid for every x > 0):
    δ = exp((α−1)(αρ − ε)) · (1 − 1/α)^(α−1) / α."""
    lx1 = math.log1p(x)
    return x * ((1.0 + x) * rho - eps) - lx1 + x * (log_x - lx1)


def delta_for_rho(rho: float, eps: float) -> float:
    """The δ at which a ρ-zCDP mechanism is (ε, δ)-DP, by the tight conversion of Canonne, Kamath & Steinke.

    CKS 2020 ("The Discrete Gaussian for Differential Privacy", arXiv:2004.00010, Prop. 12 / Cor. 13 in v4;
    also Asoodeh et al. 2020, eq. 20): ρ-zCDP implies (ε, δ)-DP for every Rényi order α > 1 with
    δ = exp((α−1)(αρ−ε))·(1−1/α)^(α−1)/α. We take the infimum over α: log δ is convex in α, so it is
    attained where its derivative (2α−1)ρ − ε + log(1 − 1/α) vanishes. This is strictly tighter than the
    classical δ = exp(−(ε−ρ)²/(4ρ)) (Bun & Steinke 2016). It is also capped by the Bretagnolle–Huber bound
    δ ≤ √(1 − e^(−ρ)) (the KL divergence of a ρ-zCDP mechanism is at most ρ), which matters only at ε ≈ 0.
    Every α gives a valid δ, so an imprecise root only makes δ larger, never smaller than proven.
    """
    r = validate_rho(rho)
    e = _validate_eps_nonneg(eps)
    if r == 0.0 or math.isinf(e):
        return 0.0
    if math.isinf(r):
        return 1.0
    bh = 0.5 * math.log(-math.expm1(-r))

    def dlog(y: float) -> float:  # derivative of log δ w.r.t. α, as a function of y = log(α − 1); increasing
        x = math.exp(y)
        return (1.0 + 2.0 * x) * r - e + y - math.log1p(x)

    x_hi = max(1.0, (e + 1.0) / (2.0 * r))  # there (1+2x)ρ ≥ ε + 1 and log(1 − 1/α) ≥ −1/x ≥ −1
    y_hi = math.log(x_hi)
    y_lo = min(y_hi - 1.0, e - (1.0 + 2.0 * x_hi) * r - 1.0)  # there the derivative is < 0
    if dlog(y_hi) <= 0.0:  # pragma: no cover - excluded by the choice of x_hi
        y = y_hi
    elif dlog(y_lo) >= 0.0:  # pragma: no cover - excluded by the choice of y_lo
        y = y_lo
    else:
        y = _brentq(dlog, y_lo, y_hi)
    log_d = min(_zcdp_log_delta_at(math.exp(y), y, r, e), bh, 0.0)
    return math.exp(log_d)


def epsilon_for_rho(rho: float, delta: float) -> float:
    """The smallest ε ≥ 0 for which a ρ-zCDP mechanism is (ε, δ)-DP under the conversion of
    :func:`delta_for_rho` (Canonne, Kamath & Steinke 2020).

    For a fixed order α = 1 + x the conversion solves to ε(α) = αρ + (log(1/δ) − log α)/(α − 1) +
    log(1 − 1/α); its derivative in α is ρ − (log(1/δ) − log α)/(α − 1)², so the best order is the root of
    ρx² + log(1 + x) = log(1/δ) (unique: the left side increases in x). Every x > 0 gives a valid ε, so
    root-finding error can only make ε larger. Not to be confused with the looser ρ + 2√(ρ log(1/δ)).
    """
    r = validate_rho(rho)
    d = validate_delta(delta)
    if r == 0.0:
        return 0.0
    if math.isinf(r):
        return math.inf
    if d * d >= -math.expm1(-r):  # Bretagnolle–Huber: TV ≤ √(1 − e^(−KL)) ≤ δ, so (0, δ)-DP already holds
        return 0.0
    big_l = -math.log(d)

    def g(x: float) -> float:  # increasing in x
        return r * x * x + math.log1p(x) - big_l

    x_lo = 2.0 * big_l / (1.0 + math.sqrt(1.0 + 4.0 * r * big_l))  # ρx² + x = L, and log1p(x) ≤ x: g ≤ 0
    x_hi = math.sqrt(big_l / r)  # ρx² = L: g ≥ 0
    if g(x_lo) >= 0.0:
        x = x_lo
    elif g(x_hi) <= 0.0:
        x = x_hi
    else:
        x = _brentq(g, x_lo, x_hi)
    eps = (1.0 + x) * r + (big_l - math.log1p(x)) / x + math.log(x) - math.log1p(x)
    return max(0.0, eps)


def rho_for_epsilon(eps: float, delta: float) -> float:
    """The largest ρ such that ρ-zCDP implies (ε, δ)-DP under :func:`epsilon_for_rho`.

    Rounded conservatively: ``epsilon_for_rho(result, delta) <= eps`` always holds.
    """
    e = validate_epsilon(eps)
    d = validate_delta(delta)
    big_l = -math.log(d)

    def f(r: float) -> float:  # increasing in ρ
        return epsilon_for_rho(r, d) - e

    # The classical bound ε ≤ ρ + 2√(ρL) is looser than ours, so where it equals ε ours is ≤ ε.
    lo = (math.sqrt(big_l + e) - math.sqrt(big_l)) ** 2
    lo = max(lo, 1e-300)
    for _ in range(_MAXITER):
        if f(lo) <= 0:
            break
        lo /= 2.0  # pragma: no cover - the classical bound already guarantees f(lo) <= 0
    hi = 2.0 * lo
    for _ in range(_MAXITER):
        if f(hi) > 0:
            break
        hi *= 2.0
    else:  # pragma: no cover
        raise BudgetError(f"could not bracket rho for epsilon = {e:g}, delta = {d:g}")
    rho = lo if f(lo) == 0.0 else _brentq(f, lo, hi)
    for _ in range(200):
        if epsilon_for_rho(rho, d) <= e:
            return rho
        rho *= 1.0 - 1e-12
    raise BudgetError(  # pragma: no cover - brentq is accurate to ~1e-15
        f"could not calibrate rho for epsilon = {e:g}, delta = {d:g}"
    )
