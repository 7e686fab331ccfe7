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

Only numpy/scipy: this module is imported by ``spti privacy``, which must start in well under a second, so
``scipy.optimize`` (a few hundred ms to import) is imported only when a root is actually needed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special

from spti.errors import BudgetError

__all__ = [
    "DELTA_WARN",
    "UNITS",
    "PrivacyBudget",
    "dataset_size_statement",
    "default_delta",
    "delta_warning",
    "delta_for_epsilon",
    "delta_for_rho",
    "epsilon_for_delta",
    "epsilon_for_rho",
    "epsilon_from_sigma",
    "log_delta_for_epsilon",
    "mu_for_epsilon",
    "resolve_noise",
    "rho_for_epsilon",
    "sigma_from_epsilon",
    "validate_delta",
    "validate_epsilon",
    "validate_iterations",
    "validate_num_private",
    "validate_rho",
    "validate_sigma",
    "validate_unit",
]

#: Units of privacy: what one "neighbouring dataset" adds or removes.
UNITS = ("record", "user")

#: Above this δ spti warns: δ is the probability with which the guarantee may fail outright, and the PE
#: literature and most DP deployments use δ ≤ 1e-5 (the default 1/(N ln N) exceeds it for N below ~10⁴;
#: N = 4 gives δ = 0.18, which protects nobody).
DELTA_WARN = 1e-5

# Kinds of noise (spti.privacy.discrete.NOISE_KINDS, repeated here because discrete imports this module).
_NOISE_KINDS = ("gaussian", "discrete")

_SQRT2 = math.sqrt(2.0)
_RTOL = 4 * np.finfo(float).eps  # the smallest relative tolerance brentq accepts
_XTOL = 1e-300
_MAXITER = 1000
_MU_MAX = 1e153  # above it μ²/2 (the scale of ε) is beyond the float range: refused, not mis-computed
# Relative tolerance when checking that a stored budget's ε matches its σ (see PrivacyBudget).
_CONSISTENCY_RTOL = 1e-6


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


# ---------------------------------------------------------------------------------------------------------
# Zero-concentrated DP (zCDP) and its conversion to (ε, δ)-DP. Used for mechanisms whose exact trade-off curve
# is not the Gaussian one, e.g. the discrete Gaussian of spti.privacy.discrete: for those, a ρ-zCDP bound per
# histogram is what is *proven*, ρ composes by addition, and the total is converted here.
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# The budget of one run.
# ---------------------------------------------------------------------------------------------------------


def _float_to_json(x: float) -> float | str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def _float_from_json(x: Any, name: str) -> float:
    if isinstance(x, str):
        if x in ("inf", "Infinity"):
            return math.inf
        raise BudgetError(f"{name}: expected a number or 'inf', got the string {x!r}")
    return _real(x, name)


@dataclass(frozen=True)
class PrivacyBudget:
    """The privacy parameters of one run: (ε, δ)-DP with noise σ over T iterations, for N private units.

    Build it with :meth:`from_epsilon` (the usual way: the user says how much privacy to spend and spti
    calibrates σ), :meth:`from_sigma` (σ fixed, ε computed), or :meth:`not_private` (ε = ∞, σ = 0: the
    only way to switch noise off, so that it is never switched off by accident).

    Fields: ``epsilon``, ``delta``; ``sigma`` (noise std per histogram bin, L2 sensitivity 1);
    ``iterations`` (T, noisy histograms released); ``mu`` = √T/σ (the run is μ-GDP); ``num_private`` (N);
    ``unit`` ("record" or "user"); ``private``; ``delta_is_default`` (δ = 1/(N ln N) chosen by spti).
    A not-private budget has ε = μ = ∞, σ = 0 and δ = 0 (the vacuous (∞, 0)-DP).

    ``noise``: "gaussian" (the default floating-point sampler, accounted exactly in GDP) or "discrete" (the
    exact discrete Gaussian of :mod:`spti.privacy.discrete` on the integer vote grid of resolution
    ``grid``, accounted with its proven zCDP bound, so ε is a little larger at the same σ).
    ``num_private_is_bound``: ``num_private`` is a *public upper bound* on N given by the user (and used
    for the default δ), not the exact number of private units, which then appears nowhere in the budget.
    The three are written by :meth:`to_dict` only when they differ from the defaults, so the record of a
    plain Gaussian run is unchanged.

    The constructor checks the fields against each other (μ = √T/σ, ε = ε(σ, T, δ)), so a budget read back
    from a hand-edited privacy.json cannot claim more privacy than its σ gives.
    """

    epsilon: float
    delta: float
    sigma: float
    iterations: int
    mu: float
    num_private: int
    unit: str = "record"
    private: bool = True
    delta_is_default: bool = False
    noise: str = "gaussian"
    grid: int | None = None
    num_private_is_bound: bool = False

    def __post_init__(self) -> None:
        validate_unit(self.unit)
        t = validate_iterations(self.iterations)
        n = validate_num_private(self.num_private)
        if not isinstance(self.private, bool) or not isinstance(self.delta_is_default, bool):
            raise BudgetError("private and delta_is_default must be true or false")
        if not isinstance(self.num_private_is_bound, bool):
            raise BudgetError("num_private_is_bound must be true or false")
        if self.noise not in _NOISE_KINDS:
            raise BudgetError(f"noise = {self.noise!r} is not a kind of noise; use one of {', '.join(_NOISE_KINDS)}")
        if self.noise == "gaussian":
            if self.grid is not None:
                raise BudgetError("grid (the integer vote grid) applies only to noise = 'discrete'")
        else:
            from spti.privacy.discrete import validate_scale

            validate_scale(self.grid)
        if not self.private:
            if not (
                _real(self.epsilon, "epsilon") == math.inf
                and _real(self.sigma, "sigma") == 0.0
                and _real(self.mu, "mu") == math.inf
            ):
                raise BudgetError("a not-private budget must have epsilon = inf, sigma = 0 and mu = inf")
            return
        eps = _real(self.epsilon, "epsilon")
        if math.isinf(eps) or eps < 0:
            raise BudgetError(f"epsilon = {eps} is invalid for a private budget; it must be finite and >= 0")
        d = validate_delta(self.delta, n, self.unit)
        s = validate_sigma(self.sigma)
        mu = _validate_mu(self.mu)
        expected_mu = math.sqrt(t) / s
        if not math.isclose(mu, expected_mu, rel_tol=1e-9):
            raise BudgetError(f"mu = {mu!r} does not match sqrt(T)/sigma = {expected_mu!r}")
        actual = _epsilon_of(s, t, d, self.unit, self.noise, self.grid)
        if actual > eps * (1 + 1e-9) + 1e-12 or not math.isclose(
            actual, eps, rel_tol=_CONSISTENCY_RTOL, abs_tol=1e-12
        ):
            raise BudgetError(
                f"epsilon = {eps!r} does not match sigma = {s!r}, T = {t}, delta = {d!r}, which give epsilon = "
                f"{actual!r}; rebuild the budget with PrivacyBudget.from_epsilon or from_sigma"
            )

    # -- constructors -------------------------------------------------------------------------------------

    @staticmethod
    def _resolve_delta(delta: float | None, n: int, unit: str) -> tuple[float, bool]:
        if delta is None:
            return default_delta(n), True
        return validate_delta(delta, n, unit), False

    @classmethod
    def from_epsilon(
        cls,
        epsilon: float,
        iterations: int,
        num_private: int,
        delta: float | None = None,
        unit: str = "record",
        *,
        noise: str = "gaussian",
        grid: int | None = None,
        num_private_is_bound: bool = False,
    ) -> PrivacyBudget:
        """Calibrate σ so that T iterations are (ε, δ)-DP; δ defaults to 1/(N ln N).

        ε = ∞ is refused (use :meth:`not_private`). ``noise="discrete"`` calibrates σ with the discrete
        sampler's zCDP accountant on the vote grid ``grid`` (None: :func:`resolve_grid`'s default).
        ``num_private_is_bound``: ``num_private`` is a public upper bound on N (see the class docstring).
        """
        eps = validate_epsilon(epsilon)
        t = validate_iterations(iterations)
        n = validate_num_private(num_private)
        u = validate_unit(unit)
        kind, g = resolve_noise(noise, grid, u)
        d, is_default = cls._resolve_delta(delta, n, u)
        if kind == "discrete":
            from spti.privacy.discrete import sigma_for_epsilon_discrete

            sigma = sigma_for_epsilon_discrete(eps, t, d, unit=u, scale=g)
        else:
            sigma = sigma_from_epsilon(eps, d, t)
        return cls(eps, d, sigma, t, math.sqrt(t) / sigma, n, u, True, is_default, kind, g, bool(num_private_is_bound))

    @classmethod
    def from_sigma(
        cls,
        sigma: float,
        iterations: int,
        num_private: int,
        delta: float | None = None,
        unit: str = "record",
        *,
        noise: str = "gaussian",
        grid: int | None = None,
        num_private_is_bound: bool = False,
    ) -> PrivacyBudget:
        """The (ε, δ) spent by T iterations with a given noise σ; δ defaults to 1/(N ln N)."""
        s = validate_sigma(sigma)
        t = validate_iterations(iterations)
        n = validate_num_private(num_private)
        u = validate_unit(unit)
        kind, g = resolve_noise(noise, grid, u)
        d, is_default = cls._resolve_delta(delta, n, u)
        mu = math.sqrt(t) / s
        eps = _epsilon_of(s, t, d, u, kind, g)
        return cls(eps, d, s, t, mu, n, u, True, is_default, kind, g, bool(num_private_is_bound))

    @classmethod
    def not_private(
        cls, iterations: int, num_private: int, unit: str = "record", *, num_private_is_bound: bool = False
    ) -> PrivacyBudget:
        """An explicitly NOT differentially private run: σ = 0, ε = ∞ (for debugging and upper bounds)."""
        t = validate_iterations(iterations)
        n = validate_num_private(num_private)
        u = validate_unit(unit)
        return cls(math.inf, 0.0, 0.0, t, math.inf, n, u, False, False,
                   num_private_is_bound=bool(num_private_is_bound))

    # -- serialisation ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (∞ written as the string "inf"); :meth:`from_dict` reads it back."""
        d = asdict(self)
        for k in ("epsilon", "delta", "sigma", "mu"):
            d[k] = _float_to_json(d[k])
        # Written only when not the default, so a plain Gaussian run's record is what it always was.
        if self.noise == "gaussian":
            del d["noise"], d["grid"]
        if not self.num_private_is_bound:
            del d["num_private_is_bound"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyBudget:
        """Rebuild a budget written by :meth:`to_dict`; the fields are re-checked against each other."""
        if not isinstance(data, dict):
            raise BudgetError(f"a privacy budget must be a JSON object, got {type(data).__name__}")
        required = ("epsilon", "delta", "sigma", "iterations", "mu", "num_private")
        missing = [k for k in required if k not in data]
        if missing:
            raise BudgetError(f"privacy budget is missing {', '.join(missing)}")
        return cls(
            epsilon=_float_from_json(data["epsilon"], "epsilon"),
            delta=_float_from_json(data["delta"], "delta"),
            sigma=_float_from_json(data["sigma"], "sigma"),
            iterations=data["iterations"],
            mu=_float_from_json(data["mu"], "mu"),
            num_private=data["num_private"],
            unit=data.get("unit", "record"),
            private=data.get("private", True),
            delta_is_default=data.get("delta_is_default", False),
            noise=data.get("noise", "gaussian"),
            grid=data.get("grid"),
            num_private_is_bound=data.get("num_private_is_bound", False),
        )

    def describe(self) -> str:
        """One human sentence stating the guarantee, for logs, the CLI and the report."""
        plural = "s" if self.num_private != 1 else ""
        if self.num_private_is_bound:
            unit_n = f"N <= {self.num_private} private {self.unit}{plural} (a public bound)"
        else:
            unit_n = f"N = {self.num_private} private {self.unit}{plural}"
        if not self.private:
            return (
                f"NOT differentially private: no noise (sigma = 0) in {self.iterations} iteration(s) over "
                f"{unit_n}. The output may reveal private data; do not release it as private."
            )
        if self.delta_is_default:
            dflt = " = 1/(B ln B), B the public bound on N" if self.num_private_is_bound else " = 1/(N ln N)"
        else:
            dflt = ""
        head = (
            f"({self.epsilon:.4g}, {self.delta:.3g})-differentially private per {self.unit} "
            f"(add/remove one {self.unit}; delta{dflt}), {unit_n}: {self.iterations} noisy histogram(s) "
        )
        if self.noise == "discrete":
            from spti.privacy.discrete import rho_discrete

            rho = rho_discrete(self.sigma, self.iterations, unit=self.unit, scale=self.grid)
            grid = f"on the vote grid 1/{self.grid}, " if self.grid != 1 else ""
            return head + (
                f"with exact discrete Gaussian noise sigma = {self.sigma:.4g} ({grid}{rho:.4g}-zCDP, the bound "
                "proven for it by Canonne, Kamath & Steinke 2020)."
            )
        return head + f"with Gaussian noise sigma = {self.sigma:.4g} (exactly {self.mu:.4g}-GDP)."


def resolve_noise(noise: Any, grid: Any, unit: str) -> tuple[str, int | None]:
    """The noise kind and the integer vote grid a budget uses.

    ``grid`` applies to the discrete sampler only; None means 1 at record level (votes are already
    integers) and :data:`spti.privacy.discrete.DEFAULT_USER_SCALE` at user level (1/k is exact for users
    with up to 10 rows).
    """
    if noise not in _NOISE_KINDS:
        raise BudgetError(f"noise = {noise!r} is not a kind of noise; use one of {', '.join(_NOISE_KINDS)}")
    if noise == "gaussian":
        if grid is not None:
            raise BudgetError("grid (the integer vote grid) applies only to noise = 'discrete'")
        return "gaussian", None
    from spti.privacy.discrete import DEFAULT_USER_SCALE, validate_scale

    if grid is None:
        return "discrete", (1 if validate_unit(unit) == "record" else DEFAULT_USER_SCALE)
    return "discrete", validate_scale(grid)


def _epsilon_of(sigma: float, iterations: int, delta: float, unit: str, noise: str, grid: int | None) -> float:
    """ε of T histograms at σ, δ with the accountant proven for the noise kind."""
    if noise == "discrete":
        from spti.privacy.discrete import epsilon_discrete

        return epsilon_discrete(sigma, iterations, delta, unit=unit, scale=grid)
    return epsilon_for_delta(delta, math.sqrt(iterations) / sigma)


def delta_warning(budget: PrivacyBudget) -> str | None:
    """A warning when the budget's δ is above :data:`DELTA_WARN` (None otherwise, and for no-noise runs).

    Why: δ is the probability with which the guarantee may fail outright. The default 1/(N ln N) is
    large for small data sets (N = 4 gives δ = 0.18), where (ε, δ) no longer protects anyone.
    """
    if not budget.private or budget.delta <= DELTA_WARN:
        return None
    origin = "the default 1/(N ln N)" if budget.delta_is_default else "the delta given"
    return (
        f"delta = {budget.delta:.3g} ({origin}) is above {DELTA_WARN:g}: the guarantee may fail outright with "
        f"probability up to delta, so ({budget.epsilon:.3g}, {budget.delta:.3g})-DP protects little. Set a "
        "smaller delta (privacy.delta / --delta, e.g. 1e-6) and accept the larger noise it needs."
    )


def dataset_size_statement(budget: PrivacyBudget) -> str:
    """What the guarantee assumes about N, the number of private records (or users), in words.

    Why it matters: add/remove-one DP changes N by one, so N itself is not protected. The default
    δ = 1/(N ln N), hence σ, depends on N, and the ledger publishes N: sound only when N is public. A user
    who cannot publish N gives a public upper bound B (``privacy.num_private_bound``), which replaces N
    everywhere, or an explicit δ, with which σ does not depend on N.
    """
    u = budget.unit
    n = budget.num_private
    if budget.num_private_is_bound:
        how = "delta = 1/(B ln B) is computed from it" if budget.delta_is_default else "delta was given explicitly"
        return (
            f"Only a public upper bound on the number of private {u}s is used and recorded: num_private = {n} "
            f"is that bound B, given by the user ({how}); the exact number of private {u}s is not in this "
            "ledger."
        )
    if not budget.private:
        return f"The number of private {u}s recorded here (num_private = {n}) is exact and not protected."
    if budget.delta_is_default:
        return (
            f"The number of private {u}s is treated as public: N = {n} is recorded here, and the default "
            "delta = 1/(N ln N), hence sigma, is computed from it. If N itself is sensitive, give a public "
            "upper bound (privacy.num_private_bound) or set privacy.delta explicitly."
        )
    return (
        f"delta was given explicitly, so sigma does not depend on the number of private {u}s; the exact "
        f"number recorded here (num_private = {n}) is not protected by the guarantee: it is treated as public. "
        "Give privacy.num_private_bound to record a public upper bound instead."
    )
