"""The privacy ledger: everything privacy.json says about how a release was produced.

A DP claim is only as good as its list of what touched private data. The ledger records

* every *mechanism* that spends budget (the Gaussian histograms of PE, with their σ, sensitivity and how
  many times they ran), and composes them exactly in Gaussian DP (Dong, Roth & Su 2022):
  μ_total = √(Σ_i count_i · (Δ_i/σ_i)²), then ε(δ) by the analytic Gaussian trade-off (Balle & Wang 2018);
* every *processing* step that does not spend budget and why (captioning, embedding: applied to each
  record independently and only used through the noisy histograms; rendering: post-processing of DP output);
* every *trust assumption* the guarantee rests on (e.g. a remote captioner that receives private images);
* the planned :class:`~spti.privacy.accountant.PrivacyBudget`, and whether the spent total stays within it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from spti.data.io import atomic_write_json, read_json
from spti.errors import BudgetError, InputError
from spti.privacy.accountant import (
    PrivacyBudget,
    _float_from_json,
    _float_to_json,
    _real,
    epsilon_for_delta,
    validate_delta,
    validate_iterations,
    validate_sigma,
    validate_unit,
)

__all__ = [
    "LEDGER_SCHEMA",
    "LEDGER_SCHEMA_VERSION",
    "MECHANISM_KINDS",
    "POSTPROCESSING",
    "PREPROCESSING",
    "Ledger",
    "Mechanism",
    "PrivacyTotal",
    "ProcessingStep",
]

LEDGER_SCHEMA = "spti.privacy-ledger"
LEDGER_SCHEMA_VERSION = 1

#: Mechanisms the ledger can compose: Gaussian noise added to a query of bounded L2 sensitivity.
MECHANISM_KINDS = ("gaussian_histogram", "gaussian")

#: Standard justifications for steps that spend no budget.
PREPROCESSING = "applied to each record independently; its output is only used through the noisy histograms"
POSTPROCESSING = "post-processing of DP output"

ACCOUNTING_METHOD = (
    "exact composition in Gaussian DP (Dong, Roth & Su 2022): mu = sqrt(sum_i count_i * (sensitivity_i / "
    "sigma_i)^2); epsilon(delta) from the tight Gaussian trade-off curve (Balle & Wang 2018): "
    "delta = Phi(-eps/mu + mu/2) - exp(eps) * Phi(-eps/mu - mu/2)"
)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BudgetError(f"{name} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Mechanism:
    """One entry of the ledger: ``count`` runs of a Gaussian mechanism with noise ``sigma`` (std) on a
    query of L2 sensitivity ``l2_sensitivity`` per ``unit``. σ = 0 only in a not-private run."""

    name: str
    kind: str
    count: int
    sigma: float
    l2_sensitivity: float
    unit: str
    description: str = ""

    @property
    def mu(self) -> float:
        """The GDP parameter of this entry: √count · Δ/σ (∞ when σ = 0)."""
        if self.sigma == 0:
            return math.inf
        return math.sqrt(self.count) * self.l2_sensitivity / self.sigma

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "sigma": self.sigma,
            "l2_sensitivity": self.l2_sensitivity,
            "unit": self.unit,
            "mu": _float_to_json(self.mu),
            "description": self.description,
        }


@dataclass(frozen=True)
class ProcessingStep:
    """A step that touches private data (or DP output) without spending budget, with the reason why."""

    name: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class PrivacyTotal:
    """The composed guarantee of all mechanisms: (ε, δ)-DP and μ-GDP; ε = μ = ∞ when not private."""

    epsilon: float
    delta: float
    mu: float
    private: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": _float_to_json(self.epsilon),
            "delta": _float_to_json(self.delta),
            "mu": _float_to_json(self.mu),
            "private": self.private,
        }


@dataclass
class Ledger:
    """The budget ledger of one run (the content of privacy.json).

    ``budget`` is the planned budget; it gives the δ at which :meth:`total` reports ε, and the unit that
    every mechanism must share (mixing record- and user-level mechanisms would give no guarantee for
    either).
    """

    budget: PrivacyBudget | None = None
    mechanisms: list[Mechanism] = field(default_factory=list)
    processing: list[ProcessingStep] = field(default_factory=list)
    trust_assumptions: list[str] = field(default_factory=list)

    # -- recording ----------------------------------------------------------------------------------------

    def add_mechanism(
        self,
        name: str,
        kind: str = "gaussian_histogram",
        *,
        count: int,
        sigma: float,
        l2_sensitivity: float = 1.0,
        unit: str | None = None,
        description: str = "",
    ) -> Mechanism:
        """Record ``count`` applications of a Gaussian mechanism with noise std ``sigma``.

        ``unit`` defaults to the budget's unit (or "record"). σ = 0 is accepted only when the budget is
        explicitly not private.
        """
        _text(name, "mechanism name")
        if kind not in MECHANISM_KINDS:
            raise BudgetError(
                f"mechanism kind {kind!r} is not supported; the ledger composes only Gaussian mechanisms "
                f"({', '.join(MECHANISM_KINDS)})"
            )
        n = validate_iterations(count)
        private_budget = self.budget is None or self.budget.private
        s = validate_sigma(sigma, allow_zero=not private_budget)
        sens = _real(l2_sensitivity, "l2_sensitivity")
        if not (0 < sens < math.inf):
            raise BudgetError(f"l2_sensitivity = {sens:g} must be a finite number > 0")
        u = validate_unit(unit if unit is not None else (self.budget.unit if self.budget else "record"))
        units = {m.unit for m in self.mechanisms} | ({self.budget.unit} if self.budget else set())
        if units and units != {u}:
            raise BudgetError(
                f"mechanism {name!r} protects one {u}, but this ledger accounts per {sorted(units)[0]}; "
                "all mechanisms of a run must use the same unit of privacy"
            )
        if not isinstance(description, str):
            raise BudgetError("mechanism description must be a string")
        m = Mechanism(name, kind, n, s, sens, u, description)
        self.mechanisms.append(m)
        return m

    def add_processing(self, name: str, description: str) -> ProcessingStep:
        """Record a step that spends no budget (see :data:`PREPROCESSING`, :data:`POSTPROCESSING`)."""
        step = ProcessingStep(_text(name, "processing name"), _text(description, "processing description"))
        self.processing.append(step)
        return step

    def add_trust_assumption(self, text: str) -> None:
        """Record something the guarantee relies on beyond the mathematics (added once)."""
        t = _text(text, "trust assumption")
        if t not in self.trust_assumptions:
            self.trust_assumptions.append(t)

    # -- accounting ---------------------------------------------------------------------------------------

    @property
    def mu(self) -> float:
        """μ of the whole run: √(Σ_i count_i (Δ_i/σ_i)²) (exact GDP composition, Dong, Roth & Su 2022)."""
        if any(m.sigma == 0 for m in self.mechanisms):
            return math.inf
        return math.sqrt(sum(m.count * (m.l2_sensitivity / m.sigma) ** 2 for m in self.mechanisms))

    @property
    def private(self) -> bool:
        return (self.budget is None or self.budget.private) and math.isfinite(self.mu)

    def total(self, delta: float | None = None) -> PrivacyTotal:
        """The composed (ε, δ) of everything recorded, at ``delta`` (default: the budget's δ)."""
        if delta is None:
            if self.budget is not None:
                delta = self.budget.delta
            else:
                raise BudgetError("the ledger has no budget; pass delta to total()")
        mu = self.mu
        if not self.private:
            return PrivacyTotal(math.inf, float(delta), math.inf, False)
        n = self.budget.num_private if self.budget is not None else None
        unit = self.budget.unit if self.budget is not None else "record"
        d = validate_delta(delta, n, unit)
        eps = 0.0 if mu == 0 else epsilon_for_delta(d, mu)
        return PrivacyTotal(eps, d, mu, True)

    def within_budget(self) -> bool:
        """True when the spent ε does not exceed the planned ε (up to 1e-9 relative rounding)."""
        if self.budget is None:
            return True
        if not self.budget.private:
            return True
        spent = self.total().epsilon
        return spent <= self.budget.epsilon * (1 + 1e-9)

    def _guarantee(self, total: PrivacyTotal | None) -> str | None:
        """The human statement of the guarantee: the budget's, unless more was spent than planned."""
        if self.budget is None or total is None:
            return None
        if self.within_budget():
            return self.budget.describe()
        return (
            f"OVER BUDGET: the recorded mechanisms spend epsilon = {total.epsilon:.4g} at delta = "
            f"{total.delta:.3g} (mu = {total.mu:.4g}), more than the planned epsilon = {self.budget.epsilon:.4g}."
        )

    # -- serialisation ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe content of privacy.json."""
        total: PrivacyTotal | None
        try:
            total = self.total()
        except BudgetError:
            total = None
        return {
            "schema": LEDGER_SCHEMA,
            "schema_version": LEDGER_SCHEMA_VERSION,
            "private": self.private,
            "guarantee": self._guarantee(total),
            "adjacency": "add/remove one " + (self.budget.unit if self.budget else "record"),
            "accounting": ACCOUNTING_METHOD,
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "spent": total.to_dict() if total is not None else None,
            "within_budget": self.within_budget() if total is not None else None,
            "mechanisms": [m.to_dict() for m in self.mechanisms],
            "processing": [p.to_dict() for p in self.processing],
            "trust_assumptions": list(self.trust_assumptions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        """Rebuild a ledger from :meth:`to_dict` output; every entry is validated again."""
        if not isinstance(data, dict) or data.get("schema") != LEDGER_SCHEMA:
            raise InputError("not an spti privacy ledger (missing schema 'spti.privacy-ledger')")
        version = data.get("schema_version")
        if version != LEDGER_SCHEMA_VERSION:
            raise InputError(
                f"privacy ledger schema version {version!r} is not supported (this spti reads version "
                f"{LEDGER_SCHEMA_VERSION}); upgrade spti"
            )
        budget = PrivacyBudget.from_dict(data["budget"]) if data.get("budget") is not None else None
        ledger = cls(budget=budget)
        for m in data.get("mechanisms", []):
            ledger.add_mechanism(
                m["name"],
                m.get("kind", "gaussian_histogram"),
                count=m["count"],
                sigma=_float_from_json(m["sigma"], "sigma"),
                l2_sensitivity=_float_from_json(m.get("l2_sensitivity", 1.0), "l2_sensitivity"),
                unit=m.get("unit"),
                description=m.get("description", ""),
            )
        for p in data.get("processing", []):
            ledger.add_processing(p["name"], p["description"])
        for t in data.get("trust_assumptions", []):
            ledger.add_trust_assumption(t)
        return ledger

    def write(self, path: str | os.PathLike) -> None:
        """Write privacy.json atomically (a crash leaves the old file or the new one, never half of one)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Ledger:
        """Read privacy.json back; a missing, malformed or inconsistent file raises a clear error."""
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise InputError(f"{os.fspath(path)}: no privacy ledger there") from None
        except ValueError as e:
            raise InputError(f"{os.fspath(path)}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as e:
            raise InputError(
                f"{os.fspath(path)}: malformed privacy ledger ({type(e).__name__}: {e})"
            ) from None
        except BudgetError as e:
            raise BudgetError(f"{os.fspath(path)}: {e}") from None
