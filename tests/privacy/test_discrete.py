"""Tests of the exact discrete Gaussian (Canonne, Kamath & Steinke 2020): its distribution against the closed
form (with fixed insecure seeds, so nothing can flake), the integer vote grid, and its zCDP accounting."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from spti.errors import BudgetError, ConfigError, InputError
from spti.privacy import NoiseSource, epsilon_from_sigma
from spti.privacy import discrete_sampler as dg
from spti.privacy.discrete import DEFAULT_USER_SCALE, add_discrete_noise, exact_sigma, grid_weights
from spti.privacy.discrete_accounting import (
    compare_noise,
    epsilon_discrete,
    rho_discrete,
    sigma_for_epsilon_discrete,
)
from spti.privacy.discrete_sampler import (
    RandomBits,
    sample_discrete_gaussian,
    sample_discrete_gaussian_reference,
)
from spti.privacy.zcdp import delta_for_rho, epsilon_for_rho, rho_for_epsilon

# --------------------------------------------------------------------------------------------------------
# The closed form N_Z(0, σ²): P[k] = exp(−k²/2σ²) / Σ_j exp(−j²/2σ²)
# --------------------------------------------------------------------------------------------------------


def _pmf(sigma2: float, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Support −kmax..kmax (kmax ≫ σ, the mass beyond is < 1e-300) and the exact pmf on it."""
    k = np.arange(-kmax, kmax + 1)
    w = np.exp(-(k.astype(float) ** 2) / (2.0 * sigma2))
    return k, w / w.sum()


def _closed_form_variance(sigma2: float) -> float:
    k, p = _pmf(sigma2, int(40 * math.sqrt(sigma2)) + 40)
    return float(np.sum(k.astype(float) ** 2 * p))


def _chi2_pvalue(x: np.ndarray, sigma2: float, min_expected: float = 20.0) -> float:
    """χ² goodness of fit of integer samples ``x`` to N_Z(0, σ²), tails pooled so every cell expects ≥ 20."""
    kmax = int(40 * math.sqrt(sigma2)) + 40
    k, p = _pmf(sigma2, kmax)
    n = x.size
    counts = np.bincount(x + kmax, minlength=k.size)
    assert counts.size == k.size  # no sample beyond ±kmax
    center = int(np.argmax(p))
    lo = center
    while lo > 0 and n * p[lo - 1] >= min_expected:
        lo -= 1
    hi = center
    while hi < k.size - 1 and n * p[hi + 1] >= min_expected:
        hi += 1
    obs = np.concatenate(([counts[:lo].sum()], counts[lo : hi + 1], [counts[hi + 1 :].sum()]))
    exp = n * np.concatenate(([p[:lo].sum()], p[lo : hi + 1], [p[hi + 1 :].sum()]))
    return float(stats.chisquare(obs, exp).pvalue)


def _bits(seed: int, t: int = 1) -> RandomBits:
    return RandomBits.insecure_source(seed, t)


# --------------------------------------------------------------------------------------------------------
# The exact σ
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.01, 0.3, 0.5, 1.0, 2.5, 5.0, 13.5, 14.2, 50.0, 1234.5678])
@pytest.mark.parametrize("scale", [1, 7, DEFAULT_USER_SCALE])
def test_exact_sigma_rounds_up_and_fits_64_bits(sigma: float, scale: int) -> None:
    p = exact_sigma(sigma, scale)
    target2 = (Fraction(sigma) * scale) ** 2
    assert p.sigma2_grid >= target2  # never less noise than claimed
    excess = float(p.sigma2_grid / target2 - 1)
    assert excess <= (2e-5 if sigma * scale < 1 else 1e-7)
    assert p.t == math.floor(Fraction(sigma) * scale) + 1
    assert p.denominator & (p.denominator - 1) == 0  # a power of two
    assert 2 * p.t * p.m * p.denominator <= 2**52  # the sampler's integers fit in int64
    assert p.sigma_effective >= sigma * (1 - 1e-15)
    assert Fraction(p.rho()) >= Fraction(scale**2) / (2 * p.sigma2_grid)  # rounded up, never down
    assert p.rho() <= 1 / (2 * sigma * sigma) * (1 + 1e-15)
    d = p.to_dict()
    num, den = map(int, d["sigma2_grid"].split("/"))
    assert Fraction(num, den) == p.sigma2_grid and d["scale"] == scale


def test_exact_sigma_rejects_bad_values() -> None:
    with pytest.raises(BudgetError, match="too large"):
        exact_sigma(1e9)
    with pytest.raises(BudgetError, match="sigma"):
        exact_sigma(0.0)
    with pytest.raises(BudgetError):
        exact_sigma(float("nan"))
    for bad in (0, -3, 2.5, True, "7"):
        with pytest.raises(ConfigError, match="scale"):
            exact_sigma(1.0, bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# The distribution (fixed insecure seeds: deterministic, cannot flake)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma, scale", [(0.4, 1), (0.8, 1), (3.0, 1), (14.2, 1), (1.5, 7)])
def test_pmf_matches_closed_form(sigma: float, scale: int) -> None:
    p = exact_sigma(sigma, scale)
    x = sample_discrete_gaussian(200_000, p, _bits(11))
    assert x.dtype == np.int64 and x.shape == (200_000,)
    assert _chi2_pvalue(x, float(p.sigma2_grid)) > 1e-3


def test_reference_scalar_sampler_matches_closed_form() -> None:
    p = exact_sigma(2.3)
    x = np.array(sample_discrete_gaussian_reference(20_000, p, _bits(5)), dtype=np.int64)
    assert _chi2_pvalue(x, float(p.sigma2_grid)) > 1e-3


@pytest.mark.parametrize("sigma", [0.8, 14.2])
def test_moments_match_closed_form(sigma: float) -> None:
    p = exact_sigma(sigma)
    s2 = float(p.sigma2_grid)
    var = _closed_form_variance(s2)
    assert var <= s2  # CKS Prop. 19: the discrete Gaussian's variance is below σ²
    x = sample_discrete_gaussian(300_000, p, _bits(3)).astype(float)
    n = x.size
    assert abs(x.mean()) < 5 * math.sqrt(var / n)
    # SE of the sample variance: sqrt((μ4 − var²)/n) with μ4 from the closed form.
    k, pm = _pmf(s2, int(40 * sigma) + 40)
    mu4 = float(np.sum(k.astype(float) ** 4 * pm))
    assert abs(x.var() - var) < 5 * math.sqrt((mu4 - var**2) / n)


def test_tails_match_closed_form() -> None:
    sigma = 5.0
    p = exact_sigma(sigma)
    k, pm = _pmf(float(p.sigma2_grid), 400)
    x = np.abs(sample_discrete_gaussian(400_000, p, _bits(21)))
    for c in (2, 3, 4):
        prob = float(pm[np.abs(k) >= c * sigma].sum())
        obs = float(np.mean(x >= c * sigma))
        assert abs(obs - prob) < 5 * math.sqrt(prob * (1 - prob) / x.size), c


def test_scalar_fallback_paths_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the Python-int continuations (K past the int64 range, |y| past the int64 square) on every
    proposal: the distribution must not change."""
    p = exact_sigma(3.0)
    monkeypatch.setattr(dg, "_LIMIT", 1 << 40)  # 2tmD > 2^40: every acceptance test continues in Python
    monkeypatch.setattr(
        dg, "_SQRT_LIMIT", 1 << 12
    )  # and |D|y| − m| ≥ 2^12 goes the scalar way from the start
    monkeypatch.setattr(dg, "_RUN_CAP", 1)
    x = sample_discrete_gaussian(20_000, p, _bits(8))
    assert _chi2_pvalue(x, float(p.sigma2_grid)) > 1e-3


def test_random_bits_below_is_uniform_and_exact() -> None:
    b = _bits(1)
    m = np.array([3, 5, 2**62, 1] * 30_000, dtype=np.int64)
    r = b.below(m)
    assert np.all((r >= 0) & (r < m))
    assert np.all(r[3::4] == 0)
    assert stats.chisquare(np.bincount(r[0::4], minlength=3)).pvalue > 1e-3
    assert stats.chisquare(np.bincount(r[1::4], minlength=5)).pvalue > 1e-3
    big = 3 * 2**100 + 17
    vals = [b.below_int(big) for _ in range(3000)]
    assert all(0 <= v < big for v in vals)
    assert stats.chisquare(np.bincount([v * 3 // big for v in vals], minlength=3)).pvalue > 1e-3
    assert b.below_int(1) == 0


# --------------------------------------------------------------------------------------------------------
# The noise source: secure by default, insecure mode a function of (seed, iteration) only
# --------------------------------------------------------------------------------------------------------


def test_noise_source_discrete_secure_and_insecure() -> None:
    a = NoiseSource()
    x1, x2 = a.discrete_gaussian(500, 5.0, 1), a.discrete_gaussian(500, 5.0, 1)
    assert x1.dtype == np.int64 and not np.array_equal(x1, x2)
    assert a.random_bits(1).secure and not NoiseSource(insecure_seed=1).random_bits(1).secure
    np.random.seed(0)
    y1 = NoiseSource().discrete_gaussian(64, 5.0, 1)
    np.random.seed(0)
    assert not np.array_equal(y1, NoiseSource().discrete_gaussian(64, 5.0, 1))

    s = NoiseSource(insecure_seed=123)
    first = [s.discrete_gaussian((4, 50), 3.0, t) for t in (1, 2, 3)]
    r = NoiseSource(insecure_seed=123)
    r.discrete_gaussian(9, 1.0, 7)
    np.testing.assert_array_equal(r.discrete_gaussian((4, 50), 3.0, 3), first[2])
    np.testing.assert_array_equal(s.discrete_gaussian((4, 50), 3.0, 1), first[0])
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], NoiseSource(insecure_seed=124).discrete_gaussian((4, 50), 3.0, 1))
    state = np.random.get_state()
    s.discrete_gaussian(16, 2.0, 4)
    assert np.array_equal(state[1], np.random.get_state()[1])  # numpy's global state untouched


def test_noise_source_discrete_shapes_and_errors() -> None:
    s = NoiseSource(insecure_seed=1)
    z = s.discrete_gaussian((3, 2), 0.0, 1)
    assert z.shape == (3, 2) and z.dtype == np.int64 and not z.any()
    assert s.discrete_gaussian(0, 1.0, 1).shape == (0,)
    assert s.discrete_gaussian((2, 3), 2.0, 1, scale=7).shape == (2, 3)
    with pytest.raises(BudgetError):
        s.discrete_gaussian(3, -1.0, 1)
    with pytest.raises(BudgetError):
        s.discrete_gaussian(3, float("inf"), 1)
    with pytest.raises(ConfigError):
        s.discrete_gaussian(3, 1.0, -1)
    with pytest.raises(ConfigError):
        s.discrete_gaussian(-3, 1.0, 1)
    with pytest.raises(ConfigError, match="scale"):
        s.discrete_gaussian(3, 1.0, 1, scale=0)
    with pytest.raises(ConfigError):
        sample_discrete_gaussian(-1, exact_sigma(1.0), _bits(1))


# --------------------------------------------------------------------------------------------------------
# The integer vote grid
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    owners=st.lists(st.integers(0, 12), min_size=0, max_size=80),
    scale=st.sampled_from([1, 2, 3, 7, 60, DEFAULT_USER_SCALE]),
    n_bins=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_grid_weights_never_exceed_a_users_budget(
    owners: list[int], scale: int, n_bins: int, seed: int
) -> None:
    w = grid_weights(owners, len(owners), scale)
    assert w.dtype == np.int64 and w.shape == (len(owners),) and np.all(w >= 0)
    own = np.asarray(owners, dtype=np.int64)
    votes = np.random.default_rng(seed).integers(0, n_bins, size=len(owners))
    total = np.bincount(votes, weights=w, minlength=n_bins)
    for u in set(owners):
        mine = own == u
        k = int(mine.sum())
        assert int(w[mine].sum()) == scale  # exactly the user's budget, never more
        assert set(w[mine].tolist()) <= {scale // k, scale // k + 1}
        without = np.bincount(votes[~mine], weights=w[~mine], minlength=n_bins)
        diff = total - without  # what removing the user changes
        assert np.abs(diff).sum() <= scale and math.sqrt(float(np.sum(diff**2))) <= scale


def test_grid_weights_exact_fractions_and_errors() -> None:
    owners = ["a"] * 3 + ["b"] * 7 + ["c"] + ["d"] * 10
    w = grid_weights(owners, len(owners), DEFAULT_USER_SCALE)
    for u, k in (("a", 3), ("b", 7), ("c", 1), ("d", 10)):
        assert set(w[np.asarray(owners) == u].tolist()) == {DEFAULT_USER_SCALE // k}  # exactly 1/k
    # 5 rows on a grid of 3: the first three rows of the user get 1, the rest 0 (in row order).
    assert grid_weights([9, 9, 9, 9, 9], 5, 3).tolist() == [1, 1, 1, 0, 0]
    assert grid_weights([2, 1, 2, 1, 2], 5, 4).tolist() == [2, 2, 1, 2, 1]
    assert grid_weights(None, 4, 5).tolist() == [5, 5, 5, 5]
    assert grid_weights([], 0, 5).shape == (0,)
    with pytest.raises(InputError):
        grid_weights([1, 2], 3, 5)
    with pytest.raises(ConfigError):
        grid_weights([1, 2], 2, 0)


def test_add_discrete_noise() -> None:
    counts = np.array([0, 3, 12, 5, 0, 40], dtype=np.float64)  # integral floats, as np.bincount returns
    noisy, rec = add_discrete_noise(counts, 2.0, iteration=4, source=NoiseSource(insecure_seed=9), scale=7)
    again, _ = add_discrete_noise(counts, 2.0, iteration=4, source=NoiseSource(insecure_seed=9), scale=7)
    np.testing.assert_array_equal(noisy, again)
    assert noisy.dtype == np.float64 and noisy.shape == counts.shape
    on_grid = noisy * 7 - counts
    np.testing.assert_array_equal(on_grid, np.round(on_grid))  # integer noise on the grid
    expected = NoiseSource(insecure_seed=9).discrete_gaussian(6, 2.0, 4, scale=7)
    np.testing.assert_array_equal(on_grid.astype(np.int64), expected)
    p = exact_sigma(2.0, 7)
    assert rec["noise"] == "discrete" and rec["scale"] == 7 and rec["sigma"] == 2.0 and rec["secure"] is False
    assert rec["sigma2_grid"] == p.to_dict()["sigma2_grid"] and rec["rho"] == p.rho()
    assert "Canonne" in rec["sampler"]
    assert set(rec) == {
        "noise",
        "secure",
        "scale",
        "sigma",
        "sampler",
        "sigma2_grid",
        "sigma_effective",
        "rho",
    }

    zero, rec0 = add_discrete_noise(np.arange(4), 0.0, iteration=1, source=NoiseSource(), scale=2)
    np.testing.assert_array_equal(zero, np.arange(4) / 2) and rec0["rho"] == math.inf
    with pytest.raises(InputError, match="integer"):
        add_discrete_noise([0.5, 1.0], 1.0, iteration=1, source=NoiseSource())
    with pytest.raises(InputError):
        add_discrete_noise([np.nan], 1.0, iteration=1, source=NoiseSource())
    with pytest.raises(InputError):
        add_discrete_noise([2.0**60], 1.0, iteration=1, source=NoiseSource())
    with pytest.raises(ConfigError):
        add_discrete_noise([1], 1.0, iteration=1, source=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------------------

SIGMAS = [0.5, 1.0, 2.0, 5.0, 14.2, 50.0]
ITERATIONS = [1, 10, 100]
DELTAS = [1e-3, 1e-6, 1e-10]
GRID = list(itertools.product(SIGMAS, ITERATIONS, DELTAS))


def test_record_level_is_the_1d_zcdp_conversion() -> None:
    for sigma, t, delta in GRID:
        rho = rho_discrete(sigma, t)
        assert rho == pytest.approx(t / (2 * sigma**2), rel=1e-7) and rho <= t / (2 * sigma**2)
        assert epsilon_discrete(sigma, t, delta) == pytest.approx(
            epsilon_for_rho(t / (2 * sigma**2), delta), rel=1e-6
        )
        # user level on a grid: the same ρ up to the rounding of σ_grid
        assert rho_discrete(sigma, t, unit="user", scale=DEFAULT_USER_SCALE) == pytest.approx(rho, rel=1e-6)


def test_discrete_costs_at_least_the_continuous_epsilon() -> None:
    for sigma, t, delta in GRID:
        for unit, scale in (("record", 1), ("user", DEFAULT_USER_SCALE)):
            c = compare_noise(sigma, t, delta, unit=unit, scale=scale)
            assert c.epsilon_discrete >= c.epsilon_continuous == epsilon_from_sigma(sigma, t, delta)
            assert c.epsilon_discrete == pytest.approx(c.epsilon_continuous_zcdp, rel=1e-6)
            assert c.extra_epsilon >= 0 and 0 <= c.extra_percent < 40
            assert c.sigma_exact >= sigma and c.unit == unit and c.scale == scale
            assert ("Thm. 14" if unit == "user" else "Thm. 4") in c.theorem
    d = compare_noise(14.2, 10, 1e-6).to_dict()
    assert {"epsilon_continuous", "epsilon_discrete", "extra_percent", "rho", "theorem"} <= set(d)
    assert "continuous Gaussian epsilon" in compare_noise(14.2, 10, 1e-6).describe()


def test_bound_is_above_the_numerical_pld_of_the_discrete_gaussian() -> None:
    """Sanity of the proven bound: dp_accounting's (pessimistic) PLD of the actual discrete Gaussian mechanism
    at record level, composed T times, must not exceed it."""
    pld = pytest.importorskip("dp_accounting.pld.privacy_loss_distribution")
    for sigma, t in ((2.0, 1), (5.0, 10), (14.2, 10)):
        p = pld.from_discrete_gaussian_mechanism(sigma, sensitivity=1, value_discretization_interval=1e-3)
        eps_pld = p.self_compose(t).get_epsilon_for_delta(1e-6)
        assert eps_pld <= epsilon_discrete(sigma, t, 1e-6)


@pytest.mark.parametrize("sigma, t, delta", GRID)
def test_round_trip_sigma_epsilon_sigma(sigma: float, t: int, delta: float) -> None:
    eps = epsilon_discrete(sigma, t, delta)
    back = sigma_for_epsilon_discrete(eps, t, delta)
    assert back == pytest.approx(sigma, rel=1e-6)
    assert epsilon_discrete(back, t, delta) <= eps


@pytest.mark.parametrize("eps", [0.05, 1.0, 4.0, 30.0])
@pytest.mark.parametrize("unit, scale", [("record", 1), ("user", DEFAULT_USER_SCALE)])
def test_sigma_for_epsilon_never_overspends(eps: float, unit: str, scale: int) -> None:
    for t in (1, 10, 1000):
        sigma = sigma_for_epsilon_discrete(eps, t, 1e-6, unit=unit, scale=scale)
        spent = epsilon_discrete(sigma, t, 1e-6, unit=unit, scale=scale)
        assert spent <= eps and spent == pytest.approx(eps, rel=1e-6)
        assert sigma >= sigma_from_continuous(eps, t)


def sigma_from_continuous(eps: float, t: int) -> float:
    from spti.privacy import sigma_from_epsilon

    return sigma_from_epsilon(eps, 1e-6, t)


def test_monotonicity() -> None:
    es = [epsilon_discrete(s, 10, 1e-6) for s in SIGMAS]
    assert all(a > b for a, b in zip(es, es[1:]))
    et = [epsilon_discrete(5.0, t, 1e-6) for t in (1, 2, 10, 100)]
    assert all(a < b for a, b in zip(et, et[1:]))
    ed = [epsilon_discrete(5.0, 10, d) for d in DELTAS]
    assert all(a < b for a, b in zip(ed, ed[1:]))
    rhos = [0.001, 0.01, 0.1, 1.0, 10.0]
    er = [epsilon_for_rho(r, 1e-6) for r in rhos]
    assert all(a < b for a, b in zip(er, er[1:]))


@pytest.mark.parametrize(
    "fn, args, kwargs, error, message",
    [
        (epsilon_discrete, (0.0, 10, 1e-6), {}, BudgetError, "sigma"),
        (epsilon_discrete, (-1.0, 10, 1e-6), {}, BudgetError, "sigma"),
        (epsilon_discrete, (1.0, 0, 1e-6), {}, BudgetError, "iterations"),
        (epsilon_discrete, (1.0, 2.0, 1e-6), {}, BudgetError, "integer"),
        (epsilon_discrete, (1.0, 10, 1.0), {}, BudgetError, "delta"),
        (epsilon_discrete, (1.0, 10, 0.0), {}, BudgetError, "delta"),
        (epsilon_discrete, (1.0, 10, 1e-6), {"unit": "person"}, BudgetError, "unit"),
        (epsilon_discrete, (1.0, 10, 1e-6), {"scale": 0}, ConfigError, "scale"),
        (sigma_for_epsilon_discrete, (0.0, 10, 1e-6), {}, BudgetError, "epsilon"),
        (sigma_for_epsilon_discrete, (math.inf, 10, 1e-6), {}, BudgetError, "epsilon"),
        (sigma_for_epsilon_discrete, (1.0, -1, 1e-6), {}, BudgetError, "iterations"),
        (sigma_for_epsilon_discrete, (1.0, 10, 2.0), {}, BudgetError, "delta"),
        (sigma_for_epsilon_discrete, (1.0, 10, 1e-6), {"scale": 1.5}, ConfigError, "scale"),
        (compare_noise, (float("nan"), 10, 1e-6), {}, BudgetError, "NaN"),
        (epsilon_for_rho, (-1.0, 1e-6), {}, BudgetError, "rho"),
        (epsilon_for_rho, (1.0, 0.0), {}, BudgetError, "delta"),
        (delta_for_rho, (1.0, -1.0), {}, BudgetError, "epsilon"),
        (rho_for_epsilon, (0.0, 1e-6), {}, BudgetError, "epsilon"),
    ],
)
def test_invalid_inputs_raise_with_a_message(fn, args, kwargs, error, message) -> None:  # noqa: ANN001
    with pytest.raises(error, match=message):
        fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------------------
# The zCDP → (ε, δ) conversion itself
# --------------------------------------------------------------------------------------------------------


def test_conversion_matches_dp_accounting_rdp_and_is_at_least_as_tight() -> None:
    """dp_accounting's RDP accountant applies the same CKS conversion, but only on a fixed grid of Rényi
    orders; ours optimises α continuously, so it must agree closely and never be larger."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant

    dense = np.concatenate((1 + np.logspace(-2, 5, 20_001), [1.5, 2.0]))
    for rho in (1e-4, 0.001, 0.0248, 0.1, 0.5, 2.0, 10.0):
        for delta in (1e-3, 1e-6, 1e-10):
            acc = rdp_privacy_accountant.RdpAccountant()
            acc.compose(dp_accounting.ZCDpEvent(rho))
            theirs = acc.get_epsilon(delta)  # their default grid of orders
            ours = epsilon_for_rho(rho, delta)
            assert ours <= theirs * (1 + 1e-12) + 1e-15, (rho, delta)
            assert ours == pytest.approx(theirs, rel=0.1, abs=1e-9), (
                rho,
                delta,
            )  # their grid is coarse (4% at small ρ)
            # their conversion code on a dense grid of orders: the same number
            fine, _ = rdp_privacy_accountant.compute_epsilon(dense, rho * dense, delta)
            assert ours <= fine * (1 + 1e-12) and ours == pytest.approx(fine, rel=1e-6), (rho, delta)
    # the Gaussian's RDP curve α/(2σ²) is ρ-zCDP with ρ = T/(2σ²): same number
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(14.2), 10)
    assert epsilon_discrete(14.2, 10, 1e-6) == pytest.approx(acc.get_epsilon(1e-6), rel=2e-3)


def test_conversion_is_the_infimum_over_orders() -> None:
    """Brute force over a fine grid of Rényi orders: ours is the minimum (up to the grid's resolution)."""
    alphas = 1 + np.logspace(-4, 4, 200_001)
    for rho, eps in ((0.0248, 1.0), (0.5, 3.0), (0.001, 0.1), (5.0, 30.0)):
        log_d = (alphas - 1) * (alphas * rho - eps) + (alphas - 1) * np.log1p(-1 / alphas) - np.log(alphas)
        best = float(np.exp(log_d.min()))
        ours = delta_for_rho(rho, eps)
        assert ours <= best * (1 + 1e-9) and ours == pytest.approx(best, rel=1e-6)
        assert epsilon_for_rho(rho, ours) == pytest.approx(eps, rel=1e-9)
        # strictly tighter than the classical bound exp(−(ε−ρ)²/(4ρ))
        assert ours < math.exp(-((eps - rho) ** 2) / (4 * rho))


def test_conversion_edge_cases() -> None:
    assert epsilon_for_rho(0.0, 1e-6) == 0.0 and delta_for_rho(0.0, 1.0) == 0.0
    assert epsilon_for_rho(math.inf, 1e-6) == math.inf and delta_for_rho(math.inf, 1.0) == 1.0
    assert delta_for_rho(1.0, math.inf) == 0.0
    assert epsilon_for_rho(1e-9, 1e-3) == 0.0  # Bretagnolle-Huber: (0, δ) already holds
    assert math.isfinite(epsilon_for_rho(1e4, 1e-300)) and epsilon_for_rho(1e-12, 1e-300) > 0
    for eps, delta in ((0.1, 1e-6), (1.0, 1e-6), (10.0, 1e-12), (200.0, 1e-300)):
        rho = rho_for_epsilon(eps, delta)
        assert epsilon_for_rho(rho, delta) <= eps and epsilon_for_rho(rho, delta) == pytest.approx(
            eps, rel=1e-9
        )
