"""The privacy budget of one run: :class:`PrivacyBudget` ((ε, δ), σ, T, N and the unit), and what it says.

A budget is calibrated by the accountant proven for its kind of noise: exact Gaussian DP for the continuous
Gaussian (:mod:`spti.privacy.accountant`), the zCDP bound of the exact discrete Gaussian otherwise
(:mod:`spti.privacy.discrete_accounting`). :func:`delta_warning` and :func:`dataset_size_statement` put in
words what a budget protects and what it assumes; the CLI, the ledger and the report print them.

A labelled run with DP class sizes (issue 12) spends part of the same budget on one noisy count per class:
the budget then also holds the counts' noise σ_c, and ε, δ and μ are those of the histograms and the counts
composed (the split: :mod:`spti.privacy.class_counts`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from spti.errors import BudgetError
from spti.privacy.accountant import (
    _real,
    _validate_mu,
    default_delta,
    epsilon_for_delta,
    sigma_from_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_num_private,
    validate_sigma,
    validate_unit,
)
from spti.privacy.class_counts import (
    class_count_sigma_for_sigma,
    composed_epsilon,
    composed_mu,
    composed_rho,
    count_share,
    split_for_epsilon,
    validate_share,
)
from spti.privacy.discrete import DEFAULT_USER_SCALE, NOISE_KINDS, validate_scale
from spti.privacy.discrete_accounting import epsilon_discrete, rho_discrete, sigma_for_epsilon_discrete

__all__ = [
    "DELTA_WARN",
    "PrivacyBudget",
    "dataset_size_statement",
    "delta_warning",
    "resolve_noise",
]

#: Above this δ spti warns: δ is the probability with which the guarantee may fail outright, and the PE
#: literature and most DP deployments use δ ≤ 1e-5 (the default 1/(N ln N) exceeds it for N below ~10⁴;
#: N = 4 gives δ = 0.18, which protects nobody).
DELTA_WARN = 1e-5

# Relative tolerance when checking that a stored budget's ε matches its σ (see PrivacyBudget).
_CONSISTENCY_RTOL = 1e-6


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
    ``class_count_sigma`` (σ_c): a labelled run with DP class sizes also releases ONE noisy count per class
    (sensitivity 1, noise σ_c; :mod:`spti.privacy.class_counts`), and the budget covers both: μ =
    √(T/σ² + 1/σ_c²), ε = ε of that composition. None: no class counts (unlabelled runs, public priors).
    In a not-private run it is 0.0 (the counts are used without noise, and recorded so).
    Discrete noise works for the counts too, on purpose rather than refused: the counts are summed from the
    same integer grid weights as the votes (each record's or user's rows share exactly ``grid``), so the
    count vector has integer entries and L2 sensitivity <= ``grid`` on the grid, exactly the histograms'
    argument (CKS 2020 Thm. 4 / 14); it goes through the same ``release_histogram(kind="discrete",
    grid=grid)`` and is accounted in the same zCDP composition: ρ = T·ρ(σ) + ρ(σ_c) with the sampler's
    exact σ², split by the same share of ρ (= μ²/2).
    These four are written by :meth:`to_dict` only when they differ from the defaults, so the record of a
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
    class_count_sigma: float | None = None

    def __post_init__(self) -> None:
        validate_unit(self.unit)
        t = validate_iterations(self.iterations)
        n = validate_num_private(self.num_private)
        if not isinstance(self.private, bool) or not isinstance(self.delta_is_default, bool):
            raise BudgetError("private and delta_is_default must be true or false")
        if not isinstance(self.num_private_is_bound, bool):
            raise BudgetError("num_private_is_bound must be true or false")
        _check_noise(self.noise, self.grid)
        if self.noise == "discrete":
            validate_scale(self.grid)
        cc = self.class_count_sigma
        if not self.private:
            if not (
                _real(self.epsilon, "epsilon") == math.inf
                and _real(self.sigma, "sigma") == 0.0
                and _real(self.mu, "mu") == math.inf
            ):
                raise BudgetError("a not-private budget must have epsilon = inf, sigma = 0 and mu = inf")
            if cc is not None and _real(cc, "class_count_sigma") != 0.0:
                raise BudgetError("a not-private budget must have class_count_sigma = 0 (no noise) or none")
            return
        eps = _real(self.epsilon, "epsilon")
        if math.isinf(eps) or eps < 0:
            raise BudgetError(f"epsilon = {eps} is invalid for a private budget; it must be finite and >= 0")
        d = validate_delta(self.delta, n, self.unit)
        s = validate_sigma(self.sigma)
        mu = _validate_mu(self.mu)
        c = None if cc is None else validate_sigma(_real(cc, "class_count_sigma"))
        expected_mu = composed_mu(s, t, c)
        if not math.isclose(mu, expected_mu, rel_tol=1e-9):
            what = "sqrt(T)/sigma" if c is None else "sqrt(T/sigma^2 + 1/class_count_sigma^2)"
            raise BudgetError(f"mu = {mu!r} does not match {what} = {expected_mu!r}")
        actual = _epsilon_of(s, t, d, self.unit, self.noise, self.grid, c)
        if actual > eps * (1 + 1e-9) + 1e-12 or not math.isclose(
            actual, eps, rel_tol=_CONSISTENCY_RTOL, abs_tol=1e-12
        ):
            counts = "" if c is None else f", class_count_sigma = {c!r}"
            raise BudgetError(
                f"epsilon = {eps!r} does not match sigma = {s!r}{counts}, T = {t}, delta = {d!r}, which give "
                f"epsilon = {actual!r}; rebuild the budget with PrivacyBudget.from_epsilon or from_sigma"
            )

    # -- constructors -------------------------------------------------------------------------------------

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
        class_count_share: float | None = None,
    ) -> PrivacyBudget:
        """Calibrate σ so that T iterations are (ε, δ)-DP; δ defaults to 1/(N ln N).

        ε = ∞ is refused (use :meth:`not_private`). ``noise="discrete"`` calibrates σ with the discrete
        sampler's zCDP accountant on the vote grid ``grid`` (None: :func:`resolve_noise`'s default).
        ``num_private_is_bound``: ``num_private`` is a public upper bound on N (see the class docstring).
        ``class_count_share`` = s (labelled runs with DP class sizes): the T histograms and one class-count
        release together spend (ε, δ), the counts taking the share s of μ² (of ρ for the discrete noise):
        :func:`spti.privacy.class_counts.split_for_epsilon`, rounded so the composed ε is <= ε.
        """
        eps = validate_epsilon(epsilon)
        c = _Setting.of(iterations, num_private, delta, unit, noise, grid)
        if class_count_share is not None:
            sigma, sigma_c = split_for_epsilon(eps, c.delta, c.iterations, validate_share(class_count_share),
                                               noise=c.noise, grid=c.grid)
            return cls._private(c, eps, sigma, num_private_is_bound, sigma_c)
        if c.noise == "discrete":
            sigma = sigma_for_epsilon_discrete(eps, c.iterations, c.delta, unit=c.unit, scale=c.grid)
        else:
            sigma = sigma_from_epsilon(eps, c.delta, c.iterations)
        return cls._private(c, eps, sigma, num_private_is_bound)

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
        class_count_share: float | None = None,
    ) -> PrivacyBudget:
        """The (ε, δ) spent by T iterations with a given noise σ; δ defaults to 1/(N ln N).

        ``class_count_share`` = s: the histograms keep σ and the class counts get σ_c = σ·√((1 − s)/(s·T))
        (μ_c² = s/(1 − s)·T/σ², the share s of the composed μ²); ε is that of both together, so larger than
        without the counts (:func:`spti.privacy.class_counts.class_count_sigma_for_sigma`)."""
        s = validate_sigma(sigma)
        c = _Setting.of(iterations, num_private, delta, unit, noise, grid)
        sigma_c = None
        if class_count_share is not None:
            sigma_c = class_count_sigma_for_sigma(s, c.iterations, validate_share(class_count_share))
        eps = _epsilon_of(s, c.iterations, c.delta, c.unit, c.noise, c.grid, sigma_c)
        return cls._private(c, eps, s, num_private_is_bound, sigma_c)

    @classmethod
    def _private(cls, c: _Setting, epsilon: float, sigma: float, num_private_is_bound: bool,
                 class_count_sigma: float | None = None) -> PrivacyBudget:
        t = c.iterations
        return cls(epsilon, c.delta, sigma, t, composed_mu(sigma, t, class_count_sigma), c.num_private, c.unit,
                   True, c.delta_is_default, c.noise, c.grid, bool(num_private_is_bound), class_count_sigma)

    @classmethod
    def not_private(
        cls, iterations: int, num_private: int, unit: str = "record", *, num_private_is_bound: bool = False,
        class_count_share: float | None = None,
    ) -> PrivacyBudget:
        """An explicitly NOT differentially private run: σ = 0, ε = ∞ (for debugging and upper bounds).

        ``class_count_share`` given (a labelled run with DP class sizes): σ_c = 0 too, i.e. the class sizes
        come from noise-free counts, recorded as not private like the rest of the run (the share is only
        validated: nothing is spent)."""
        t = validate_iterations(iterations)
        n = validate_num_private(num_private)
        u = validate_unit(unit)
        cc = None
        if class_count_share is not None:
            validate_share(class_count_share)
            cc = 0.0
        return cls(math.inf, 0.0, 0.0, t, math.inf, n, u, False, False,
                   num_private_is_bound=bool(num_private_is_bound), class_count_sigma=cc)

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
        if self.class_count_sigma is None:
            del d["class_count_sigma"]
        else:
            d["class_count_sigma"] = float(self.class_count_sigma)
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
            class_count_sigma=(None if data.get("class_count_sigma") is None
                               else _float_from_json(data["class_count_sigma"], "class_count_sigma")),
        )

    def describe(self) -> str:
        """One human sentence stating the guarantee, for logs, the CLI and the report."""
        plural = "s" if self.num_private != 1 else ""
        if self.num_private_is_bound:
            unit_n = f"N <= {self.num_private} private {self.unit}{plural} (a public bound)"
        else:
            unit_n = f"N = {self.num_private} private {self.unit}{plural}"
        if not self.private:
            counts = " nor in the class counts" if self.class_count_sigma is not None else ""
            return (
                f"NOT differentially private: no noise (sigma = 0) in {self.iterations} iteration(s){counts} over "
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
        cc = self.class_count_sigma
        counts = "" if cc is None else (
            f" and one noisy count per class (the class sizes) with noise sigma_c = {cc:.4g}, "
            f"{100 * count_share(self.sigma, self.iterations, cc):.3g}% of the budget's "
            + ("rho" if self.noise == "discrete" else "mu^2")
        )
        if self.noise == "discrete":
            if cc is None:
                rho = rho_discrete(self.sigma, self.iterations, unit=self.unit, scale=self.grid)
            else:
                rho = composed_rho(self.sigma, self.iterations, cc, grid=self.grid or 1)
            grid = f"on the vote grid 1/{self.grid}, " if self.grid != 1 else ""
            together = " together" if cc is not None else ""
            return head + (
                f"with exact discrete Gaussian noise sigma = {self.sigma:.4g}{counts} ({grid}{rho:.4g}-zCDP"
                f"{together}, the bound proven for it by Canonne, Kamath & Steinke 2020)."
            )
        if cc is None:
            return head + f"with Gaussian noise sigma = {self.sigma:.4g} (exactly {self.mu:.4g}-GDP)."
        return head + f"with Gaussian noise sigma = {self.sigma:.4g}{counts}; together exactly {self.mu:.4g}-GDP."


def resolve_noise(noise: Any, grid: Any, unit: str) -> tuple[str, int | None]:
    """The noise kind and the integer vote grid a budget uses.

    ``grid`` applies to the discrete sampler only; None means 1 at record level (votes are already
    integers) and :data:`spti.privacy.discrete.DEFAULT_USER_SCALE` at user level (1/k is exact for users
    with up to 10 rows).
    """
    _check_noise(noise, grid)
    if noise == "gaussian":
        return "gaussian", None
    if grid is None:
        return "discrete", (1 if validate_unit(unit) == "record" else DEFAULT_USER_SCALE)
    return "discrete", validate_scale(grid)


def _check_noise(noise: Any, grid: Any) -> None:
    """The noise kind is one spti has, and a vote grid is given only with the discrete sampler."""
    if noise not in NOISE_KINDS:
        raise BudgetError(f"noise = {noise!r} is not a kind of noise; use one of {', '.join(NOISE_KINDS)}")
    if noise == "gaussian" and grid is not None:
        raise BudgetError("grid (the integer vote grid) applies only to noise = 'discrete'")


@dataclass(frozen=True)
class _Setting:
    """What :meth:`PrivacyBudget.from_epsilon` and :meth:`~PrivacyBudget.from_sigma` share: the validated
    T, N, unit, noise kind and grid, and δ (the default 1/(N ln N) unless given)."""

    iterations: int
    num_private: int
    unit: str
    noise: str
    grid: int | None
    delta: float
    delta_is_default: bool

    @classmethod
    def of(cls, iterations: Any, num_private: Any, delta: Any, unit: Any, noise: Any, grid: Any) -> _Setting:
        t = validate_iterations(iterations)
        n = validate_num_private(num_private)
        u = validate_unit(unit)
        kind, g = resolve_noise(noise, grid, u)
        if delta is None:
            return cls(t, n, u, kind, g, default_delta(n), True)
        return cls(t, n, u, kind, g, validate_delta(delta, n, u), False)


def _epsilon_of(sigma: float, iterations: int, delta: float, unit: str, noise: str, grid: int | None,
                class_count_sigma: float | None = None) -> float:
    """ε of T histograms at σ, δ (and of the class counts at σ_c when given, composed with them) with the
    accountant proven for the noise kind."""
    if class_count_sigma is not None:
        return composed_epsilon(sigma, iterations, class_count_sigma, delta, noise=noise, grid=grid)
    if noise == "discrete":
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
