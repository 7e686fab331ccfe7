"""Tests of the privacy ledger (privacy.json): composition, budget checks, JSON safety and round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spti.errors import BudgetError, InputError
from spti.privacy import (
    POSTPROCESSING,
    PREPROCESSING,
    Ledger,
    PrivacyBudget,
    epsilon_for_delta,
    epsilon_from_sigma,
)


def _spti_ledger(budget: PrivacyBudget) -> Ledger:
    ledger = Ledger(budget)
    ledger.add_processing("captioning", PREPROCESSING)
    ledger.add_processing("caption embedding", PREPROCESSING)
    ledger.add_mechanism(
        "pe_voting_histogram",
        count=budget.iterations,
        sigma=budget.sigma,
        description="nearest-neighbour votes of private captions over candidates",
    )
    ledger.add_processing("rendering", POSTPROCESSING)
    ledger.add_trust_assumption("the captioning server receives the private images")
    return ledger


def test_pe_run_spends_exactly_its_budget() -> None:
    budget = PrivacyBudget.from_epsilon(1.0, 10, 1000)
    ledger = _spti_ledger(budget)
    total = ledger.total()
    assert total.private and total.delta == budget.delta
    assert total.mu == pytest.approx(budget.mu, rel=1e-12)
    assert total.epsilon == pytest.approx(1.0, rel=1e-9)
    assert ledger.within_budget()
    assert ledger.to_dict()["guarantee"] == budget.describe()
    ledger.add_mechanism("one more histogram", count=1, sigma=budget.sigma)
    assert not ledger.within_budget()
    assert ledger.to_dict()["within_budget"] is False
    assert ledger.to_dict()["guarantee"].startswith("OVER BUDGET")
    assert ledger.total().epsilon > 1.0


def test_composition_of_two_mechanisms_equals_one_with_combined_mu() -> None:
    ledger = Ledger()
    ledger.add_mechanism("a", count=3, sigma=2.0)
    ledger.add_mechanism("b", "gaussian", count=5, sigma=4.0)
    mu = math.sqrt(3 / 2.0**2 + 5 / 4.0**2)
    assert ledger.mu == pytest.approx(mu, rel=1e-12)
    total = ledger.total(delta=1e-6)
    assert total.epsilon == pytest.approx(epsilon_for_delta(1e-6, mu), rel=1e-12)
    # One mechanism run 8 times with the σ giving the same μ is the same guarantee.
    single = Ledger()
    single.add_mechanism("c", count=8, sigma=math.sqrt(8) / mu)
    assert single.total(1e-6).epsilon == pytest.approx(total.epsilon, rel=1e-9)
    # Composition is not additive in ε: GDP composition is tighter than summing the two ε's.
    eps_a = epsilon_from_sigma(2.0, 3, 1e-6)
    eps_b = epsilon_from_sigma(4.0, 5, 1e-6)
    assert total.epsilon < eps_a + eps_b


def test_sensitivity_scales_mu() -> None:
    a, b = Ledger(), Ledger()
    a.add_mechanism("x", count=4, sigma=2.0, l2_sensitivity=2.0)
    b.add_mechanism("x", count=4, sigma=1.0)
    assert a.mu == pytest.approx(b.mu) == pytest.approx(2.0)


def test_empty_ledger_spends_nothing() -> None:
    ledger = Ledger(PrivacyBudget.from_epsilon(1.0, 10, 1000))
    assert ledger.total().epsilon == 0.0 and ledger.total().mu == 0.0 and ledger.within_budget()


def test_round_trip_through_file(tmp_path: Path) -> None:
    ledger = _spti_ledger(PrivacyBudget.from_epsilon(2.0, 5, 300, delta=1e-5, unit="user"))
    path = tmp_path / "privacy.json"
    ledger.write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["privacy.json"]  # no temporary file left
    back = Ledger.read(path)
    assert back == ledger
    assert back.to_dict() == ledger.to_dict()
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["private"] is True and data["within_budget"] is True
    assert data["budget"]["epsilon"] == 2.0 and data["budget"]["unit"] == "user"
    assert data["spent"]["epsilon"] == pytest.approx(2.0)
    assert data["mechanisms"][0]["count"] == 5 and data["mechanisms"][0]["l2_sensitivity"] == 1.0
    assert [p["name"] for p in data["processing"]] == ["captioning", "caption embedding", "rendering"]
    assert data["processing"][2]["description"] == POSTPROCESSING
    assert data["trust_assumptions"] == ["the captioning server receives the private images"]
    assert "add/remove one user" == data["adjacency"]


def test_not_private_ledger_is_json_safe() -> None:
    budget = PrivacyBudget.not_private(3, 100)
    ledger = Ledger(budget)
    ledger.add_mechanism("pe_voting_histogram", count=3, sigma=0.0)
    assert not ledger.private
    total = ledger.total()
    assert total.epsilon == math.inf and not total.private
    text = json.dumps(ledger.to_dict(), allow_nan=False)  # inf must be written as "inf"
    data = json.loads(text)
    assert data["private"] is False and data["spent"]["epsilon"] == "inf"
    assert data["mechanisms"][0]["mu"] == "inf" and data["budget"]["epsilon"] == "inf"
    assert Ledger.from_dict(data) == ledger


def test_private_ledger_is_json_safe() -> None:
    ledger = _spti_ledger(PrivacyBudget.from_epsilon(1.0, 10, 1000))
    json.dumps(ledger.to_dict(), allow_nan=False)


def test_invalid_entries_are_rejected() -> None:
    ledger = Ledger(PrivacyBudget.from_epsilon(1.0, 10, 1000))
    with pytest.raises(BudgetError, match="sigma"):
        ledger.add_mechanism("h", count=1, sigma=0.0)  # no noiseless mechanism in a private run
    with pytest.raises(BudgetError, match="only Gaussian"):
        ledger.add_mechanism("h", "laplace", count=1, sigma=1.0)
    with pytest.raises(BudgetError, match="at least 1"):
        ledger.add_mechanism("h", count=0, sigma=1.0)
    with pytest.raises(BudgetError, match="integer"):
        ledger.add_mechanism("h", count=2.0, sigma=1.0)
    with pytest.raises(BudgetError, match="l2_sensitivity"):
        ledger.add_mechanism("h", count=1, sigma=1.0, l2_sensitivity=0.0)
    with pytest.raises(BudgetError, match="same unit"):
        ledger.add_mechanism("h", count=1, sigma=1.0, unit="user")
    with pytest.raises(BudgetError, match="non-empty"):
        ledger.add_mechanism("", count=1, sigma=1.0)
    with pytest.raises(BudgetError, match="non-empty"):
        ledger.add_processing("rendering", "")
    with pytest.raises(BudgetError, match="not below 1/N"):
        ledger.total(delta=0.01)
    assert ledger.mechanisms == []
    with pytest.raises(BudgetError, match="pass delta"):
        Ledger().total()


def test_trust_assumptions_are_deduplicated() -> None:
    ledger = Ledger()
    ledger.add_trust_assumption("remote captioner sees images")
    ledger.add_trust_assumption("remote captioner sees images")
    assert ledger.trust_assumptions == ["remote captioner sees images"]


def test_read_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no privacy ledger"):
        Ledger.read(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Ledger.read(bad)
    good = _spti_ledger(PrivacyBudget.from_epsilon(1.0, 10, 1000)).to_dict()
    bad.write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(InputError, match="upgrade spti"):
        Ledger.read(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not an spti privacy ledger"):
        Ledger.read(bad)
    broken = dict(good)
    broken["mechanisms"] = [{"name": "x"}]
    bad.write_text(json.dumps(broken))
    with pytest.raises(InputError, match="malformed"):
        Ledger.read(bad)
    tampered = json.loads(json.dumps(good))
    tampered["budget"]["epsilon"] = 0.1  # claims more privacy than its sigma gives
    bad.write_text(json.dumps(tampered))
    with pytest.raises(BudgetError, match="does not match"):
        Ledger.read(bad)
