"""Privacy accounting for Private Evolution: Gaussian DP composition and the exact ε(δ) conversion.

The mechanism spti runs is simple, which is what lets the accounting be *exact* rather than an upper bound:
each PE iteration releases one histogram of votes in which one private record (or one user, with
``unit="user"``) contributes total vote weight at most 1, so under add/remove-one adjacency the histogram
has L2 sensitivity 1. Adding N(0, σ²) to every bin is the Gaussian mechanism, which is exactly
(1/σ)-GDP (Gaussian differential privacy, Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022).
μ-GDP composes exactly: T adaptive iterations are √(Σ 1/σ_t²)-GDP, i.e. μ = √T/σ for a constant σ.

A μ-GDP mechanism is (ε, δ(ε))-DP for every ε ≥ 0 with (Balle & Wang, "Improving the Gaussian mechanism
for differential privacy: analytical calibration and optimal denoising", ICML 2018, Thm. 8; Dong et al.
Cor. 2.13)::

    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)

and this curve is tight: no smaller δ holds at that ε. Everything here is evaluated in log space (log_ndtr,
the scaled complementary error function erfcx, log1p/expm1), because the two terms cancel almost exactly
for large ε and δ itself can be far below the smallest float (ε = 500, δ = 1e-300 are fine).
ε(δ), μ(ε, δ) and σ(ε, δ, T) are obtained by Brent's method on brackets derived from the bound
δ(ε) < Φ(−ε/μ + μ/2), so a root is always bracketed and the functions are monotone on the bracket.

The (ε, δ) ↔ ρ conversions of zero-concentrated DP live in :mod:`spti.privacy.zcdp`, the budget of a run
(:class:`~spti.privacy.budget.PrivacyBudget`) in :mod:`spti.privacy.budget`; both validate their inputs
with the functions below.

Only numpy/scipy: this module is imported by ``spti privacy``, which must start in well under a second, so
``scipy.optimize`` (a few hundred ms to import) is imported only when a root is actually needed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from scipy import special

from spti.errors import BudgetError

__all__ = [
    "UNITS",
    "default_delta",
    "delta_for_epsilon",
    "epsilon_for_delta",
    "epsilon_from_sigma",
    "log_delta_for_epsilon",
    "mu_for_epsilon",
    "sigma_from_epsilon",
    "validate_delta",
    "validate_epsilon",
    "validate_iterations",
    "validate_num_private",
    "validate_sigma",
    "validate_unit",
]

#: Units of privacy: what one "neighbouring dataset" adds or removes.
UNITS = ("record", "user")

_SQRT2 = math.sqrt(2.0)
_RTOL = 4 * np.finfo(float).eps  # the smallest relative tolerance brentq accepts
_XTOL = 1e-300
_MAXITER = 1000
_MU_MAX = 1e153  # above it μ²/2 (the scale of ε) is beyond the float range: refused, not mis-computed


# ---------------------------------------------------------------------------------------------------------
# Validation: every budget parameter the user can set goes through one of these, so that a bad value fails
# early with a message that says what to do, instead of a nan deep inside the accountant.
# ---------------------------------------------------------------------------------------------------------


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BudgetError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    x = float(value)
    if math.isnan(x):
        raise BudgetError(f"{name} is NaN; set it to a positive number")
    return x


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BudgetError(
            f"{name} must be an integer, got {type(value).__name__} ({value!r}); write it without a decimal point"
        )
    return int(value)


def validate_epsilon(eps: Any, allow_inf: bool = False) -> float:
    """Return ``eps`` as a float if it is a valid privacy budget ε: a finite number > 0.

    ε = ∞ (no privacy) is refused unless ``allow_inf``; a run that is not private must say so explicitly
    (:meth:`PrivacyBudget.not_private`), so that a typo can never silently switch the noise off.
    """
    x = _real(eps, "epsilon")
    if math.isinf(x):
        if x > 0 and allow_inf:
            return x
        raise BudgetError(
            f"epsilon = {x} is not a privacy budget. Use a finite epsilon > 0 (typical values 1 to 10); "
            "to run without differential privacy, ask for it explicitly (privacy.not_private: true / --not-private)."
        )
    if x <= 0:
        raise BudgetError(
            f"epsilon = {x:g} must be > 0 (epsilon = 0 would need infinite noise). "
            "Typical values are 1 to 10; smaller is more private."
        )
    return x


def validate_num_private(n: Any) -> int:
    """Return the number of private records (or users) N as an int ≥ 1."""
    k = _integer(n, "num_private (N, the number of private records or users)")
    if k < 1:
        raise BudgetError(f"num_private = {k}: there must be at least one private record (or user)")
    return k


def default_delta(n: int) -> float:
    """The default δ = 1/(N ln N) for N ≥ 3 private records (or users).

    Why: δ is the probability with which the guarantee may fail outright, so it must be below 1/N
    (otherwise "release one random record in full" would satisfy the definition). 1/(N ln N) is below 1/N
    exactly when ln N > 1, i.e. N ≥ 3, and shrinks slightly faster than 1/N; it is the common choice in the
    PE literature (DPSDA, Aug-PE). For N ≤ 2 (where 1/(N ln N) ≥ 1/N) δ must be given explicitly.
    """
    k = validate_num_private(n)
    if k < 3:
        raise BudgetError(
            f"the default delta 1/(N ln N) is not below 1/N for N = {k} private records; "
            "set delta explicitly (a value below 1/N, e.g. 1e-6)"
        )
    return 1.0 / (k * math.log(k))


def validate_delta(delta: Any, n: int | None = None, unit: str = "record") -> float:
    """Return ``delta`` as a float if it is in (0, 1) and, when N is given, below 1/N.

    δ ≥ 1/N is refused: a mechanism that publishes one randomly chosen private record verbatim is
    (0, 1/N)-DP, so such a δ permits exactly the failure DP is meant to prevent.
    """
    x = _real(delta, "delta")
    if not (0.0 < x < 1.0):
        raise BudgetError(
            f"delta = {x:g} must be strictly between 0 and 1. Leave it unset to use the default 1/(N ln N), "
            "or pass a small value well below 1/N (e.g. 1e-6)."
        )
    if n is not None:
        k = validate_num_private(n)
        if x >= 1.0 / k:
            hint = (
                f"the default 1/(N ln N) = {default_delta(k):.3g} (leave delta unset)" if k >= 3 else "1e-6"
            )
            raise BudgetError(
                f"delta = {x:g} is not below 1/N = {1.0 / k:.3g} (N = {k} private {unit}s). With delta >= 1/N "
                "a mechanism may publish a whole private "
                f"{unit} and still satisfy (epsilon, delta)-DP, so the guarantee would be meaningless. "
                f"Use a smaller delta, e.g. {hint}."
            )
    return x


def validate_iterations(iterations: Any) -> int:
    """Return the number of PE iterations T (noisy histograms released) as an int ≥ 1."""
    t = _integer(iterations, "iterations (T, the number of PE iterations)")
    if t < 1:
        raise BudgetError(f"iterations = {t}: Private Evolution needs at least 1 iteration")
    return t


def validate_sigma(sigma: Any, allow_zero: bool = False) -> float:
    """Return the noise multiplier σ (noise std for L2 sensitivity 1) as a finite float > 0.

    σ = 0 means no noise and is accepted only with ``allow_zero`` (not-private runs).
    """
    x = _real(sigma, "sigma")
    if math.isinf(x):
        raise BudgetError("sigma = inf would destroy every histogram; use a finite noise multiplier")
    if x < 0 or (x == 0 and not allow_zero):
        raise BudgetError(
            f"sigma = {x:g} must be > 0 (sigma = 0 means no noise, i.e. no privacy; ask for a not-private "
            "run explicitly instead). Or give epsilon and let spti compute sigma."
        )
    return x


def validate_unit(unit: Any) -> str:
    """Return the unit of privacy, ``"record"`` or ``"user"``."""
    if unit not in UNITS:
        raise BudgetError(
            f"unit = {unit!r} is not a unit of privacy; use 'record' (one private image) or 'user' "
            "(all images of one person, each user's votes weighted to sum to at most 1)"
        )
    return str(unit)


def _validate_mu(mu: Any) -> float:
    x = _real(mu, "mu")
    if x <= 0:
        raise BudgetError(f"mu = {x:g} must be > 0 (mu is sqrt(T)/sigma)")
    return x


def _validate_eps_nonneg(eps: Any) -> float:
    x = _real(eps, "epsilon")
    if x < 0:
        raise BudgetError(f"epsilon = {x:g} must be >= 0")
    return x


# ---------------------------------------------------------------------------------------------------------
# The analytic Gaussian trade-off (Balle & Wang 2018) in log space.
# ---------------------------------------------------------------------------------------------------------


def _brentq(f: Any, lo: float, hi: float) -> float:
    from scipy.optimize import brentq  # lazy: see the module docstring

    return float(brentq(f, lo, hi, xtol=_XTOL, rtol=_RTOL, maxiter=_MAXITER))


def _log_delta(eps: float, mu: float) -> float:
    """log δ(ε) for a μ-GDP mechanism; -inf when δ underflows even in log space (never nan)."""
    a = -eps / mu + mu / 2.0
    b = -eps / mu - mu / 2.0
    log_pa = float(special.log_ndtr(a))
    if a <= 0.0:
        # Both a, b <= 0. Write Φ(x) = ½ erfcx(−x/√2) e^{−x²/2}; since (b² − a²)/2 = ε exactly, the e^ε
        # factor cancels analytically: e^ε Φ(b)/Φ(a) = erfcx(−b/√2)/erfcx(−a/√2). No overflow at large ε
        # and no loss of precision from subtracting two huge logs.
        log_r = math.log(special.erfcx(-b / _SQRT2)) - math.log(special.erfcx(-a / _SQRT2))
    else:
        # a > 0 means ε < μ²/2: all terms are moderate.
        log_r = eps + float(special.log_ndtr(b)) - log_pa
    if not log_r < 0.0:  # rounding when δ is far below the float range
        return -math.inf
    return log_pa + math.log(-math.expm1(log_r))  # log(Φ(a) (1 − r))


def log_delta_for_epsilon(eps: float, mu: float) -> float:
    """Natural log of :func:`delta_for_epsilon`; useful when δ is below the smallest float."""
    e = _validate_eps_nonneg(eps)
    m = _validate_mu(mu)
    if math.isinf(m):
        return 0.0
    if math.isinf(e):
        return -math.inf
    return _log_delta(e, m)


def delta_for_epsilon(eps: float, mu: float) -> float:
    """The tight δ at which a μ-GDP mechanism is (ε, δ)-DP (Balle & Wang 2018; Dong, Roth & Su 2022).

    ``mu = inf`` (no noise) gives δ = 1; ``eps = inf`` gives δ = 0. The result may underflow to 0.0 for
    very large ε; use :func:`log_delta_for_epsilon` to see how small it is.
    """
    return math.exp(log_delta_for_epsilon(eps, mu))


def epsilon_for_delta(delta: float, mu: float) -> float:
    """The smallest ε ≥ 0 such that a μ-GDP mechanism is (ε, δ)-DP (inverse of :func:`delta_for_epsilon`).

    Returns 0.0 when δ ≥ δ(0) = 2Φ(μ/2) − 1 (so little signal that (0, δ) already holds) and ∞ for μ = ∞.
    """
    d = validate_delta(delta)
    m = _validate_mu(mu)
    if math.isinf(m):
        return math.inf
    if m > _MU_MAX:  # ε ≈ μ²/2 would overflow the float range (e.g. sigma = 1e-300)
        raise BudgetError(
            f"mu = {m:.3g}: the noise is so small that epsilon would exceed the float range (about mu^2/2); "
            "such a run protects nothing. Use a larger sigma, give epsilon instead, or ask for a not-private run"
        )
    log_target = math.log(d)
    # δ(0) = Φ(μ/2) − Φ(−μ/2) = erf(μ/(2√2)).
    if math.log(special.erf(m / (2 * _SQRT2))) <= log_target:
        return 0.0

    def f(e: float) -> float:  # decreasing in ε
        v = _log_delta(e, m) - log_target
        return max(v, -1e300)

    # δ(ε) < Φ(−ε/μ + μ/2), so at the ε where Φ(−ε/μ + μ/2) = δ we are already past the root.
    hi = m * m / 2.0 - m * float(special.ndtri(d))
    hi = max(hi, 1e-300)
    for _ in range(_MAXITER):
        if f(hi) <= 0:
            break
        hi *= 2.0
    else:  # pragma: no cover - the bound above makes this unreachable
        raise BudgetError(f"could not bracket epsilon for delta = {d:g}, mu = {m:g}")
    if f(hi) == 0.0:
        return hi
    return _brentq(f, 0.0, hi)


def mu_for_epsilon(eps: float, delta: float) -> float:
    """The largest μ such that a μ-GDP mechanism is (ε, δ)-DP: solves δ(ε; μ) = δ (increasing in μ)."""
    e = validate_epsilon(eps)
    d = validate_delta(delta)
    log_target = math.log(d)

    def f(m: float) -> float:  # increasing in μ
        v = _log_delta(e, m) - log_target
        return max(v, -1e300)

    # δ(ε; μ) < Φ(−ε/μ + μ/2); solving Φ(−ε/μ + μ/2) = δ for μ gives μ_lo with δ(ε; μ_lo) < δ.
    # μ_lo = z + √(z² + 2ε) with z = Φ⁻¹(δ), written without cancellation for z ≪ 0.
    z = float(special.ndtri(d))
    lo = 2.0 * e / (math.sqrt(z * z + 2.0 * e) - z)
    for _ in range(_MAXITER):
        if f(lo) <= 0:
            break
        lo /= 2.0
    hi = 2.0 * lo
    for _ in range(_MAXITER):
        if f(hi) >= 0 or math.isinf(hi):
            break
        hi *= 2.0
    if not (f(lo) <= 0 <= f(hi)) or math.isinf(hi):  # pragma: no cover - δ < 1 guarantees a root
        raise BudgetError(f"could not bracket mu for epsilon = {e:g}, delta = {d:g}")
    if f(lo) == 0.0:
        return lo
    if f(hi) == 0.0:
        return hi
    return _brentq(f, lo, hi)


def epsilon_from_sigma(sigma: float, iterations: int, delta: float) -> float:
    """ε spent by T Gaussian histograms of L2 sensitivity 1 with noise σ: ε(δ) at μ = √T/σ."""
    s = validate_sigma(sigma)
    t = validate_iterations(iterations)
    return epsilon_for_delta(delta, math.sqrt(t) / s)


def sigma_from_epsilon(eps: float, delta: float, iterations: int) -> float:
    """The smallest noise σ for which T Gaussian histograms of sensitivity 1 are (ε, δ)-DP.

    Rounded conservatively: the returned σ satisfies ``epsilon_from_sigma(σ, T, δ) <= eps`` (it is at
    most a few parts in 1e10 larger than the exact root).
    """
    e = validate_epsilon(eps)
    d = validate_delta(delta)
    t = validate_iterations(iterations)
    sigma = math.sqrt(t) / mu_for_epsilon(e, d) * (1.0 + 1e-12)
    for _ in range(100):
        if epsilon_from_sigma(sigma, t, d) <= e:
            return sigma
        sigma *= 1.0 + 1e-10
    raise BudgetError(  # pragma: no cover - the root finder is accurate to ~1e-15
        f"could not calibrate sigma for epsilon = {e:g}, delta = {d:g}, T = {t}"
    )
