"""The budget's options beyond the default (issue 9, points 7, 8, 12): the discrete Gaussian's accounting,
a public bound on N, the δ warning, insecure noise in the ledger, and the one release function."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spti.errors import BudgetError
from spti.privacy import (
    DEFAULT_USER_SCALE,
    Ledger,
    NoiseSource,
    PrivacyBudget,
    compare_noise,
    dataset_size_statement,
    delta_warning,
    epsilon_discrete,
    epsilon_for_rho,
    epsilon_from_sigma,
    rho_discrete,
    sigma_for_epsilon_discrete,
)

#: The keys a Gaussian budget has always written: privacy.json and manifests of default runs keep them.
GAUSSIAN_KEYS = ["epsilon", "delta", "sigma", "iterations", "mu", "num_private", "unit", "private", "delta_is_default"]


# ------------------------------------------------------------------------------------------- the budget
def test_gaussian_budget_record_is_unchanged():
    for b in (PrivacyBudget.from_epsilon(1.0, 10, 1000), PrivacyBudget.from_sigma(3.0, 4, 50, delta=1e-5, unit="user"),
              PrivacyBudget.not_private(3, 10)):
        assert list(b.to_dict()) == GAUSSIAN_KEYS
        assert PrivacyBudget.from_dict(b.to_dict()) == b


@pytest.mark.parametrize("unit, grid", [("record", 1), ("user", DEFAULT_USER_SCALE)])
def test_discrete_budget_is_accounted_with_its_zcdp_bound(unit, grid):
    b = PrivacyBudget.from_epsilon(1.0, 10, 20_000, unit=unit, noise="discrete")
    assert b.noise == "discrete" and b.grid == grid
    assert b.sigma == pytest.approx(sigma_for_epsilon_discrete(1.0, 10, b.delta, unit=unit, scale=grid))
    assert epsilon_discrete(b.sigma, 10, b.delta, unit=unit, scale=grid) <= 1.0
    # more noise than the continuous Gaussian needs for the same (epsilon, delta)
    assert b.sigma > PrivacyBudget.from_epsilon(1.0, 10, 20_000, unit=unit).sigma
    d = b.to_dict()
    assert d["noise"] == "discrete" and d["grid"] == grid and PrivacyBudget.from_dict(d) == b
    s = PrivacyBudget.from_sigma(b.sigma, 10, 20_000, unit=unit, noise="discrete")
    assert s.epsilon == pytest.approx(1.0, rel=1e-6)  # sigma is calibrated to ~1e-8 (the exact grid sigma)
    assert s.epsilon > epsilon_from_sigma(b.sigma, 10, b.delta)
    assert "exact discrete Gaussian" in b.describe() and "zCDP" in b.describe()


def test_discrete_budget_refuses_inconsistent_records():
    d = PrivacyBudget.from_epsilon(1.0, 10, 1000, noise="discrete").to_dict()
    with pytest.raises(BudgetError, match="does not match"):  # the Gaussian's smaller epsilon for that sigma
        PrivacyBudget.from_dict({**d, "noise": "gaussian", "grid": None,
                                 "epsilon": 0.5 * d["epsilon"]})
    with pytest.raises(BudgetError, match="does not match"):
        PrivacyBudget.from_dict({**d, "epsilon": 0.9})
    with pytest.raises(BudgetError, match="only to noise = 'discrete'"):
        PrivacyBudget.from_epsilon(1.0, 10, 1000, grid=4)
    with pytest.raises(BudgetError, match="not a kind of noise"):
        PrivacyBudget.from_epsilon(1.0, 10, 1000, noise="laplace")


def test_public_bound_replaces_n():
    b = PrivacyBudget.from_epsilon(1.0, 10, 100_000, num_private_is_bound=True)
    assert b.to_dict()["num_private_is_bound"] is True and PrivacyBudget.from_dict(b.to_dict()) == b
    assert "N <= 100000" in b.describe() and "1/(B ln B)" in b.describe()
    assert "public upper bound" in dataset_size_statement(b)
    assert "treated as public" in dataset_size_statement(PrivacyBudget.from_epsilon(1.0, 10, 100_000))
    explicit = PrivacyBudget.from_epsilon(1.0, 10, 100_000, delta=1e-7)
    assert "does not depend on the number" in dataset_size_statement(explicit)


def test_delta_warning():
    small = PrivacyBudget.from_epsilon(2.0, 2, 4)  # the (2, 0.18)-DP of a 4-record run
    assert small.delta == pytest.approx(0.18, abs=0.005)
    assert "above 1e-05" in delta_warning(small)
    assert delta_warning(PrivacyBudget.from_epsilon(2.0, 2, 4, delta=1e-6)) is None
    assert delta_warning(PrivacyBudget.from_epsilon(1.0, 10, 300_000)) is None  # 1/(N ln N) = 2.6e-7
    assert delta_warning(PrivacyBudget.not_private(2, 4)) is None


# ------------------------------------------------------------------------------------------- the ledger
def test_discrete_ledger_composes_rho():
    b = PrivacyBudget.from_epsilon(1.0, 10, 20_000, unit="user", noise="discrete")
    ledger = Ledger(b)
    ledger.add_mechanism("pe", "discrete_gaussian_histogram", count=10, sigma=b.sigma, grid=b.grid)
    total = ledger.total()
    assert total.rho == pytest.approx(rho_discrete(b.sigma, 10, unit="user", scale=b.grid), rel=1e-12)
    assert total.epsilon == pytest.approx(1.0, rel=1e-6) and ledger.within_budget()
    d = ledger.to_dict()
    assert "zero-concentrated" in d["accounting"] and d["spent"]["rho"] == pytest.approx(total.rho)
    assert d["mechanisms"][0]["grid"] == b.grid and d["noise"]["kind"] == "discrete"
    assert Ledger.from_dict(json.loads(json.dumps(d))) == ledger
    # a Gaussian entry in a zCDP ledger counts mu^2/2
    ledger.add_mechanism("extra", "gaussian", count=2, sigma=5.0)
    assert ledger.rho == pytest.approx(total.rho + 2 / (2 * 25.0), rel=1e-12)
    assert ledger.total().epsilon == pytest.approx(epsilon_for_rho(ledger.rho, b.delta), rel=1e-12)
    assert not ledger.within_budget()


def test_insecure_ledger_is_not_private():
    b = PrivacyBudget.from_epsilon(1.0, 10, 1000, delta=1e-6)
    ledger = Ledger(b, secure_noise=False)
    ledger.add_mechanism("pe", count=10, sigma=b.sigma)
    assert not ledger.private
    d = ledger.to_dict()
    assert d["private"] is False and d["spent"]["private"] is False
    assert d["guarantee"].startswith("NOT differentially private") and "insecure" in d["guarantee"]
    assert d["noise"]["secure"] is False
    back = Ledger.from_dict(json.loads(json.dumps(d)))
    assert back == ledger and not back.private
    assert Ledger(b).to_dict()["noise"]["secure"] is True


def test_gaussian_ledger_keeps_exact_gdp_accounting():
    b = PrivacyBudget.from_epsilon(1.0, 10, 1000, delta=1e-6)
    ledger = Ledger(b)
    ledger.add_mechanism("pe", count=10, sigma=b.sigma)
    d = ledger.to_dict()
    assert "rho" not in d["spent"] and "grid" not in d["mechanisms"][0] and "Gaussian DP" in d["accounting"]
    assert d["dataset_size"] == dataset_size_statement(b) and d["warnings"] == []


# ------------------------------------------------------------------------------------------- the release
def test_release_histogram_gaussian_is_the_engines_formula():
    from spti.pe.histogram import release_histogram

    counts = np.arange(12, dtype=np.float64)
    noisy, rec = release_histogram(counts, 2.5, noise=NoiseSource(insecure_seed=4), iteration=3)
    want = counts + NoiseSource(insecure_seed=4).gaussian(counts.shape, 2.5, iteration=3)
    assert np.array_equal(noisy, want) and rec == {"noise": "gaussian", "sigma": 2.5, "secure": False}


def test_release_histogram_discrete_on_the_grid():
    from spti.pe.histogram import release_histogram, vote_histogram, vote_weights

    owners = ["a", "a", "a", "b", "c", "c", "c", "c", "c", "c", "c"]
    w = vote_weights(owners, len(owners), noise="discrete", grid=DEFAULT_USER_SCALE)
    assert w.dtype == np.float64 and np.all(w == np.round(w))
    for o in set(owners):  # each user's integer weights sum to exactly the grid
        assert sum(w[i] for i, x in enumerate(owners) if x == o) == DEFAULT_USER_SCALE
    rng = np.random.default_rng(0)
    counts = vote_histogram(rng.normal(size=(11, 4)), rng.normal(size=(5, 4)), weights=w, show_progress=False)
    noisy, rec = release_histogram(counts, 3.0, noise=NoiseSource(insecure_seed=1), iteration=2, kind="discrete",
                                   grid=DEFAULT_USER_SCALE)
    assert rec["noise"] == "discrete" and rec["scale"] == DEFAULT_USER_SCALE and rec["secure"] is False
    assert np.all(noisy * DEFAULT_USER_SCALE == np.round(noisy * DEFAULT_USER_SCALE))
    assert math.isclose(noisy.sum() * DEFAULT_USER_SCALE % 1, 0.0, abs_tol=1e-6)
    from spti.pe.histogram import contribution_weights

    assert np.array_equal(vote_weights(owners, 11), contribution_weights(owners, 11))


def test_compare_noise_is_what_the_discrete_budget_charges():
    b = PrivacyBudget.from_sigma(14.2, 10, 10_000, delta=1e-6, noise="discrete")
    c = compare_noise(b.sigma, b.iterations, b.delta, unit=b.unit, scale=b.grid)
    assert c.epsilon_discrete == pytest.approx(b.epsilon, rel=1e-12) and c.epsilon_continuous < b.epsilon


def test_the_audit_draws_through_the_release_function(monkeypatch):
    import spti.audit
    import spti.audit.mechanism
    from spti.pe import histogram

    calls = []

    def spy(counts, sigma, **kw):
        calls.append((sigma, kw["iteration"], kw.get("kind", "gaussian")))
        return histogram.release_histogram(counts, sigma, **kw)

    monkeypatch.setattr(spti.audit.mechanism, "release_histogram", spy)
    mech = spti.audit.HistogramMechanism.gaussian(2.0, noise=NoiseSource(insecure_seed=3))
    out = mech.release(np.zeros((2, 5)), draw=7)
    assert out.shape == (2, 5) and calls == [(2.0, 7, "gaussian")]
