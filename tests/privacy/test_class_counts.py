"""DP class sizes of labelled runs (issue 12, requirement 3): the budget split between the noisy class counts
and the PE histograms (against dp-accounting), the budget's record of σ_c, the allocation, the L2
sensitivity of the class-count vector with user-level weights, and `spti privacy --labelled`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spti.cli import main
from spti.errors import BudgetError, ConfigError
from spti.pe.histogram import contribution_weights, vote_weights
from spti.privacy import Ledger, PrivacyBudget, epsilon_for_delta
from spti.privacy.class_counts import (
    allocate_sizes,
    class_count_sigma_for_sigma,
    class_vote_counts,
    composed_epsilon,
    composed_rho,
    count_share,
    prior_sizes,
    split_for_epsilon,
    uniform_sizes,
    validate_share,
)
from spti.privacy.discrete import grid_weights
from spti.privacy.zcdp import epsilon_for_rho

CASES = [(1.0, 1e-6, 10, 0.05), (4.0, 1e-5, 5, 0.2), (0.5, 1e-8, 20, 0.01), (8.0, 1e-6, 1, 0.5)]  # N = 1000


# ------------------------------------------------------------------------------ the split, vs dp-accounting
@pytest.mark.parametrize("eps, delta, t, share", CASES)
def test_split_is_a_gdp_composition(eps, delta, t, share):
    b = PrivacyBudget.from_epsilon(eps, t, 1000, delta=delta, class_count_share=share)
    s, c = b.sigma, b.class_count_sigma
    mu_c2, mu_h2 = 1 / c**2, t / s**2
    assert b.mu**2 == pytest.approx(mu_c2 + mu_h2, rel=1e-12)  # mu^2 = mu_c^2 + T/sigma^2
    assert mu_c2 == pytest.approx(share * b.mu**2, rel=1e-8)
    assert mu_h2 == pytest.approx((1 - share) * b.mu**2, rel=1e-8)
    assert count_share(s, t, c) == pytest.approx(share, rel=1e-8)
    # rounding never spends more than asked, and is tight
    assert composed_epsilon(s, t, c, delta) <= eps
    assert composed_epsilon(s, t, c, delta) == pytest.approx(eps, rel=1e-8)
    # the histograms get less than the whole budget: more noise than an unlabelled run
    assert s > PrivacyBudget.from_epsilon(eps, t, 1000, delta=delta).sigma


@pytest.mark.parametrize("eps, delta, t, share", CASES)
def test_composition_matches_dp_accounting(eps, delta, t, share):
    """T Gaussian histograms (σ) and one class-count release (σ_c), composed by dp-accounting's own code:
    exactly one Gaussian of std 1/μ (its analytic calibration), numerically by the PLD accountant (pessimistic,
    close), and by RDP (strictly looser)."""
    dp_accounting = pytest.importorskip("dp_accounting")
    gm = pytest.importorskip("dp_accounting.gaussian_mechanism")
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    b = PrivacyBudget.from_epsilon(eps, t, 1000, delta=delta, class_count_share=share)
    events = dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(b.sigma), t),
         dp_accounting.GaussianDpEvent(b.class_count_sigma)]
    )
    assert gm.get_epsilon_gaussian(1 / b.mu, delta) == pytest.approx(b.epsilon, rel=1e-4)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(events)
    eps_pld = pld.get_epsilon(delta)
    assert eps_pld == pytest.approx(b.epsilon, rel=2e-3)
    assert eps_pld >= b.epsilon * (1 - 1e-9)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(events)
    assert rdp.get_epsilon(delta) > b.epsilon


@pytest.mark.parametrize("noise", ["gaussian", "discrete"])
def test_the_ledger_composes_the_counts_with_the_histograms(noise):
    b = PrivacyBudget.from_epsilon(1.0, 10, 20_000, delta=1e-6, unit="user", noise=noise, class_count_share=0.05)
    kind = "discrete_gaussian_histogram" if noise == "discrete" else "gaussian_histogram"
    grid = b.grid if noise == "discrete" else None
    ledger = Ledger(budget=b)
    ledger.add_mechanism("pe_voting_histogram", kind, count=10, sigma=b.sigma, grid=grid)
    partial = ledger.total().epsilon
    ledger.add_mechanism("dp_class_counts", kind, count=1, sigma=b.class_count_sigma, grid=grid)
    total = ledger.total()
    assert partial < total.epsilon
    # the budget records the epsilon asked; the sampler's exact sigma^2 is rounded up (~1e-8), never down
    assert total.epsilon <= b.epsilon and total.epsilon == pytest.approx(b.epsilon, rel=1e-6)
    assert ledger.within_budget()
    if noise == "discrete":  # zCDP: rho adds up, with the sampler's exact sigma^2
        assert total.rho == pytest.approx(composed_rho(b.sigma, 10, b.class_count_sigma, grid=b.grid), rel=1e-12)
        assert total.epsilon == pytest.approx(epsilon_for_rho(total.rho, 1e-6), rel=1e-12)
        assert total.rho <= 10 / (2 * b.sigma**2) + 1 / (2 * b.class_count_sigma**2)
        assert b.sigma > PrivacyBudget.from_epsilon(1.0, 10, 20_000, delta=1e-6, unit="user", class_count_share=0.05).sigma
    else:
        assert total.mu == pytest.approx(b.mu, rel=1e-12)
        assert total.epsilon == pytest.approx(epsilon_for_delta(1e-6, b.mu), rel=1e-12)


def test_sigma_given_keeps_the_histograms_noise():
    t, share = 8, 0.05
    b = PrivacyBudget.from_sigma(12.0, t, 5000, delta=1e-6, class_count_share=share)
    assert b.sigma == 12.0
    assert b.class_count_sigma == pytest.approx(class_count_sigma_for_sigma(12.0, t, share))
    assert 1 / b.class_count_sigma**2 == pytest.approx(share / (1 - share) * t / 144.0)
    assert count_share(b.sigma, t, b.class_count_sigma) == pytest.approx(share)
    assert b.epsilon > PrivacyBudget.from_sigma(12.0, t, 5000, delta=1e-6).epsilon  # the counts cost something
    assert b.epsilon == pytest.approx(epsilon_for_delta(1e-6, math.sqrt(t / 144.0 / (1 - share))))
    # asking back for that epsilon gives the same split
    back = PrivacyBudget.from_epsilon(b.epsilon, t, 5000, delta=1e-6, class_count_share=share)
    assert back.sigma == pytest.approx(12.0, rel=1e-8) and back.class_count_sigma == pytest.approx(b.class_count_sigma, rel=1e-8)


# ------------------------------------------------------------------------------ the budget's record
@pytest.mark.parametrize("make", [
    lambda: PrivacyBudget.from_epsilon(1.0, 10, 1000, class_count_share=0.05),
    lambda: PrivacyBudget.from_epsilon(2.0, 3, 1000, unit="user", noise="discrete", class_count_share=0.1),
    lambda: PrivacyBudget.from_sigma(5.0, 4, 300, delta=1e-5, class_count_share=0.3),
    lambda: PrivacyBudget.not_private(4, 300, class_count_share=0.05),
])
def test_labelled_budget_round_trips(make):
    b = make()
    d = json.loads(json.dumps(b.to_dict()))
    assert "class_count_sigma" in d
    assert PrivacyBudget.from_dict(d) == b
    assert "class" in b.describe()


def test_unlabelled_budget_record_is_unchanged():
    for b in (PrivacyBudget.from_epsilon(1.0, 10, 1000), PrivacyBudget.not_private(3, 10),
              PrivacyBudget.from_epsilon(1.0, 10, 1000, noise="discrete")):
        assert "class_count_sigma" not in b.to_dict() and b.class_count_sigma is None
    b = PrivacyBudget.from_epsilon(1.0, 10, 1000)
    assert b.mu == pytest.approx(math.sqrt(10) / b.sigma)


def test_labelled_budget_refuses_inconsistent_records():
    d = PrivacyBudget.from_epsilon(1.0, 10, 1000, class_count_share=0.05).to_dict()
    for factor in (0.5, 2.0):  # less noise would spend more than claimed; more would claim too much spending
        with pytest.raises(BudgetError, match="does not match"):
            PrivacyBudget.from_dict({**d, "class_count_sigma": d["class_count_sigma"] * factor})
    with pytest.raises(BudgetError, match="does not match"):  # dropping the counts would hide their cost
        PrivacyBudget.from_dict({k: v for k, v in d.items() if k != "class_count_sigma"})
    with pytest.raises(BudgetError):
        PrivacyBudget.from_dict({**d, "class_count_sigma": 0.0})
    with pytest.raises(BudgetError, match="class_count_sigma"):
        PrivacyBudget.from_dict({**d, "class_count_sigma": "big"})
    np_ = PrivacyBudget.not_private(3, 10).to_dict()
    with pytest.raises(BudgetError, match="class_count_sigma = 0"):
        PrivacyBudget.from_dict({**np_, "class_count_sigma": 2.0})


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, float("nan"), float("inf"), "0.05", True, None])
def test_invalid_shares_are_refused(share):
    if share is None:
        assert PrivacyBudget.from_epsilon(1.0, 10, 1000, class_count_share=None).class_count_sigma is None
        return
    with pytest.raises(BudgetError, match="class_count_share"):
        validate_share(share)
    for make in (lambda: PrivacyBudget.from_epsilon(1.0, 10, 1000, class_count_share=share),
                 lambda: PrivacyBudget.from_sigma(3.0, 10, 1000, class_count_share=share),
                 lambda: PrivacyBudget.not_private(10, 1000, class_count_share=share),
                 lambda: split_for_epsilon(1.0, 1e-6, 10, share)):
        with pytest.raises(BudgetError, match="class_count_share"):
            make()


# ------------------------------------------------------------------------------ the allocation
def test_allocation_examples():
    assert allocate_sizes([10, -3, 5.5, 0], 20).tolist() == [11, 1, 7, 1]
    assert allocate_sizes([-1, -2, -3], 7).tolist() == [3, 2, 2]  # nothing positive: equal shares
    assert allocate_sizes([5, 5], 5).tolist() == [3, 2]  # an exact tie goes to the lower class index
    assert allocate_sizes([0, 0, 100], 3).tolist() == [1, 1, 1]  # every class keeps one
    assert uniform_sizes(3, 10).tolist() == [4, 3, 3]
    assert uniform_sizes(4, 8).tolist() == [2, 2, 2, 2]
    for bad in ([1.0, np.nan], [], [[1, 2]]):
        with pytest.raises(ConfigError):
            allocate_sizes(bad, 10)
    with pytest.raises(ConfigError, match="smaller than the number of classes"):
        allocate_sizes([1, 2, 3], 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-50, 1e6, allow_nan=False), min_size=1, max_size=30), st.integers(0, 5000))
def test_allocation_properties(counts, extra):
    p = len(counts) + extra
    sizes = allocate_sizes(counts, p)
    assert sizes.dtype == np.int64 and sizes.sum() == p and sizes.min() >= 1
    assert np.array_equal(sizes, allocate_sizes(list(counts), p))  # deterministic
    w = np.clip(np.asarray(counts), 0, None)
    if w.sum() > 0:  # largest remainder: within one of the exact quota of the rest
        quota = w / w.sum() * (p - len(counts))
        assert np.all(np.abs(sizes - 1 - quota) < 1 + 1e-9)


def test_prior_sizes():
    names = ["cat", "dog", "eel"]
    assert prior_sizes(names, {"cat": 1, "eel": 3}, 10).tolist() == [3, 1, 6]
    assert prior_sizes(names, {"cat": 1, "dog": 1, "eel": 1}, 9).tolist() == [3, 3, 3]
    with pytest.raises(ConfigError, match="'ferret', 'gnu'") as e:
        prior_sizes(names, {"cat": 1, "gnu": 2, "ferret": 1}, 10)
    assert "dog" not in str(e.value) and "eel" not in str(e.value)  # names only the user's unknown labels
    with pytest.raises(ConfigError, match="positive sum"):
        prior_sizes(names, {"cat": 0}, 10)
    with pytest.raises(ConfigError):
        prior_sizes(names, {"cat": -1}, 10)


# ------------------------------------------------------------------------------ sensitivity of the counts
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_class_counts_have_l2_sensitivity_one_with_user_level_weights(data):
    """A user with rows in several classes: removing them changes the count vector by a non-negative vector
    of L1 norm <= 1, so L2 <= 1 (and <= grid on the integer grid of the discrete sampler)."""
    k = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(1, 40))
    owners = np.asarray(data.draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)))
    labels = np.asarray(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    grid = data.draw(st.sampled_from([1, 6, 2520]))
    for weights_of, scale in ((contribution_weights, 1), (vote_weights, 1),
                              (lambda o, m: grid_weights(o, m, grid).astype(np.float64), grid)):
        full = class_vote_counts(labels, weights_of(owners, n), k)
        for u in np.unique(owners):
            keep = owners != u
            rest = class_vote_counts(labels[keep], weights_of(owners[keep], int(keep.sum())), k)
            diff = full - rest
            assert np.all(diff >= -1e-9)
            assert np.linalg.norm(diff) <= scale * (1 + 1e-9)
            assert diff.sum() == pytest.approx(scale)  # the user's whole weight, however spread over classes


def test_class_vote_counts_checks_its_input():
    assert class_vote_counts(np.array([0, 2, 2]), np.array([1.0, 0.5, 0.5]), 4).tolist() == [1, 0, 1, 0]
    with pytest.raises(ConfigError):
        class_vote_counts(np.array([0, 3]), np.ones(2), 3)
    with pytest.raises(ConfigError):
        class_vote_counts(np.array([0, 1]), np.ones(3), 3)
    with pytest.raises(ConfigError):
        class_vote_counts(np.array([0.0, 1.0]), np.ones(2), 3)


# ------------------------------------------------------------------------------ spti privacy --labelled
def test_privacy_command_shows_the_split(capsys):
    args = ["privacy", "--epsilon", "1", "--iterations", "5", "--num-private", "1000"]
    assert main([*args, "--labelled", "--class-count-share", "0.05", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    sigma, sigma_c = split_for_epsilon(1.0, d["delta"], 5, 0.05)
    assert d["sigma"] == pytest.approx(sigma) and d["class_count_sigma"] == pytest.approx(sigma_c)
    assert d["split"]["sigma"] == d["sigma"] and d["split"]["class_count_sigma"] == d["class_count_sigma"]
    assert d["split"]["class_count_share"] == pytest.approx(0.05)
    assert d["split"]["mu"] ** 2 == pytest.approx(d["split"]["mu_histograms"] ** 2 + d["split"]["mu_class_counts"] ** 2)
    assert main([*args, "--labelled"]) == 0
    out = capsys.readouterr().out
    assert "sigma_c" in out and "split:" in out
    assert main(args + ["--json"]) == 0
    assert "class_count_sigma" not in json.loads(capsys.readouterr().out)
    assert main([*args, "--class-count-share", "1"]) == 2
    assert "class_count_share" in capsys.readouterr().err


def test_privacy_command_labelled_does_not_import_heavy_libraries():
    code = (
        "import sys; from spti.cli import main; "
        "main(['privacy','--epsilon','1','--iterations','5','--num-private','1000','--labelled']); "
        "heavy=[m for m in ('torch','transformers','diffusers','timm','sentence_transformers') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
