"""Tests of the Gaussian-DP accountant: against Google's dp_accounting, high-precision arithmetic, round trips,
monotonicity, extreme values and every invalid budget parameter."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spti.errors import BudgetError, ConfigError
from spti.privacy import (
    PrivacyBudget,
    default_delta,
    delta_for_epsilon,
    epsilon_for_delta,
    epsilon_from_sigma,
    log_delta_for_epsilon,
    mu_for_epsilon,
    sigma_from_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_num_private,
    validate_sigma,
    validate_unit,
)

SIGMAS = [0.5, 1, 2, 5, 13.5, 50]
ITERATIONS = [1, 2, 10, 50]
DELTAS = [1e-3, 1e-5, 1e-8]
GRID = list(itertools.product(SIGMAS, ITERATIONS, DELTAS))


# --------------------------------------------------------------------------------------------------------
# Against an independent implementation (Google's dp_accounting)
# --------------------------------------------------------------------------------------------------------


def test_epsilon_and_sigma_match_dp_accounting_exact_gaussian() -> None:
    """T compositions of N(0, σ²) are exactly one Gaussian mechanism with std σ/√T; dp_accounting's
    gaussian_mechanism module computes its ε and σ exactly (Balle & Wang 2018), by its own code."""
    gm = pytest.importorskip("dp_accounting.gaussian_mechanism")
    for sigma, t, delta in GRID:
        ours = epsilon_from_sigma(sigma, t, delta)
        theirs = gm.get_epsilon_gaussian(sigma / math.sqrt(t), delta)
        assert ours > 0 and theirs > 0
        assert ours == pytest.approx(theirs, rel=1e-4), (sigma, t, delta)
        # ... and back: the σ that spends exactly this ε.
        sigma_theirs = gm.get_sigma_gaussian(theirs, delta) * math.sqrt(t)
        assert sigma_from_epsilon(theirs, delta, t) == pytest.approx(sigma_theirs, rel=1e-4)
        assert sigma_from_epsilon(ours, delta, t) == pytest.approx(sigma, rel=1e-4)


def test_delta_matches_dp_accounting_gaussian_privacy_loss() -> None:
    """GaussianPrivacyLoss.get_delta_for_epsilon is the closed-form hockey-stick divergence of one
    Gaussian mechanism (via the inverse privacy loss, a different derivation from ours)."""
    plm = pytest.importorskip("dp_accounting.pld.privacy_loss_mechanism")
    for sigma, t in itertools.product(SIGMAS, ITERATIONS):
        loss = plm.GaussianPrivacyLoss(sigma / math.sqrt(t))
        for eps in [0.05, 0.5, 1.0, 4.0, 16.0]:
            theirs = loss.get_delta_for_epsilon(eps)
            ours = delta_for_epsilon(eps, math.sqrt(t) / sigma)
            if theirs < 1e-200:  # their linear-space formula loses relative precision down there
                assert ours < 1e-190
                continue
            assert ours == pytest.approx(theirs, rel=1e-6), (sigma, t, eps)


@pytest.mark.parametrize(
    "sigma, t, delta", [(1.0, 10, 1e-5), (13.5, 50, 1e-8), (5.0, 2, 1e-3), (0.5, 1, 1e-5)]
)
def test_composition_matches_dp_accounting_pld_and_rdp(sigma: float, t: int, delta: float) -> None:
    """The PLD accountant composes T Gaussian events numerically (a pessimistic discretisation): it must
    agree closely and never be below the exact value. RDP is a strictly looser upper bound."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    ours = epsilon_from_sigma(sigma, t, delta)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(dp_accounting.GaussianDpEvent(sigma), t)
    eps_pld = pld.get_epsilon(delta)
    assert eps_pld == pytest.approx(ours, rel=1e-3)
    assert eps_pld >= ours * (1 - 1e-9)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(dp_accounting.GaussianDpEvent(sigma), t)
    assert rdp.get_epsilon(delta) > ours


def test_delta_matches_high_precision_formula_including_extremes() -> None:
    """δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) evaluated with 60 significant digits (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60

    def exact_log_delta(eps: float, mu: float) -> float:
        e, m = mpmath.mpf(eps), mpmath.mpf(mu)
        d = mpmath.ncdf(-e / m + m / 2) - mpmath.exp(e) * mpmath.ncdf(-e / m - m / 2)
        return float(mpmath.log(d))

    cases = [
        (0.0, 1.0),
        (0.01, 0.1),
        (1.0, 0.3),
        (1.0, 1.0),
        (5.0, 2.0),
        (40.0, 1.0),
        (500.0, 1.0),
        (500.0, 0.05),
        (3.0, 30.0),
        (1e-6, 1e-3),
        (100.0, 10.0),
        (2000.0, 3.0),
    ]
    for eps, mu in cases:
        ours = log_delta_for_epsilon(eps, mu)
        assert math.isfinite(ours)
        assert ours == pytest.approx(exact_log_delta(eps, mu), rel=1e-9, abs=1e-12), (eps, mu)


# --------------------------------------------------------------------------------------------------------
# Round trips, consistency, monotonicity
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma, t, delta", GRID)
def test_round_trip_sigma_epsilon_sigma(sigma: float, t: int, delta: float) -> None:
    eps = epsilon_from_sigma(sigma, t, delta)
    assert sigma_from_epsilon(eps, delta, t) == pytest.approx(sigma, rel=1e-8)


@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0, 4.0, 10.0, 100.0, 500.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-8, 1e-30, 1e-300])
def test_round_trip_epsilon_sigma_epsilon_is_conservative(eps: float, delta: float) -> None:
    for t in (1, 7, 1000):
        sigma = sigma_from_epsilon(eps, delta, t)
        assert math.isfinite(sigma) and sigma > 0
        spent = epsilon_from_sigma(sigma, t, delta)
        assert spent <= eps  # rounding never spends more than asked
        assert spent == pytest.approx(eps, rel=1e-8)
        # Back through δ too: δ(ε) at the calibrated μ is the target δ.
        assert log_delta_for_epsilon(eps, math.sqrt(t) / sigma) == pytest.approx(math.log(delta), rel=1e-7)


def test_mu_for_epsilon_inverts_delta_for_epsilon() -> None:
    for eps, delta in itertools.product([0.001, 0.3, 2.0, 30.0], [0.5, 1e-2, 1e-9, 1e-200]):
        mu = mu_for_epsilon(eps, delta)
        assert log_delta_for_epsilon(eps, mu) == pytest.approx(math.log(delta), rel=1e-8, abs=1e-10)
        assert epsilon_for_delta(delta, mu) == pytest.approx(eps, rel=1e-7)


def test_epsilon_is_zero_when_delta_exceeds_delta_at_zero() -> None:
    mu = 0.001  # δ(0) = erf(μ/(2√2)) ≈ 4e-4
    assert epsilon_for_delta(1e-3, mu) == 0.0
    assert epsilon_for_delta(1e-4, mu) > 0.0


@settings(max_examples=60, deadline=None)
@given(
    eps=st.floats(0.0, 200.0),
    mu1=st.floats(1e-3, 50.0),
    mu2=st.floats(1e-3, 50.0),
)
def test_delta_decreasing_in_epsilon_increasing_in_mu(eps: float, mu1: float, mu2: float) -> None:
    lo, hi = sorted((mu1, mu2))
    assert log_delta_for_epsilon(eps, lo) <= log_delta_for_epsilon(eps, hi) + 1e-12
    assert log_delta_for_epsilon(eps, hi) <= log_delta_for_epsilon(eps * 0.9, hi) + 1e-12
    d = delta_for_epsilon(eps, hi)
    assert 0.0 <= d <= 1.0 and not math.isnan(d)


def test_epsilon_monotone_in_sigma_iterations_delta() -> None:
    sigmas = np.geomspace(0.3, 100, 15)
    eps = [epsilon_from_sigma(s, 10, 1e-6) for s in sigmas]
    assert all(a > b for a, b in zip(eps, eps[1:]))  # more noise, less ε
    eps_t = [epsilon_from_sigma(3.0, t, 1e-6) for t in (1, 2, 5, 10, 100, 1000)]
    assert all(a < b for a, b in zip(eps_t, eps_t[1:]))  # more iterations, more ε
    eps_d = [epsilon_from_sigma(3.0, 10, d) for d in (1e-2, 1e-4, 1e-8, 1e-16, 1e-100)]
    assert all(a < b for a, b in zip(eps_d, eps_d[1:]))  # smaller δ, larger ε
    sig = [sigma_from_epsilon(e, 1e-6, 10) for e in (0.1, 0.5, 1, 4, 16)]
    assert all(a > b for a, b in zip(sig, sig[1:]))  # more ε, less noise


# --------------------------------------------------------------------------------------------------------
# Extreme values: no overflow, no nan
# --------------------------------------------------------------------------------------------------------


def test_extreme_values_are_finite() -> None:
    assert delta_for_epsilon(500.0, 1.0) == 0.0  # underflows to 0, no nan, no overflow warning
    assert -1e6 < log_delta_for_epsilon(500.0, 1.0) < -1e5
    assert math.isfinite(log_delta_for_epsilon(1e6, 0.5))
    assert delta_for_epsilon(1.0, 1e3) == pytest.approx(1.0)
    assert delta_for_epsilon(math.inf, 1.0) == 0.0
    assert delta_for_epsilon(1.0, math.inf) == 1.0
    assert epsilon_for_delta(1e-300, math.inf) == math.inf
    for delta in (1e-300, 5e-324):
        e = epsilon_for_delta(delta, 1.0)
        assert math.isfinite(e) and e > 30
    assert math.isfinite(sigma_from_epsilon(500.0, 1e-300, 1))
    assert math.isfinite(sigma_from_epsilon(1e-4, 1e-300, 10**6))
    assert math.isfinite(epsilon_from_sigma(1e-3, 10**6, 1e-300))  # huge μ = 1e6
    assert math.isfinite(epsilon_from_sigma(1e6, 1, 0.999999))  # tiny μ, δ close to 1
    with np.errstate(all="raise"):  # numpy must not even warn
        epsilon_from_sigma(0.5, 50, 1e-300)
        sigma_from_epsilon(1000.0, 1e-300, 3)


def test_huge_population() -> None:
    n = 10**15
    d = default_delta(n)
    assert 0 < d < 1 / n
    b = PrivacyBudget.from_epsilon(1.0, 20, n)
    assert b.delta == d and b.delta_is_default
    assert math.isfinite(b.sigma) and b.sigma > 0


# --------------------------------------------------------------------------------------------------------
# Invalid parameters
# --------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

INVALID = [
    (validate_epsilon, (0,), "must be > 0"),
    (validate_epsilon, (-1.0,), "must be > 0"),
    (validate_epsilon, (NAN,), "NaN"),
    (validate_epsilon, (INF,), "not_private"),
    (validate_epsilon, (-INF, True), "not a privacy budget"),
    (validate_epsilon, ("1",), "must be a number"),
    (validate_epsilon, (None,), "must be a number"),
    (validate_epsilon, (True,), "must be a number"),
    (validate_delta, (0.0,), "strictly between 0 and 1"),
    (validate_delta, (1.0,), "strictly between 0 and 1"),
    (validate_delta, (-1e-5,), "strictly between 0 and 1"),
    (validate_delta, (NAN,), "NaN"),
    (validate_delta, (INF,), "strictly between"),
    (validate_delta, ("1e-5",), "must be a number"),
    (validate_delta, (0.01, 100), "not below 1/N"),
    (validate_delta, (0.02, 100), "meaningless"),
    (validate_delta, (0.5, 2), "not below 1/N"),
    (validate_iterations, (0,), "at least 1"),
    (validate_iterations, (-3,), "at least 1"),
    (validate_iterations, (2.0,), "must be an integer"),
    (validate_iterations, (True,), "must be an integer"),
    (validate_iterations, ("10",), "must be an integer"),
    (validate_sigma, (0.0,), "must be > 0"),
    (validate_sigma, (-1.0,), "must be > 0"),
    (validate_sigma, (NAN,), "NaN"),
    (validate_sigma, (INF,), "finite"),
    (validate_sigma, (None,), "must be a number"),
    (validate_num_private, (0,), "at least one"),
    (validate_num_private, (-5,), "at least one"),
    (validate_num_private, (10.0,), "must be an integer"),
    (validate_num_private, (False,), "must be an integer"),
    (validate_unit, ("image",), "unit of privacy"),
    (default_delta, (2,), "set delta explicitly"),
    (default_delta, (1,), "set delta explicitly"),
    (default_delta, (0,), "at least one"),
    (sigma_from_epsilon, (0.0, 1e-5, 10), "must be > 0"),
    (sigma_from_epsilon, (1.0, 1e-5, 0), "at least 1"),
    (sigma_from_epsilon, (INF, 1e-5, 10), "not_private"),
    (epsilon_from_sigma, (0.0, 10, 1e-5), "must be > 0"),
    (epsilon_from_sigma, (1.0, 1.5, 1e-5), "must be an integer"),
    (epsilon_from_sigma, (1.0, 10, 1.0), "strictly between"),
    (epsilon_for_delta, (1e-5, 0.0), "mu"),
    (epsilon_for_delta, (1e-5, NAN), "NaN"),
    (delta_for_epsilon, (-1.0, 1.0), ">= 0"),
    (mu_for_epsilon, (1.0, 0.0), "strictly between"),
    (PrivacyBudget.from_epsilon, (INF, 10, 1000), "not_private"),
    (PrivacyBudget.from_epsilon, (NAN, 10, 1000), "NaN"),
    (PrivacyBudget.from_epsilon, (1.0, 10, 1000, 1e-3), "not below 1/N"),
    (PrivacyBudget.from_epsilon, (1.0, 10, 0), "at least one"),
    (PrivacyBudget.from_epsilon, (1.0, 10.0, 1000), "must be an integer"),
    (PrivacyBudget.from_epsilon, (1.0, 10, 1000, None, "people"), "unit of privacy"),
    (PrivacyBudget.from_epsilon, (1.0, 10, 2), "set delta explicitly"),
    (PrivacyBudget.from_sigma, (0.0, 10, 1000), "must be > 0"),
    (PrivacyBudget.from_sigma, (1.0, 0, 1000), "at least 1"),
    (PrivacyBudget.not_private, (0, 1000), "at least 1"),
]


@pytest.mark.parametrize("fn, args, message", INVALID, ids=[f"{f.__name__}{a}" for f, a, _ in INVALID])
def test_invalid_parameters_are_rejected_with_a_message(fn, args, message: str) -> None:  # noqa: ANN001
    with pytest.raises(BudgetError, match=message) as info:
        fn(*args)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_validators_return_normalised_values() -> None:
    assert validate_epsilon(np.float32(2.0)) == 2.0 and type(validate_epsilon(3)) is float
    assert validate_epsilon(INF, allow_inf=True) == INF
    assert validate_iterations(np.int64(5)) == 5 and type(validate_iterations(np.int64(5))) is int
    assert validate_delta(1e-6, 1000) == 1e-6
    assert validate_sigma(0.0, allow_zero=True) == 0.0
    assert validate_unit("user") == "user"


def test_default_delta() -> None:
    for n in (3, 10, 1000, 10**9):
        assert default_delta(n) == pytest.approx(1 / (n * math.log(n)))
        assert default_delta(n) < 1 / n
        validate_delta(default_delta(n), n)


def test_delta_error_explains_and_suggests_default() -> None:
    with pytest.raises(BudgetError) as info:
        validate_delta(1e-3, 1000)
    msg = str(info.value)
    assert "1/N" in msg and "N = 1000" in msg and f"{default_delta(1000):.3g}" in msg


# --------------------------------------------------------------------------------------------------------
# PrivacyBudget
# --------------------------------------------------------------------------------------------------------


def test_budget_from_epsilon() -> None:
    b = PrivacyBudget.from_epsilon(2.0, 10, 5000)
    assert b.private and b.epsilon == 2.0 and b.iterations == 10 and b.num_private == 5000
    assert b.delta == default_delta(5000) and b.delta_is_default and b.unit == "record"
    assert b.mu == pytest.approx(math.sqrt(10) / b.sigma)
    assert epsilon_from_sigma(b.sigma, 10, b.delta) <= 2.0
    assert b.sigma == pytest.approx(sigma_from_epsilon(2.0, b.delta, 10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.epsilon = 3.0  # type: ignore[misc]


def test_budget_from_sigma_and_explicit_delta() -> None:
    b = PrivacyBudget.from_sigma(13.5, 50, 20000, delta=1e-6, unit="user")
    assert b.delta == 1e-6 and not b.delta_is_default and b.unit == "user"
    assert b.epsilon == pytest.approx(epsilon_from_sigma(13.5, 50, 1e-6))
    assert PrivacyBudget.from_epsilon(b.epsilon, 50, 20000, 1e-6, "user").sigma == pytest.approx(
        13.5, rel=1e-8
    )


def test_not_private_budget() -> None:
    b = PrivacyBudget.not_private(5, 100)
    assert not b.private and b.epsilon == INF and b.sigma == 0.0 and b.mu == INF
    assert "NOT differentially private" in b.describe()


@pytest.mark.parametrize(
    "make",
    [
        lambda: PrivacyBudget.from_epsilon(1.0, 10, 1000),
        lambda: PrivacyBudget.from_sigma(2.0, 3, 50, delta=1e-4, unit="user"),
        lambda: PrivacyBudget.not_private(7, 10),
    ],
    ids=["from_epsilon", "from_sigma", "not_private"],
)
def test_budget_dict_round_trip_is_json_safe(make) -> None:  # noqa: ANN001
    budget = make()
    text = json.dumps(budget.to_dict(), allow_nan=False)
    back = PrivacyBudget.from_dict(json.loads(text))
    assert back == budget
    if not budget.private:
        assert json.loads(text)["epsilon"] == "inf"


def test_budget_from_dict_rejects_tampering() -> None:
    d = PrivacyBudget.from_epsilon(1.0, 10, 1000).to_dict()
    for key, value, message in [
        ("epsilon", 0.5, "does not match"),
        ("sigma", 1.0, "does not match"),
        ("mu", 1.0, "does not match"),
        ("delta", 0.5, "not below 1/N"),
        ("epsilon", "inf", "invalid for a private budget"),
        ("epsilon", "lots", "expected a number"),
        ("unit", "row", "unit of privacy"),
        ("private", "yes", "true or false"),
    ]:
        with pytest.raises(BudgetError, match=message):
            PrivacyBudget.from_dict({**d, key: value})
    with pytest.raises(BudgetError, match="missing sigma"):
        PrivacyBudget.from_dict({k: v for k, v in d.items() if k != "sigma"})
    nd = PrivacyBudget.not_private(3, 10).to_dict()
    with pytest.raises(BudgetError, match="not-private budget"):
        PrivacyBudget.from_dict({**nd, "sigma": 1.0})


def test_budget_describe_states_the_guarantee() -> None:
    b = PrivacyBudget.from_epsilon(4.0, 10, 1000)
    text = b.describe()
    assert "(4, " in text and "per record" in text and "N = 1000" in text and "1/(N ln N)" in text
    assert "GDP" in text and f"{b.sigma:.4g}" in text
    assert "per user" in PrivacyBudget.from_epsilon(4.0, 10, 1000, unit="user").describe()
