"""DP class sizes of a labelled run: the budget split and the allocation of the population to classes.

A class-conditional run (issue 12) gives each class its own synthetic population. How large each one is
must not come from the exact private class sizes: PE's reference implementation takes them from the private
data and treats them as public, which leaks them. spti offers three choices (``privacy.class_sizes``):

* ``"dp"`` (default): one noisy count per class, released once, composed with the PE histograms.
  The count of class c is the sum of the *vote weights* of the private rows labelled c — the same weights
  PE votes with (:func:`spti.pe.histogram.vote_weights`): each record (or user, at ``unit: user``) holds
  total weight 1 spread over its rows, so removing one changes the count vector by a non-negative vector of
  L1 norm 1, hence L2 sensitivity <= 1, however a user's rows are spread over classes. The noise is added
  by :func:`spti.pe.histogram.release_histogram` (the one noise function) with ``iteration=0``: PE's
  iteration 0 (the initial population) releases no histogram, so the class counts have a noise stream of
  their own, also in the insecure test mode.
* ``"uniform"`` / ``"prior"``: a public prior (equal shares, or the user's ``privacy.class_prior``
  proportions); no private information, no budget. Recorded in the ledger as such.

The budget split (Gaussian DP, Dong, Roth & Su 2022). A run that may spend (ε, δ) is μ-GDP with
μ = :func:`~spti.privacy.accountant.mu_for_epsilon` (ε, δ). The counts are one Gaussian mechanism of
sensitivity 1 with noise σ_c (μ_c = 1/σ_c), the T histograms are √T/σ-GDP, and GDP composes exactly:
μ² = μ_c² + T/σ². The counts get the share ``s`` of μ² (``privacy.class_count_share``, default 5 %):
μ_c² = s·μ², T/σ² = (1 − s)·μ². Both σ are then nudged up together until the composed ε is <= the ε asked
(as :func:`~spti.privacy.accountant.sigma_from_epsilon` does for one σ), so rounding never spends more.
With the exact discrete Gaussian (``privacy.noise: discrete``) the same split is made in zCDP, where
ρ = μ²/2 for a Gaussian: ρ_c = s·ρ and ρ_hist = (1 − s)·ρ, with ρ = :func:`~spti.privacy.zcdp.rho_for_epsilon`.
Why 5 % by default: each class count is off by about σ_c = 1/(√s·μ) records (or users), e.g. σ_c ≈ 19 at
ε = 1, δ = 1e-6 (μ ≈ 0.237), small next to classes of a few hundred private records, while the histograms
keep √0.95 ≈ 97.5 % of their μ (σ = 13.7 instead of 13.4 at T = 10).

With ``privacy.sigma`` given instead of ε the histograms keep that σ and the counts get
σ_c = σ·√((1 − s)/(s·T)), i.e. μ_c² = s/(1 − s)·T/σ²: the counts take the same share s of the (now
larger) total μ², so the run spends a little more ε than an unlabelled run with the same σ (``spti privacy
--sigma ... --labelled`` prints it).

The allocation (:func:`allocate_sizes`) is post-processing of the released counts: clip at 0, every class
keeps at least one member (why: the label set is public and a downstream classifier needs every class; a
class named in ``classes`` without private records must not visibly vanish; it costs at most K − 1 members
taken from the others), the remaining ``population − K`` members go to classes in proportion to the clipped
counts by the largest-remainder method, ties broken by class index (deterministic: a resumed run gets the
same sizes from the same saved counts).

Pure numpy/scipy (imported by ``spti privacy``, which must start fast).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spti.errors import BudgetError, ConfigError
from spti.privacy.accountant import (
    _real,
    epsilon_for_delta,
    mu_for_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_sigma,
)

__all__ = [
    "CLASS_COUNTS_FILE",
    "CLASS_COUNT_MECHANISM",
    "LABEL_SET_ASSUMPTION",
    "allocate_sizes",
    "class_count_sigma_for_sigma",
    "class_vote_counts",
    "composed_epsilon",
    "composed_mu",
    "composed_rho",
    "count_share",
    "prior_sizes",
    "split_for_epsilon",
    "uniform_sizes",
    "validate_share",
]

#: Where a run keeps its released (noisy) class counts, relative to the run folder: written once, before
#: use, reused on resume, never redrawn. Never the exact counts.
CLASS_COUNTS_FILE = "checkpoints/class_counts.npz"

#: The ledger's name for the class-count mechanism.
CLASS_COUNT_MECHANISM = "dp_class_counts"

#: The trust assumption every labelled run records: which classes exist is not protected.
LABEL_SET_ASSUMPTION = (
    "the set of class names (labels) is public: it is taken as given (the sub-folder names or label column "
    "values, and the classes named in the config) and published with the release; only the class sizes are "
    "protected. A class name that is itself private information is not protected by the guarantee"
)

_NUDGE = 1.0 + 1e-10
_NUDGE_STEPS = 200


# ---------------------------------------------------------------------------------------------------------
# The budget split.
# ---------------------------------------------------------------------------------------------------------


def validate_share(share: Any) -> float:
    """Return the class counts' share of μ² (``privacy.class_count_share``) as a float in (0, 1)."""
    x = _real(share, "class_count_share")
    if not (0.0 < x < 1.0):
        raise BudgetError(
            f"class_count_share = {x:g} must be strictly between 0 and 1: the share of the privacy budget "
            "(mu^2) spent on the noisy class counts (default 0.05)"
        )
    return x


def composed_mu(sigma: float, iterations: int, class_count_sigma: float | None) -> float:
    """μ of T histograms with noise σ and (when given) one class-count release with noise σ_c:
    √(T/σ² + 1/σ_c²) (exact GDP composition, all of sensitivity 1)."""
    s = validate_sigma(sigma)
    t = validate_iterations(iterations)
    mu2 = t / (s * s)
    if class_count_sigma is not None:
        c = validate_sigma(class_count_sigma)
        mu2 += 1.0 / (c * c)
    return math.sqrt(mu2)


def composed_rho(sigma: float, iterations: int, class_count_sigma: float | None, *, grid: int = 1) -> float:
    """zCDP ρ of T exact discrete Gaussian histograms and one class-count release on the vote grid ``grid``,
    each with the sampler's exact (rounded-up) σ² (:func:`spti.privacy.discrete.exact_sigma`); ρ adds up."""
    from spti.privacy.discrete import exact_sigma

    t = validate_iterations(iterations)
    rho = t * exact_sigma(sigma, grid).rho()
    if class_count_sigma is not None:
        rho += exact_sigma(class_count_sigma, grid).rho()
    return rho


def composed_epsilon(
    sigma: float,
    iterations: int,
    class_count_sigma: float | None,
    delta: float,
    *,
    noise: str = "gaussian",
    grid: int | None = None,
) -> float:
    """ε at δ of the T histograms composed with the class counts, with the accountant proven for the noise:
    exact GDP for the Gaussian, the zCDP bound for the discrete Gaussian (as the ledger composes them)."""
    d = validate_delta(delta)
    if noise == "discrete":
        from spti.privacy.zcdp import epsilon_for_rho

        return epsilon_for_rho(composed_rho(sigma, iterations, class_count_sigma, grid=grid or 1), d)
    return epsilon_for_delta(d, composed_mu(sigma, iterations, class_count_sigma))


def split_for_epsilon(
    epsilon: float,
    delta: float,
    iterations: int,
    share: float,
    *,
    noise: str = "gaussian",
    grid: int | None = None,
) -> tuple[float, float]:
    """(σ, σ_c): the histograms' and the class counts' noise for a run that spends (ε, δ) in all, the counts
    taking the share ``share`` of μ² (of ρ for the discrete Gaussian; see the module docstring).

    Rounded conservatively: both are nudged up by the same factor until :func:`composed_epsilon` <= ε, so
    the split is exact to ~1e-10 and never spends more than asked.
    """
    e = validate_epsilon(epsilon)
    d = validate_delta(delta)
    t = validate_iterations(iterations)
    s = validate_share(share)
    if noise == "discrete":
        from spti.privacy.zcdp import rho_for_epsilon

        rho = rho_for_epsilon(e, d)
        sigma = math.sqrt(t / (2.0 * (1.0 - s) * rho))
        sigma_c = math.sqrt(1.0 / (2.0 * s * rho))
    else:
        mu = mu_for_epsilon(e, d)
        sigma = math.sqrt(t) / (math.sqrt(1.0 - s) * mu)
        sigma_c = 1.0 / (math.sqrt(s) * mu)
    sigma, sigma_c = sigma * (1.0 + 1e-12), sigma_c * (1.0 + 1e-12)
    for _ in range(_NUDGE_STEPS):
        if composed_epsilon(sigma, t, sigma_c, d, noise=noise, grid=grid) <= e:
            return sigma, sigma_c
        sigma, sigma_c = sigma * _NUDGE, sigma_c * _NUDGE
    raise BudgetError(  # pragma: no cover - the roots are accurate to ~1e-15
        f"could not split epsilon = {e:g}, delta = {d:g}, T = {t} between the histograms and the class counts"
    )


def class_count_sigma_for_sigma(sigma: float, iterations: int, share: float) -> float:
    """σ_c when the histograms' σ is given (``privacy.sigma``): μ_c² = s/(1 − s)·T/σ², so the counts are the
    share s of the composed μ², i.e. σ_c = σ·√((1 − s)/(s·T))."""
    sg = validate_sigma(sigma)
    t = validate_iterations(iterations)
    s = validate_share(share)
    return sg * math.sqrt((1.0 - s) / (s * t))


def count_share(sigma: float, iterations: int, class_count_sigma: float) -> float:
    """The share of μ² the class counts actually take: (1/σ_c²) / (T/σ² + 1/σ_c²) (for the CLI and the
    budget's description; for the discrete Gaussian it ignores the sampler's tiny rounding of σ²)."""
    c = validate_sigma(class_count_sigma)
    return (1.0 / (c * c)) / composed_mu(sigma, iterations, c) ** 2


# ---------------------------------------------------------------------------------------------------------
# The counts (private) and the allocation (post-processing of the released counts).
# ---------------------------------------------------------------------------------------------------------


def class_vote_counts(index: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """The PRIVATE per-class sums of vote weight: ``counts[c] = Σ_{rows i of class c} weights[i]`` (float64).

    ``weights`` are PE's vote weights (each record or user's rows sum to 1, or to the grid for the discrete
    sampler), so the vector has L2 sensitivity 1 (grid) under add/remove-one. Never store or log the result:
    it goes only to :func:`spti.pe.histogram.release_histogram`.
    """
    idx = np.asarray(index)
    w = np.asarray(weights, dtype=np.float64)
    k = _num_classes(num_classes)
    if idx.ndim != 1 or w.ndim != 1 or idx.shape[0] != w.shape[0]:
        raise ConfigError(f"labels ({idx.shape}) and vote weights ({w.shape}) must be 1-D of the same length")
    if idx.size and (idx.dtype.kind not in "iu" or int(idx.min()) < 0 or int(idx.max()) >= k):
        raise ConfigError(f"label indices must be integers in [0, {k}) (one per private row)")
    return np.bincount(idx.astype(np.int64), weights=w, minlength=k).astype(np.float64)


def _num_classes(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"the number of classes must be an integer >= 1, got {k!r}")
    return int(k)


def _population(population: Any, k: int) -> int:
    if isinstance(population, bool) or not isinstance(population, numbers.Integral) or population < 1:
        raise ConfigError(f"the population must be an integer >= 1, got {population!r}")
    if population < k:
        raise ConfigError(
            f"pe.population = {int(population)} is smaller than the number of classes ({k}); every class needs "
            "at least one synthetic caption: raise pe.population"
        )
    return int(population)


def allocate_sizes(counts: Sequence[float] | np.ndarray, population: int) -> np.ndarray:
    """Population size per class (int64, summing to ``population``) from released (noisy) counts or public
    weights: post-processing, no budget.

    Every class gets 1 (see the module docstring for why), and the other ``population − K`` go in proportion
    to ``max(count, 0)`` by the largest-remainder (Hamilton) method; remainders tied exactly go to the lower
    class index. All counts <= 0: the rest is shared equally (the same rule with equal weights). Raises
    :class:`~spti.errors.ConfigError` when ``population`` < K (the message states only public numbers).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ConfigError("class counts must be a non-empty 1-D vector")
    if not np.all(np.isfinite(c)):
        raise ConfigError("class counts must be finite numbers")
    k = c.size
    p = _population(population, k)
    w = np.clip(c, 0.0, None)
    total = float(w.sum())
    if total <= 0.0:
        w, total = np.ones(k), float(k)
    rest = p - k
    quota = w / total * rest
    base = np.floor(quota).astype(np.int64)
    np.minimum(base, rest, out=base)  # float rounding can never give one class more than the rest
    left = rest - int(base.sum())
    if left < 0:  # pragma: no cover - floor(q_i) sums to at most floor(sum q_i) = rest
        raise ConfigError("internal error: the allocation exceeded the population")
    remainder = quota - base
    order = np.lexsort((np.arange(k), -remainder))  # largest remainder first, then the lower class index
    sizes = base + 1
    sizes[order[:left]] += 1
    return sizes.astype(np.int64)


def uniform_sizes(num_classes: int, population: int) -> np.ndarray:
    """Equal class sizes (a public prior): ``population // K`` each, the rest to the lowest class indices."""
    return allocate_sizes(np.ones(_num_classes(num_classes)), population)


def prior_sizes(names: Sequence[str], prior: Mapping[str, float], population: int) -> np.ndarray:
    """Class sizes in public proportions ``prior`` (label -> weight; ``privacy.class_prior``), at least one
    each; classes the prior does not name get weight 0 (so one member).

    Labels named in the prior that are not classes of the run raise :class:`~spti.errors.ConfigError` naming
    those labels only (they come from the user's config; the message says nothing about the private data).
    """
    if not isinstance(prior, Mapping) or not prior:
        raise ConfigError("privacy.class_prior must be a non-empty mapping label -> weight")
    names = [str(n) for n in names]
    unknown = sorted(str(k) for k in prior if str(k) not in set(names))
    if unknown:
        raise ConfigError(
            "privacy.class_prior names label(s) that are not classes of this run: " + ", ".join(map(repr, unknown))
            + ". Use the class names exactly as the labels are spelled (quote numeric labels)"
        )
    weights = []
    for n in names:
        v = prior.get(n, 0.0)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v < 0:
            raise ConfigError(f"privacy.class_prior[{n!r}] = {v!r} must be a finite number >= 0")
        weights.append(float(v))
    if sum(weights) <= 0:
        raise ConfigError("privacy.class_prior: the weights must have a positive sum")
    return allocate_sizes(np.asarray(weights), population)
