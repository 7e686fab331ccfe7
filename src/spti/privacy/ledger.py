"""The privacy ledger: everything privacy.json says about how a release was produced.

A DP claim is only as good as its list of what touched private data. The ledger records

* every *mechanism* that spends budget (the Gaussian histograms of PE, with their σ, sensitivity and how
  many times they ran), and composes them exactly in Gaussian DP (Dong, Roth & Su 2022):
  μ_total = √(Σ_i count_i · (Δ_i/σ_i)²), then ε(δ) by the analytic Gaussian trade-off (Balle & Wang 2018);
  a run with the exact discrete Gaussian (``privacy.noise: discrete``) is composed in zCDP instead, with the
  bound proven for that sampler (ρ adds up; ε(δ) by Canonne, Kamath & Steinke 2020);
* where the noise came from: a run whose noise was drawn from a fixed (insecure) seed is NOT private, and
  privacy.json says so whatever its σ (the seed itself is never written to the ledger);
* what the guarantee assumes about N, the number of private records (:func:`dataset_size_statement`), and a
  warning when δ is too large to mean anything;
* every *processing* step that does not spend budget and why (captioning, embedding: applied to each
  record independently and only used through the noisy histograms; rendering: post-processing of DP output);
* every *trust assumption* the guarantee rests on (e.g. a remote captioner that receives private images);
* the planned :class:`~spti.privacy.budget.PrivacyBudget`, and whether the spent total stays within it.

Why one file of ~460 lines: it is the whole schema of privacy.json — the record types, how they compose,
and the one writer (:meth:`Ledger.to_dict`) next to the one reader (:meth:`Ledger.from_dict`) that rebuilds
every record; split, a reader would need two files open to follow one field. The accounting it calls lives
in :mod:`spti.privacy.accountant` and :mod:`spti.privacy.zcdp`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from spti.data.io import atomic_write_json, read_json
from spti.errors import BudgetError, InputError
from spti.privacy.accountant import (
    _real,
    epsilon_for_delta,
    validate_delta,
    validate_iterations,
    validate_sigma,
    validate_unit,
)
from spti.privacy.budget import (
    PrivacyBudget,
    _float_from_json,
    _float_to_json,
    dataset_size_statement,
    delta_warning,
)
from spti.privacy.zcdp import epsilon_for_rho

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

#: Mechanisms the ledger can compose: Gaussian noise added to a query of bounded L2 sensitivity, and the
#: exact discrete Gaussian on an integer vote grid (accounted with its proven zCDP bound).
MECHANISM_KINDS = ("gaussian_histogram", "gaussian", "discrete_gaussian_histogram")
_DISCRETE_KINDS = ("discrete_gaussian_histogram",)

#: Standard justifications for steps that spend no budget.
PREPROCESSING = "applied to each record independently; its output is only used through the noisy histograms"
POSTPROCESSING = "post-processing of DP output"

ACCOUNTING_METHOD = (
    "exact composition in Gaussian DP (Dong, Roth & Su 2022): mu = sqrt(sum_i count_i * (sensitivity_i / "
    "sigma_i)^2); epsilon(delta) from the tight Gaussian trade-off curve (Balle & Wang 2018): "
    "delta = Phi(-eps/mu + mu/2) - exp(eps) * Phi(-eps/mu - mu/2)"
)
ACCOUNTING_ZCDP = (
    "composition in zero-concentrated DP: rho = sum_i count_i * rho_i, with rho_i = sensitivity_i^2 / "
    "(2 sigma_grid_i^2) for the exact discrete Gaussian on the vote grid (Canonne, Kamath & Steinke 2020, "
    "Thm. 4 / Thm. 14; sigma_grid^2 rounded up to the sampler's exact rational) and sensitivity_i^2 / "
    "(2 sigma_i^2) for a Gaussian; epsilon(delta) by the zCDP conversion of Canonne, Kamath & Steinke 2020 "
    "(Prop. 12 / Cor. 13). A proven bound, slightly looser than exact GDP accounting; mu is reported for "
    "comparison only"
)

#: privacy.json's statement of where the noise came from, by (kind, secure).
NOISE_STATEMENTS = {
    ("gaussian", True): (
        "floating-point Gaussian noise (numpy PCG64 seeded with 128 bits of OS entropy for every histogram); "
        "the guarantee is for the idealised real-valued Gaussian mechanism (see spti.privacy.noise)"
    ),
    ("discrete", True): (
        "exact discrete Gaussian noise (Canonne, Kamath & Steinke 2020, integer arithmetic only) with "
        "randomness from the OS CSPRNG, accounted with the zCDP bound proven for it"
    ),
    ("gaussian", False): (
        "INSECURE: the noise was drawn from a fixed seed given for tests and debugging "
        "(privacy.insecure_noise_seed); anyone who knows the seed can recompute and subtract it, so the "
        "output is NOT differentially private. The seed is not recorded in this ledger"
    ),
}
NOISE_STATEMENTS[("discrete", False)] = NOISE_STATEMENTS[("gaussian", False)]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BudgetError(f"{name} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Mechanism:
    """One entry of the ledger: ``count`` runs of a Gaussian mechanism with noise ``sigma`` (std) on a
    query of L2 sensitivity ``l2_sensitivity`` per ``unit``. σ = 0 only in a not-private run.

    ``kind="discrete_gaussian_histogram"``: the exact discrete Gaussian on the integer vote grid of
    resolution ``grid`` (σ and the sensitivity in vote units, as for the Gaussian); its privacy is the zCDP
    ρ proven for it, :attr:`rho`."""

    name: str
    kind: str
    count: int
    sigma: float
    l2_sensitivity: float
    unit: str
    description: str = ""
    grid: int | None = None

    @property
    def discrete(self) -> bool:
        return self.kind in _DISCRETE_KINDS

    @property
    def mu(self) -> float:
        """The GDP parameter of this entry: √count · Δ/σ (∞ when σ = 0). For the discrete Gaussian this is
        the continuous Gaussian's μ at the same σ, for comparison; its accounting uses :attr:`rho`."""
        if self.sigma == 0:
            return math.inf
        return math.sqrt(self.count) * self.l2_sensitivity / self.sigma

    @property
    def rho(self) -> float:
        """zCDP ρ of this entry: count · Δ²/(2σ²) for a Gaussian (μ-GDP is μ²/2-zCDP), count · Δ² · ρ₁ for
        the discrete Gaussian, ρ₁ = 1/(2σ_grid²) in vote units with σ_grid² the sampler's exact
        (rounded-up) value (Canonne, Kamath & Steinke 2020, Thm. 4 / 14). ∞ when σ = 0."""
        if self.sigma == 0:
            return math.inf
        if self.discrete:
            from spti.privacy.discrete import exact_sigma

            return self.count * self.l2_sensitivity**2 * exact_sigma(self.sigma, self.grid or 1).rho()
        return self.count * (self.l2_sensitivity / self.sigma) ** 2 / 2.0

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "sigma": self.sigma,
            "l2_sensitivity": self.l2_sensitivity,
            "unit": self.unit,
            "mu": _float_to_json(self.mu),
            "description": self.description,
        }
        if self.discrete:
            d["grid"] = self.grid
            d["rho"] = _float_to_json(self.rho)
        return d


@dataclass(frozen=True)
class ProcessingStep:
    """A step that touches private data (or DP output) without spending budget, with the reason why."""

    name: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class PrivacyTotal:
    """The composed guarantee of all mechanisms: (ε, δ)-DP and μ-GDP; ε = μ = ∞ when there is no noise.

    ``rho``: the composed zCDP ρ when the ledger is accounted in zCDP (discrete noise), else None.
    ``private`` is False also when the noise was insecure: the numbers are then what the noise would give
    if it were secret, which it is not."""

    epsilon: float
    delta: float
    mu: float
    private: bool
    rho: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "epsilon": _float_to_json(self.epsilon),
            "delta": _float_to_json(self.delta),
            "mu": _float_to_json(self.mu),
            "private": self.private,
        }
        if self.rho is not None:
            d["rho"] = _float_to_json(self.rho)
        return d


@dataclass
class Ledger:
    """The budget ledger of one run (the content of privacy.json).

    ``budget`` is the planned budget; it gives the δ at which :meth:`total` reports ε, and the unit that
    every mechanism must share (mixing record- and user-level mechanisms would give no guarantee for
    either). ``secure_noise``: False when the noise came from a fixed seed (``insecure_noise_seed``):
    the run is then NOT private whatever its σ, and privacy.json says so.
    """

    budget: PrivacyBudget | None = None
    mechanisms: list[Mechanism] = field(default_factory=list)
    processing: list[ProcessingStep] = field(default_factory=list)
    trust_assumptions: list[str] = field(default_factory=list)
    secure_noise: bool = True

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
        grid: int | None = None,
    ) -> Mechanism:
        """Record ``count`` applications of a Gaussian mechanism with noise std ``sigma``.

        ``unit`` defaults to the budget's unit (or "record"). σ = 0 is accepted only when the budget is
        explicitly not private. ``grid``: the integer vote grid of a discrete Gaussian mechanism (default 1).
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
        if kind in _DISCRETE_KINDS:
            from spti.privacy.discrete import validate_scale

            grid = validate_scale(1 if grid is None else grid)
        elif grid is not None:
            raise BudgetError(f"grid applies only to a discrete Gaussian mechanism, not to {kind!r}")
        m = Mechanism(name, kind, n, s, sens, u, description, grid)
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
    def rho(self) -> float:
        """zCDP ρ of the whole run: Σ_i ρ_i (Bun & Steinke 2016, Lemma 2.3)."""
        return sum((m.rho for m in self.mechanisms), 0.0)

    @property
    def zcdp(self) -> bool:
        """Accounted in zCDP (a discrete Gaussian is planned or recorded) rather than exactly in GDP."""
        planned = self.budget is not None and self.budget.private and self.budget.noise == "discrete"
        return planned or any(m.discrete for m in self.mechanisms)

    @property
    def noisy(self) -> bool:
        """Every recorded mechanism added noise and the budget is not the explicitly not-private one."""
        return (self.budget is None or self.budget.private) and math.isfinite(self.mu)

    @property
    def private(self) -> bool:
        """Differentially private: noise everywhere, and noise nobody can predict."""
        return self.noisy and self.secure_noise

    @property
    def noise_kind(self) -> str:
        if self.budget is not None and self.budget.private:
            return self.budget.noise
        return "discrete" if any(m.discrete for m in self.mechanisms) else "gaussian"

    def total(self, delta: float | None = None) -> PrivacyTotal:
        """The composed (ε, δ) of everything recorded, at ``delta`` (default: the budget's δ).

        With insecure noise the numbers are those the noise would give if it were secret, and the total
        says ``private=False``."""
        if delta is None:
            if self.budget is not None:
                delta = self.budget.delta
            else:
                raise BudgetError("the ledger has no budget; pass delta to total()")
        mu = self.mu
        if not self.noisy:
            return PrivacyTotal(math.inf, float(delta), math.inf, False)
        n = self.budget.num_private if self.budget is not None else None
        unit = self.budget.unit if self.budget is not None else "record"
        d = validate_delta(delta, n, unit)
        if self.zcdp:
            rho = self.rho
            return PrivacyTotal(epsilon_for_rho(rho, d), d, mu, self.secure_noise, rho)
        eps = 0.0 if mu == 0 else epsilon_for_delta(d, mu)
        return PrivacyTotal(eps, d, mu, self.secure_noise)

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
        if not self.secure_noise and self.budget.private:
            return (
                "NOT differentially private: the DP noise was drawn from a fixed, insecure seed "
                "(privacy.insecure_noise_seed, for tests and debugging only), so anyone who knows the seed can "
                f"recompute and subtract it. The accounting below (epsilon = {total.epsilon:.4g} at delta = "
                f"{total.delta:.3g}) would hold only if the noise were secret; do not release this output as "
                "private."
            )
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
        warnings = []
        if self.budget is not None and (w := delta_warning(self.budget)):
            warnings.append(w)
        kind = self.noise_kind
        if self.noisy or not self.mechanisms and (self.budget is None or self.budget.private):
            noise = {"kind": kind, "secure": self.secure_noise, "statement": NOISE_STATEMENTS[(kind, self.secure_noise)]}
        else:
            noise = {"kind": "none", "secure": self.secure_noise,
                     "statement": "no noise (sigma = 0): NOT differentially private"}
        return {
            "schema": LEDGER_SCHEMA,
            "schema_version": LEDGER_SCHEMA_VERSION,
            "private": self.private,
            "guarantee": self._guarantee(total),
            "adjacency": "add/remove one " + (self.budget.unit if self.budget else "record"),
            "dataset_size": dataset_size_statement(self.budget) if self.budget is not None else None,
            "noise": noise,
            "accounting": ACCOUNTING_ZCDP if self.zcdp else ACCOUNTING_METHOD,
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "spent": total.to_dict() if total is not None else None,
            "within_budget": self.within_budget() if total is not None else None,
            "mechanisms": [m.to_dict() for m in self.mechanisms],
            "processing": [p.to_dict() for p in self.processing],
            "trust_assumptions": list(self.trust_assumptions),
            "warnings": warnings,
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
        noise = data.get("noise") if isinstance(data.get("noise"), dict) else {}
        secure = noise.get("secure", True)
        if not isinstance(secure, bool):
            raise BudgetError("noise.secure must be true or false")
        ledger = cls(budget=budget, secure_noise=secure)
        for m in data.get("mechanisms", []):
            ledger.add_mechanism(
                m["name"],
                m.get("kind", "gaussian_histogram"),
                count=m["count"],
                sigma=_float_from_json(m["sigma"], "sigma"),
                l2_sensitivity=_float_from_json(m.get("l2_sensitivity", 1.0), "l2_sensitivity"),
                unit=m.get("unit"),
                description=m.get("description", ""),
                grid=m.get("grid"),
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
