"""An empirical lower bound on ε: a black-box audit of the noisy vote histogram a run releases.

The accountant (:mod:`spti.privacy`) *proves* an upper bound on ε, but only for the mechanism it assumes:
every private record (or user) moves the vote vector by at most 1 in L2, and every bin gets N(0, σ²) noise
that nobody can predict. A bug in the weights, the nearest-neighbour vote, the thresholding or the noise
sampler breaks that assumption silently. This module measures instead of proving, on the code a run
actually uses (the standard black-box audit of a DP implementation: Jagielski, Ullman & Oprea, "Auditing
Differentially Private Machine Learning: How Private is Private SGD?", NeurIPS 2020; Nasr, Song,
Thakurta, Papernot & Carlini, "Adversary Instantiation: Lower Bounds for Differentially Private Machine
Learning", IEEE S&P 2021):

1. Neighbouring datasets: D = the private features, D' = D ∪ {canary} (add/remove-one adjacency; at user
   level the canary is one new user with several rows, whose weights the real ``contribution_weights``
   must make sum to 1). The default canary ("auto") is a copy of the candidate that D votes for least,
   so its whole weight lands on one bin that holds (almost) no other votes.
2. The clean histograms of D and D' are computed ONCE with the real ``vote_histogram`` (same embedder
   space, weights, nn backend, chunking, normalisation). Their difference is reported (L1, L2, bins that
   changed): a sensitivity bug already shows here, before any noise is drawn.
3. The release (clean counts + the real noise sampler, then the configured thresholding) is drawn
   ``trials`` times for D and for D'. The statistic is the released value of the bin(s) that changed,
   projected on the clean difference (for one bin: its noisy count) — the most powerful one-dimensional
   test against the Gaussian mechanism. Because only the canary's bin(s) differ, re-running the vote per
   trial is unnecessary: the noise is the only randomness.
4. For a threshold test "say D' when statistic ≥ τ", FPR = P[stat ≥ τ | D] and FNR = P[stat < τ | D'].
   (ε, δ)-DP forces, for the event S = {stat ≥ τ} and its complement,

       1 − FNR ≤ e^ε FPR + δ     and     1 − FPR ≤ e^ε FNR + δ,

   so ε ≥ max( ln((1 − δ − FNR)/FPR), ln((1 − δ − FPR)/FNR) ). With Clopper–Pearson upper confidence
   bounds on FPR and FNR (each at level α/2; a union bound makes the pair hold with probability ≥ 1 − α),
   the right-hand side is an ε lower bound that holds with confidence 1 − α.
5. Choosing τ honestly: the first quarter of each set of trials (``selection_fraction``) is used only
   to choose τ (the one with the best, conservatively computed, bound on that part); the bound is
   evaluated once, at that τ, on the other trials. They are independent of the choice, so no correction
   for the selection is needed.

What the bound means. A correct Gaussian mechanism with σ calibrated to ε gives a bound well below ε (an
ideal test needs ~1/FPR trials to see the tail where the privacy loss is ε; with 10⁵ trials and δ = 1e-5
the bound reaches about half of ε). The audit cannot prove privacy; it can prove a *violation*: a bound
above the claim means that, with confidence 1 − α, the implementation is less private than it says. The
claim compared is the ε of ONE histogram, ε(σ, T = 1, δ) from the accountant, because one release is what
is audited; the run's T-fold ε is reported beside it for context.

Scope, stated honestly: the audit covers the histogram mechanism given the candidates (vote → noise →
threshold), not the rest of the pipeline; with secure noise it treats the sampler as a black box
(floating-point attacks on the sampler, see :mod:`spti.privacy.noise`, are out of reach of a test of this
size); and the canary is worst case for the vote (all its weight on one bin) but its bin is chosen by a
heuristic (fewest votes), which is optimal only up to the thresholding (for τ above the threshold H the
base count does not matter for Gaussian noise).

Privacy of the audit's own output: the audit's numbers describe the mechanism, but the canary's bin and
the clean count there are functions of the private data. :meth:`AuditResult.summary` holds only what is
safe to publish (bounds, rates, trials, the sensitivity check); the full record, with the bin, goes to
``private/audit.json`` in the run folder (:func:`audit_run`), never to release/.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.log import logger
from spti.pe.histogram import contribution_weights, normalize_rows, release_histogram, vote_histogram
from spti.pe.selection import threshold_counts
from spti.privacy import NoiseSource, epsilon_from_sigma

__all__ = [
    "AUDIT_FILE",
    "AUDIT_SCHEMA",
    "AuditResult",
    "HistogramMechanism",
    "audit_histogram_mechanism",
    "audit_run",
    "clopper_pearson",
    "epsilon_lower_bound",
    "gaussian_noise_fn",
    "per_release_epsilon",
    "read_audit",
]

#: Where :func:`audit_run` writes its result, relative to the run folder. In private/ because the
#: canary's bin (and the clean count there) are derived from private data; the report may show
#: ``summary`` only.
AUDIT_FILE = "private/audit.json"
AUDIT_SCHEMA = "spti.audit"
AUDIT_SCHEMA_VERSION = 1

#: Public seed of the fallback candidate set (random unit vectors) when a run's cache cannot give the
#: candidates' features back. Public randomness: it depends on nothing private.
SYNTHETIC_CANDIDATES_SEED = 20240917

# Elements drawn per noise call (rows × bins); ~16 MB of float64, so a call stays cache- and memory-light.
_DRAW_ELEMENTS = 1 << 21
# At most this many thresholds are tried on the selection part (quantiles of the pooled statistic).
_MAX_THRESHOLDS = 4096
_ATOL = 1e-9
#: Share of the trials that only choose the test, and the Clopper–Pearson level used to choose it. Why
#: these: choosing τ by the plain bound on half the trials often picks a far-tail τ backed by a handful
#: of lucky events, which then fails on the other half. Measured with 10⁵ trials, δ = 1e-5, 100 seeds:
#: σ calibrated to ε = 1 → bound 0.43–0.73 (median 0.52); σ halved (true ε ≈ 2.15) → 1.08–1.57
#: (median 1.29), i.e. always above the claim; with a half split and the plain level the halved case fell
#: to 0.32 on some seeds.
SELECTION_FRACTION = 0.25
SELECTION_ALPHA = 1e-3

VoteFn = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
"""``vote_fn(private_features, candidate_features, weights) -> clean counts (M,)``."""
WeightsFn = Callable[[Sequence | None, int], np.ndarray]
"""``weights_fn(owners, n_rows) -> vote weight of each row``."""
NoiseFn = Callable[[np.ndarray, int], np.ndarray]
"""``noise_fn(counts, draw) -> noisy counts`` of the same shape. ``counts`` is (B, M): B copies of one
clean histogram (a read-only view), each row an independent release; ``draw`` is a distinct integer per
call (an insecure seeded source uses it as its iteration, a secure one ignores it)."""


# ====================================================================== the mechanism under test
def gaussian_noise_fn(sigma: float, noise: NoiseSource | None = None) -> NoiseFn:
    """The engine's noisy release, ``counts + noise.gaussian(counts.shape, σ, iteration)``, as a NoiseFn.

    ``noise`` defaults to a secure :class:`~spti.privacy.NoiseSource` (OS entropy), which is what a real
    audit must use; tests pass ``NoiseSource(insecure_seed=...)`` for determinism.
    """
    source = noise if noise is not None else NoiseSource()
    s = float(sigma)

    def add_noise(counts: np.ndarray, draw: int) -> np.ndarray:  # the engine's own release function
        return release_histogram(counts, s, noise=source, iteration=draw)[0]

    add_noise.description = f"gaussian(sigma={s:.6g}, {'secure' if source.secure else 'INSECURE seeded'})"  # type: ignore[attr-defined]
    return add_noise


@dataclass
class HistogramMechanism:
    """One PE histogram release, built from spti's own functions so that a bug in them shows in the audit.

    ``vote_fn`` (default: :func:`spti.pe.histogram.vote_histogram` with this object's ``nn_backend``,
    ``chunk_size`` and ``normalize``), ``weights_fn`` (default: :func:`~spti.pe.histogram.contribution_weights`),
    ``noise_fn`` (see :data:`NoiseFn`; :func:`gaussian_noise_fn`, or a discrete sampler's adapter) and
    ``threshold`` (None: audit the noisy histogram as checkpointed, i.e. the DP release itself; H: audit
    ``threshold_counts(noisy, H)``, what selection sees). ``sensitivity`` is the L2 bound per record or
    user that the accountant assumes, in the units of the counts (1; an integer vote grid of resolution s
    — the discrete sampler's — has s). Each is a plain attribute, so a test plants a bug with
    :func:`dataclasses.replace` and a wrapper, never by editing spti.

    The exact discrete sampler plugs in the same way (``weights_fn`` = its integer grid weights,
    ``noise_fn`` = its noisy release, ``sensitivity`` = the grid's scale); prefer ``full_histogram=False``
    there, its exact integer sampler being much slower per draw than numpy's normal one.
    """

    noise_fn: NoiseFn
    threshold: float | None = None
    nn_backend: str = "auto"
    chunk_size: int = 4096
    normalize: bool = True
    vote_fn: VoteFn | None = None
    weights_fn: WeightsFn = contribution_weights
    sigma: float | None = None  # for the record only: the σ the noise_fn was built with
    noise_description: str = ""
    sensitivity: float = 1.0  # the L2 bound the accountant assumes, in count units (a vote grid: its scale)

    @classmethod
    def gaussian(cls, sigma: float, *, noise: NoiseSource | None = None, threshold: float | None = None,
                 nn_backend: str = "auto", chunk_size: int = 4096, normalize: bool = True) -> HistogramMechanism:
        """The mechanism ``spti run`` uses: real vote, real weights, NoiseSource Gaussian noise of std σ."""
        fn = gaussian_noise_fn(sigma, noise)
        return cls(noise_fn=fn, threshold=threshold, nn_backend=nn_backend, chunk_size=chunk_size,
                   normalize=normalize, sigma=float(sigma), noise_description=fn.description)  # type: ignore[attr-defined]

    @classmethod
    def discrete(cls, sigma: float, grid: int, *, noise: NoiseSource | None = None, threshold: float | None = None,
                 nn_backend: str = "auto", chunk_size: int = 4096, normalize: bool = True) -> HistogramMechanism:
        """The mechanism of a run with ``privacy.noise: discrete``: integer votes on the grid ``grid``
        (:func:`~spti.pe.histogram.vote_weights`), the exact discrete Gaussian of the engine's own
        :func:`~spti.pe.histogram.release_histogram`. Sensitivity ``grid`` (grid units). The release is
        kept in grid units (the engine divides by ``grid``; multiplying back is a bijection, so the test
        statistic and the bound are unchanged, and the clean and released counts share one unit)."""
        from spti.pe.histogram import vote_weights

        source = noise if noise is not None else NoiseSource()
        s, g = float(sigma), int(grid)

        def add_noise(counts: np.ndarray, draw: int) -> np.ndarray:
            return release_histogram(counts, s, noise=source, iteration=draw, kind="discrete", grid=g)[0] * g

        def weights(owners: Sequence | None, n_rows: int) -> np.ndarray:
            return vote_weights(owners, n_rows, noise="discrete", grid=g)

        desc = f"discrete gaussian(sigma={s:.6g}, grid={g}, {'secure' if source.secure else 'INSECURE seeded'})"
        add_noise.description = desc  # type: ignore[attr-defined]
        return cls(noise_fn=add_noise, threshold=None if threshold is None else threshold * g,
                   nn_backend=nn_backend, chunk_size=chunk_size, normalize=normalize, weights_fn=weights,
                   sigma=s, noise_description=desc, sensitivity=float(g))

    def weights(self, owners: Sequence | None, n_rows: int) -> np.ndarray:
        return np.asarray(self.weights_fn(owners, n_rows), dtype=np.float64)

    def clean_histogram(self, features: Any, candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The noise-free (PRIVATE) vote vector, through the real vote function unless replaced."""
        if self.vote_fn is not None:
            return np.asarray(self.vote_fn(features, candidates, weights), dtype=np.float64)
        return vote_histogram(features, candidates, weights=weights, chunk_size=self.chunk_size,
                              backend=self.nn_backend, normalize=self.normalize, show_progress=False)

    def release(self, counts: np.ndarray, draw: int) -> np.ndarray:
        """What one release outputs for each row of ``counts``: noise, then the thresholding if any."""
        noisy = np.asarray(self.noise_fn(counts, draw), dtype=np.float64)
        if noisy.shape != counts.shape:
            raise InputError(f"noise_fn returned shape {noisy.shape} for counts of shape {counts.shape}")
        return noisy if self.threshold is None else threshold_counts(noisy, self.threshold)

    def describe(self) -> dict[str, Any]:
        return {
            "noise": self.noise_description or getattr(self.noise_fn, "description", repr(self.noise_fn)),
            "sigma": self.sigma,
            "threshold": self.threshold,
            "nn_backend": self.nn_backend,
            "normalize": self.normalize,
            "vote_fn": "spti.pe.histogram.vote_histogram" if self.vote_fn is None else _qualname(self.vote_fn),
            "weights_fn": _qualname(self.weights_fn),
            "sensitivity": self.sensitivity,
        }


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


class _WithCanary:
    """D' = D followed by the canary rows, without copying D (which may be a memory-mapped 300k × 2048
    array). Supports what the vote reads: ``shape`` and contiguous row slices; ``np.asarray`` works too
    (it materialises)."""

    def __init__(self, base: Any, extra: np.ndarray) -> None:
        self.base = base
        self.extra = np.asarray(extra, dtype=np.float32)
        self.n_base = int(base.shape[0])
        self.shape = (self.n_base + self.extra.shape[0], int(base.shape[1]))
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            return np.asarray(self)[key]
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            return np.asarray(self)[key]
        parts = []
        if start < self.n_base:
            parts.append(np.asarray(self.base[start : min(stop, self.n_base)], dtype=np.float32))
        if stop > self.n_base:
            parts.append(self.extra[max(start - self.n_base, 0) : stop - self.n_base])
        if not parts:
            return np.zeros((0, self.shape[1]), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(self.base, dtype=np.float32), self.extra])
        return out if dtype is None else out.astype(dtype)


# ====================================================================== statistics
def clopper_pearson(k: Any, n: int, alpha: float, side: str = "two-sided") -> Any:
    """Exact (Clopper–Pearson) confidence bound(s) for a binomial proportion, k successes in n trials.

    ``side="upper"``: the one-sided upper bound at confidence 1 − α (1 when k = n);
    ``"lower"``: the one-sided lower bound (0 when k = 0); ``"two-sided"``: (lower, upper) each at α/2,
    the interval ``scipy.stats.binomtest(k, n).proportion_ci(1 − α, method="exact")`` returns.
    Vectorised over ``k``.
    """
    from scipy import stats

    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = int(n)
    kk = np.asarray(k, dtype=np.float64)
    if n < 1 or np.any(kk < 0) or np.any(kk > n):
        raise ValueError("need 0 <= k <= n and n >= 1")

    def upper(a: float) -> np.ndarray:
        with np.errstate(all="ignore"):
            u = stats.beta.ppf(1 - a, kk + 1, np.maximum(n - kk, 1))
        return np.where(kk >= n, 1.0, u)

    def lower(a: float) -> np.ndarray:
        with np.errstate(all="ignore"):
            lo = stats.beta.ppf(a, np.maximum(kk, 1), n - kk + 1)
        return np.where(kk <= 0, 0.0, lo)

    def scalar(x: np.ndarray) -> Any:
        return float(x) if np.ndim(x) == 0 else x

    if side == "upper":
        return scalar(upper(alpha))
    if side == "lower":
        return scalar(lower(alpha))
    if side == "two-sided":
        return scalar(lower(alpha / 2)), scalar(upper(alpha / 2))
    raise ValueError(f"side must be 'upper', 'lower' or 'two-sided', got {side!r}")


def _eps_from_rates(fpr: Any, fnr: Any, delta: float) -> np.ndarray:
    """max(ln((1−δ−FNR)/FPR), ln((1−δ−FPR)/FNR)); −inf where a numerator is ≤ 0, +inf over a 0 rate."""
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1 - delta - fnr > 0, np.log(np.maximum(1 - delta - fnr, 1e-300)) - np.log(fpr), -np.inf)
        b = np.where(1 - delta - fpr > 0, np.log(np.maximum(1 - delta - fpr, 1e-300)) - np.log(fnr), -np.inf)
    return np.maximum(a, b)


def _rates(s0_sorted: np.ndarray, s1_sorted: np.ndarray, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of false positives (D's statistic ≥ τ) and false negatives (D''s statistic < τ)."""
    k_fp = s0_sorted.size - np.searchsorted(s0_sorted, taus, side="left")
    k_fn = np.searchsorted(s1_sorted, taus, side="left")
    return k_fp, k_fn


def epsilon_lower_bound(scores_d: np.ndarray, scores_d_prime: np.ndarray, *, delta: float, alpha: float = 0.05,
                        selection_fraction: float = SELECTION_FRACTION,
                        selection_alpha: float = SELECTION_ALPHA) -> dict[str, Any]:
    """The ε lower bound from samples of a statistic under D and under D' (module docstring, steps 4–5).

    The first ``selection_fraction`` of each sample chooses the test "statistic ≥ τ": the τ whose bound,
    computed on that part with Clopper–Pearson at the conservative level ``selection_alpha``, is largest.
    The rest evaluates that one test with Clopper–Pearson upper bounds on FPR and FNR at α/2 each.
    Returns the bound (clipped at 0), the uncorrected point estimate on the evaluation part, τ, the
    empirical and upper-bounded rates and the sample sizes.
    """
    s0 = np.asarray(scores_d, dtype=np.float64).ravel()
    s1 = np.asarray(scores_d_prime, dtype=np.float64).ravel()
    if s0.size != s1.size or s0.size < 4:
        raise ValueError("need the same number (>= 4) of statistics under D and under D'")
    if not (0 < selection_fraction < 1):
        raise ValueError("selection_fraction must be in (0, 1)")
    if not (0 <= delta < 1):
        raise ValueError("delta must be in [0, 1)")
    n_sel = max(1, min(s0.size - 1, int(round(selection_fraction * s0.size))))
    a0, a1 = np.sort(s0[:n_sel]), np.sort(s1[:n_sel])
    e0, e1 = np.sort(s0[n_sel:]), np.sort(s1[n_sel:])
    n_eval = e0.size
    # candidate thresholds: the observed values of the selection part (at most _MAX_THRESHOLDS quantiles)
    pooled = np.concatenate([a0, a1])
    if np.unique(pooled).size > _MAX_THRESHOLDS:
        pooled = np.quantile(pooled, np.linspace(0, 1, _MAX_THRESHOLDS), method="inverted_cdf")
    taus = np.unique(pooled)
    k_fp, k_fn = _rates(a0, a1, taus)
    sel = _eps_from_rates(clopper_pearson(k_fp, n_sel, selection_alpha, "upper"),
                          clopper_pearson(k_fn, n_sel, selection_alpha, "upper"), delta)
    best = int(np.argmax(sel))
    tau = float(taus[best])
    kf, kn = _rates(e0, e1, np.array([tau]))
    kf, kn = int(kf[0]), int(kn[0])
    fpr_ub = clopper_pearson(kf, n_eval, alpha / 2, "upper")
    fnr_ub = clopper_pearson(kn, n_eval, alpha / 2, "upper")
    lb = float(_eps_from_rates(fpr_ub, fnr_ub, delta))
    point = float(_eps_from_rates(kf / n_eval, kn / n_eval, delta))
    return {
        "epsilon_lower_bound": max(0.0, lb),
        "epsilon_estimate": max(0.0, point),
        "tau": tau,
        "fpr": kf / n_eval,
        "fnr": kn / n_eval,
        "fpr_upper": float(fpr_ub),
        "fnr_upper": float(fnr_ub),
        "selection_trials": n_sel,
        "evaluation_trials": n_eval,
    }


def per_release_epsilon(sigma: float, delta: float, *, noise: str = "gaussian", unit: str = "record",
                        grid: int | None = None) -> float:
    """ε of ONE histogram (T = 1) with noise σ at δ, from the accountant proven for the noise kind (exact
    GDP for the Gaussian; the discrete Gaussian's zCDP bound on the vote grid ``grid``); ∞ without noise."""
    if sigma is None or sigma <= 0:
        return math.inf
    if noise == "discrete":
        from spti.privacy.discrete import epsilon_discrete

        return epsilon_discrete(float(sigma), 1, float(delta), unit=unit, scale=1 if grid is None else int(grid))
    return epsilon_from_sigma(float(sigma), 1, float(delta))


# ====================================================================== the result
@dataclass
class AuditResult:
    """What an audit found. ``epsilon_lower_bound`` holds with confidence ``1 − alpha``; compare it with
    ``claimed_epsilon`` (the per-histogram ε); ``violation`` is True when the bound exceeds the claim."""

    epsilon_lower_bound: float
    epsilon_estimate: float
    claimed_epsilon: float | None
    delta: float
    alpha: float
    trials: int
    selection_trials: int
    evaluation_trials: int
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float
    test: dict[str, Any]
    canary: dict[str, Any]
    sensitivity: dict[str, Any]
    mechanism: dict[str, Any]
    seconds: float
    claimed_epsilon_run: float | None = None
    iterations: int | None = None
    candidates: dict[str, Any] = field(default_factory=dict)
    private: dict[str, Any] = field(default_factory=dict)  # canary bin, base count: derived from private data

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def violation(self) -> bool:
        """True when the data prove (at confidence 1 − α) that the release is less private than claimed."""
        return self.claimed_epsilon is not None and self.epsilon_lower_bound > self.claimed_epsilon

    def describe(self) -> str:
        """One sentence for the CLI, the log and the report."""
        claim = "no claim" if self.claimed_epsilon is None else (
            "claimed epsilon = inf (not private)" if math.isinf(self.claimed_epsilon)
            else f"claimed epsilon per histogram = {self.claimed_epsilon:.4g}")
        verdict = ("VIOLATION: the measured lower bound exceeds the claim" if self.violation
                   else "consistent with the claim (an audit can only find violations, not prove privacy)")
        sens = "" if self.sensitivity.get("ok", True) else (
            f"; SENSITIVITY CHECK FAILED: one {self.canary.get('unit', 'record')} changed the clean histogram by "
            f"L2 = {self.sensitivity.get('l2', float('nan')):.4g} > {self.sensitivity.get('bound', 1.0):g}")
        return (f"empirical epsilon lower bound = {self.epsilon_lower_bound:.3f} at {100 * self.confidence:.0f}% "
                f"confidence from {self.trials} trials per dataset (delta = {self.delta:.3g}); {claim}; "
                f"{verdict}{sens}")

    def summary(self) -> dict[str, Any]:
        """What is safe to publish (the report): numbers about the mechanism, nothing located in the data."""
        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon_estimate": self.epsilon_estimate,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_epsilon_run": self.claimed_epsilon_run,
            "iterations": self.iterations,
            "delta": self.delta,
            "confidence": self.confidence,
            "violation": self.violation,
            "trials": self.trials,
            "evaluation_trials": self.evaluation_trials,
            "fpr": self.fpr,
            "fnr": self.fnr,
            "fpr_upper": self.fpr_upper,
            "fnr_upper": self.fnr_upper,
            "test": {k: v for k, v in self.test.items() if k != "tau"},
            "canary": {k: v for k, v in self.canary.items() if k != "target_bin"},
            "sensitivity": dict(self.sensitivity),
            "mechanism": dict(self.mechanism),
            "candidates": {k: v for k, v in self.candidates.items()},
            "seconds": self.seconds,
            "describe": self.describe(),
            "method": ("black-box audit (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021): threshold test on the "
                       "canary bin's released count, Clopper-Pearson bounds on FPR/FNR, threshold chosen on a "
                       "separate part of the trials"),
        }

    def to_dict(self) -> dict[str, Any]:
        """The full record (with the private details), as written to ``private/audit.json``; JSON-safe
        (∞ is written as the string "inf")."""
        return _json_safe({
            "schema": AUDIT_SCHEMA, "schema_version": AUDIT_SCHEMA_VERSION, "summary": self.summary(),
            "private": {**self.private, "target_bin": self.canary.get("target_bin"), "tau": self.test.get("tau")},
        })


# ====================================================================== the audit
def audit_histogram_mechanism(
    private_features: Any,
    candidate_features: np.ndarray,
    *,
    mechanism: HistogramMechanism,
    owners: Sequence | None = None,
    trials: int = 100_000,
    canary: str | np.ndarray = "auto",
    canary_rows: int = 1,
    alpha: float = 0.05,
    delta: float = 0.0,
    claimed_epsilon: float | None = None,
    full_histogram: bool = True,
    selection_fraction: float = SELECTION_FRACTION,
) -> AuditResult:
    """Audit one histogram release of ``mechanism`` on the private set ``private_features`` (N, d; may be
    memory-mapped) voting for ``candidate_features`` (M, d, as the run passes them to the vote).

    ``owners``: who owns each private row (user-level runs), None for one row per record. ``canary``:
    "auto" (a copy of the candidate D votes for least, ``canary_rows`` times) or an array of canary rows
    (k, d). A canary with several rows is one new user and needs ``owners``. ``trials``: releases drawn
    for D and again for D'. ``full_histogram``: draw noise for every bin as the engine does (default), or
    only for the bins that differ (same statistic, M times less work; valid for any elementwise sampler).
    ``delta``/``claimed_epsilon``: the claim to compare with (the per-histogram ε; see
    :func:`per_release_epsilon`).
    """
    t0 = time.perf_counter()
    trials = int(trials)
    if trials < 8:
        raise InputError("an audit needs at least 8 trials per dataset (10^4 to 10^5 are typical)")
    if not (0 < alpha < 1):
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    cand = np.asarray(candidate_features, dtype=np.float32)
    n, m = int(private_features.shape[0]), int(cand.shape[0])
    if cand.ndim != 2 or m == 0:
        raise InputError("the audit needs a non-empty (M, d) candidate feature matrix")
    if private_features.shape[1] != cand.shape[1]:
        raise InputError(f"private features have dim {private_features.shape[1]} but candidates have {cand.shape[1]}")
    if owners is not None and len(owners) != n:
        raise InputError(f"owners has {len(owners)} entries for {n} private rows")

    # ------------------------------------------------------------ D: the real clean histogram
    w_d = mechanism.weights(owners, n)
    clean_d = mechanism.clean_histogram(private_features, cand, w_d)
    if clean_d.shape != (m,):
        raise InputError(f"the vote returned shape {clean_d.shape}, expected ({m},)")

    # ------------------------------------------------------------ the canary and D' = D ∪ {canary}
    if isinstance(canary, str):
        if canary != "auto":
            raise InputError(f"canary must be 'auto' or an array of feature rows, got {canary!r}")
        target = _auto_target(mechanism, clean_d, cand)
        rows = np.repeat(cand[target : target + 1], int(canary_rows), axis=0)
        how = ("auto: copies of the least-voted candidate whose copy votes for itself (all the canary's weight "
               "on one bin that holds the fewest other votes)")
    else:
        rows = np.atleast_2d(np.asarray(canary, dtype=np.float32))
        target = None
        how = "given by the caller"
    k = int(rows.shape[0])
    if k < 1 or rows.shape[1] != cand.shape[1]:
        raise InputError(f"canary rows must have shape (k >= 1, {cand.shape[1]})")
    if owners is None and k > 1:
        raise InputError("a canary of several rows is one user: pass owners (user-level runs)")
    owners_dp = None
    if owners is not None:
        taken = {str(o) for o in owners}
        cid = "spti-audit-canary"
        while cid in taken:
            cid += "_"
        owners_dp = [*owners, *([cid] * k)]
    w_dp = mechanism.weights(owners_dp, n + k)
    clean_dp = mechanism.clean_histogram(_WithCanary(private_features, rows), cand, w_dp)
    diff = clean_dp - clean_d
    changed = np.flatnonzero(np.abs(diff) > _ATOL)
    l1, l2 = float(np.abs(diff).sum()), float(np.linalg.norm(diff))
    bound = float(mechanism.sensitivity)
    sensitivity = {"l1": l1, "l2": l2, "changed_bins": int(changed.size), "bound": bound,
                   "ok": l2 <= bound * (1 + 1e-9), "canary_weight": float(np.sum(w_dp[n:]))}
    if not sensitivity["ok"]:
        logger.warning("audit: one canary changed the clean histogram by L2 = %.4g > %g (sensitivity bug)", l2, bound)
    intended = target
    if changed.size:
        bins, u = changed, diff[changed] / l2
        target = int(bins[np.argmax(np.abs(diff[bins]))])  # where the canary's vote actually landed
    else:  # nothing moved (e.g. a zero weight): test the intended bin, the bound will be ~0
        bins, u = np.array([target if target is not None else 0]), np.ones(1)
        target = int(bins[0])

    # ------------------------------------------------------------ draw the releases
    base_d = clean_d if full_histogram else clean_d[bins]
    base_dp = clean_dp if full_histogram else clean_dp[bins]
    cols = bins if full_histogram else np.arange(bins.size)
    s_d = _draw_statistics(mechanism, base_d, cols, u, trials, parity=0)
    s_dp = _draw_statistics(mechanism, base_dp, cols, u, trials, parity=1)
    base_stat = float(clean_d[bins] @ u)

    res = epsilon_lower_bound(s_d, s_dp, delta=delta, alpha=alpha, selection_fraction=selection_fraction)
    seconds = time.perf_counter() - t0
    result = AuditResult(
        epsilon_lower_bound=res["epsilon_lower_bound"],
        epsilon_estimate=res["epsilon_estimate"],
        claimed_epsilon=claimed_epsilon,
        delta=float(delta),
        alpha=float(alpha),
        trials=trials,
        selection_trials=res["selection_trials"],
        evaluation_trials=res["evaluation_trials"],
        fpr=res["fpr"],
        fnr=res["fnr"],
        fpr_upper=res["fpr_upper"],
        fnr_upper=res["fnr_upper"],
        test={
            "statistic": ("released value of the canary's bin" if bins.size == 1 else
                          f"released values of the {bins.size} changed bins projected on the clean difference"),
            "rule": "say D' (canary present) when statistic >= tau",
            "tau": res["tau"],
            "tau_minus_clean": res["tau"] - base_stat,
            "threshold_choice": f"best bound on the first {res['selection_trials']} trials, evaluated on the rest",
        },
        canary={"how": how, "rows": k, "weight": sensitivity["canary_weight"],
                "unit": "user" if owners is not None else "record", "target_bin": target,
                "landed_as_intended": intended is None or intended == target},
        sensitivity=sensitivity,
        mechanism={**mechanism.describe(), "full_histogram": bool(full_histogram), "bins": m},
        seconds=round(seconds, 3),
        private={"clean_count_d": base_stat, "private_rows": n},
    )
    logger.info("audit: %s (%.1f s)", result.describe(), seconds)
    return result


def _auto_target(mechanism: HistogramMechanism, clean_d: np.ndarray, cand: np.ndarray, tries: int = 64) -> int:
    """The least-voted candidate (ties: lowest index) on which a copy of itself lands when it votes.

    Why the check: the vote normalises private rows but not the candidates (lookahead means are not unit
    vectors), so a copy of candidate j may be nearest to another candidate. Voting one row against the
    candidates costs one (1 × M) product; the first of the ``tries`` least-voted candidates that keeps its
    copy wins (else the least-voted one: the canary then lands elsewhere, which the audit reports)."""
    order = np.argsort(clean_d, kind="stable")
    for j in order[:tries]:
        j = int(j)
        h = mechanism.clean_histogram(cand[j : j + 1], cand, np.ones(1))
        if h.shape == clean_d.shape and h[j] > 0:
            return j
    return int(order[0])


def _draw_statistics(mechanism: HistogramMechanism, base: np.ndarray, cols: np.ndarray, u: np.ndarray,
                     trials: int, *, parity: int) -> np.ndarray:
    """``trials`` releases of the clean histogram ``base``, reduced to the test statistic. D uses even
    draw numbers and D' odd ones, so a seeded (insecure) source gives the two datasets independent noise."""
    width = base.shape[0]
    batch = max(1, min(trials, _DRAW_ELEMENTS // max(width, 1)))
    out = np.empty(trials, dtype=np.float64)
    for i, start in enumerate(range(0, trials, batch)):
        b = min(batch, trials - start)
        counts = np.broadcast_to(base, (b, width))  # read-only: a noise_fn cannot corrupt the clean counts
        released = mechanism.release(counts, 2 * i + parity)
        out[start : start + b] = released[:, cols] @ u
    return out


# ====================================================================== a finished run
def audit_run(
    run_dir: str | Path,
    *,
    trials: int = 100_000,
    alpha: float = 0.05,
    iteration: int | None = None,
    canary: str | np.ndarray = "auto",
    canary_rows: int | None = None,
    full_histogram: bool = True,
    noise: NoiseSource | None = None,
    mechanism: HistogramMechanism | None = None,
    threshold: float | None | str = "config",
    write: bool = True,
) -> AuditResult:
    """Audit the histogram mechanism of a finished (or started) run: its private features (memory-mapped),
    its weights (user-level owners from ``private/ingest.jsonl`` or the private text file), its σ, δ,
    threshold, nn backend and normalisation, against the candidates of ``iteration`` (default: the last
    one with candidates on disk) embedded from the run's feature cache.

    If the cache cannot give every candidate's features back (e.g. text voting with lookahead, whose
    variations are not on disk), a synthetic candidate set of the same size is used: random unit vectors
    from a fixed public seed (:data:`SYNTHETIC_CANDIDATES_SEED`). The result's ``candidates`` says which.

    The mechanism is the run's, built from the budget it recorded: the engine's release function
    (:func:`spti.pe.histogram.release_histogram`) with the budget's σ and noise kind — the Gaussian
    (:meth:`HistogramMechanism.gaussian`) or, for ``privacy.noise: discrete``, the exact discrete Gaussian on
    the budget's integer vote grid (:meth:`HistogramMechanism.discrete`; its exact sampler is slower per draw,
    so ``full_histogram=False`` suits it) — drawing from ``noise`` (default: a secure :class:`NoiseSource`),
    with ``pe.nn_backend``/``chunk_size``/``normalize`` and ``threshold="config"`` (``pe.threshold``: what
    selection sees; None audits the noisy histogram itself). ``mechanism`` replaces it whole. The claim is
    the ε of one histogram by the accountant proven for the noise kind (:func:`per_release_epsilon`). Writes
    ``private/audit.json`` (:data:`AUDIT_FILE`) unless ``write=False``; nothing goes to release/.
    """
    from spti.data.io import atomic_write_json, read_json
    from spti.data.run import RunDir
    from spti.privacy import PrivacyBudget

    run = RunDir(run_dir)
    if not run.is_run():
        raise InputError(f"{run.path} is not an spti run folder (no config.yaml)")
    cfg = run.load_config()
    pe = cfg.pe

    # ------------------------------------------------------------ the claim
    budget_dict = None
    if run.privacy_path.is_file():
        budget_dict = read_json(run.privacy_path).get("budget")
    if budget_dict is None:
        budget_dict = run.manifest().get("privacy")
    if budget_dict is None:
        raise InputError(f"{run.path}: no privacy budget recorded yet; run the evolve stage first")
    budget = PrivacyBudget.from_dict(budget_dict)

    # ------------------------------------------------------------ private features and owners
    prefix = "text_features-" if pe.voting == "text" else "image_features-"
    files = sorted(p for p in run.private.glob(f"{prefix}*.npy") if not p.name.endswith(".tmp.npy"))
    if not files:
        raise InputError(f"{run.path}: no private {pe.voting} features in private/; run the pipeline first")
    if len(files) > 1:
        ns = "text-" if pe.voting == "text" else "render-features-"
        with_cache = [p for p in files if (run.cache / (ns + p.stem[len(prefix):])).is_dir()]
        if len(with_cache) != 1:
            raise InputError(f"{run.path}: {len(files)} private feature files in private/; cannot tell which the run used")
        files = with_cache
    feats = np.load(files[0], mmap_mode="r")
    embed_key = files[0].stem[len(prefix):]
    owners = _owners(run, cfg, budget.unit, feats.shape[0])

    # ------------------------------------------------------------ candidates of one iteration
    t = iteration if iteration is not None else _last_iteration(run)
    cand, cand_info = _candidate_features(run, cfg, t, embed_key, feats.shape[1])

    th = pe.threshold if threshold == "config" else threshold
    kind = getattr(budget, "noise", "gaussian")
    grid = getattr(budget, "grid", None)
    common = dict(noise=noise, threshold=th, nn_backend=pe.nn_backend, chunk_size=pe.chunk_size, normalize=pe.normalize)
    if mechanism is not None:
        mech = mechanism
    elif kind == "discrete" and budget.private:
        mech = HistogramMechanism.discrete(budget.sigma, grid if grid is not None else 1, **common)
    else:
        mech = HistogramMechanism.gaussian(budget.sigma, **common)
    rows = canary_rows if canary_rows is not None else (3 if owners is not None else 1)
    claim = per_release_epsilon(budget.sigma, budget.delta, noise=kind, unit=budget.unit, grid=grid)
    result = audit_histogram_mechanism(
        feats, cand, mechanism=mech, owners=owners, trials=trials, canary=canary, canary_rows=rows,
        alpha=alpha, delta=budget.delta, claimed_epsilon=claim, full_histogram=full_histogram,
    )
    result.claimed_epsilon_run = budget.epsilon
    result.iterations = budget.iterations
    result.candidates = cand_info
    if write:
        d = result.to_dict()
        d["run_note"] = ("describes the histogram mechanism, not the data; kept in private/ because the canary's "
                         "position is derived from the private votes. Only 'summary' may be shown in a report.")
        atomic_write_json(run.path / AUDIT_FILE, d)
    return result


def read_audit(run_dir: str | Path) -> dict[str, Any] | None:
    """The publishable ``summary`` of a run's last audit (for the report), or None if it was never audited."""
    from spti.data.io import read_json

    p = Path(run_dir) / AUDIT_FILE
    if not p.is_file():
        return None
    data = read_json(p)
    if not isinstance(data, dict) or data.get("schema") != AUDIT_SCHEMA:
        return None
    return data.get("summary")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    return obj


def _owners(run: Any, cfg: Any, unit: str, n_rows: int) -> list[str] | None:
    """Who owns each private row, exactly as the pipeline weighs the votes (None at record level)."""
    if unit != "user":
        return None
    if run.manifest().get("command") == "evolve":  # private texts: the user column of the text file
        from spti.data.texts import read_texts

        texts = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
        owners = texts.owners("user")
    else:
        from spti.data.images import IngestResult
        from spti.stages.private import private_units

        owners, _ = private_units(cfg, IngestResult.load(run.private))
    if owners is None or len(owners) != n_rows or any(o is None for o in owners):
        raise InputError(f"{run.path}: the user ids do not match the {n_rows} private feature rows")
    return owners


def _last_iteration(run: Any) -> int:
    its = sorted(int(p.parent.name[5:]) for p in run.checkpoints.glob("iter_*/candidates.jsonl")
                 if p.parent.name[5:].isdigit())
    if not its:
        raise InputError(f"{run.path}: no PE iteration has candidates yet; nothing to audit")
    return its[-1]


def _candidate_features(run: Any, cfg: Any, t: int, embed_key: str, dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The features the run's private samples voted against in iteration ``t``, from the feature cache;
    else a public synthetic set of the same size."""
    from spti.data.cache import FeatureCache, render_seed
    from spti.data.io import read_jsonl
    from spti.hashing import content_key

    path = run.checkpoints / f"iter_{t:03d}" / "candidates.jsonl"
    if not path.is_file():
        raise InputError(f"{run.path}: iteration {t} has no candidates.jsonl")
    texts = [r["text"] for r in read_jsonl(path)]
    pe = cfg.pe
    feats: np.ndarray | None = None
    why = ""
    if pe.voting == "text":
        if pe.lookahead:
            why = "text voting with lookahead: the lookahead variations are not on disk"
        else:
            cache = FeatureCache(run.cache, f"text-{embed_key}")
            vecs = [cache.get(content_key(embed_key, s)) for s in texts]
            if all(v is not None for v in vecs):
                feats = np.stack(vecs).astype(np.float32)
                feats = normalize_rows(feats) if pe.normalize else feats
            else:
                why = "some candidates' text features are not in the cache"
    else:
        renders = max(1, pe.lookahead)
        seeds = [render_seed(cfg.render.seed, j) for j in range(renders)]
        cache = FeatureCache(run.cache, f"render-features-{embed_key}")
        for rdir in sorted(p for p in (run.cache / "renders").glob("*") if p.is_dir()):
            vecs = [cache.get(content_key(rdir.name, embed_key, s, str(seed))) for s in texts for seed in seeds]
            if all(v is not None for v in vecs):
                f = np.stack(vecs).astype(np.float32)
                f = normalize_rows(f) if pe.normalize else f
                feats = f.reshape(len(texts), renders, -1).mean(axis=1)
                break
        else:
            why = "some candidates' render features are not in the cache"
    if feats is not None and feats.shape[1] == dim:
        return feats, {"source": "cache", "iteration": t, "count": len(texts),
                       "note": "the features the private samples voted against in this iteration"}
    rng = np.random.default_rng(SYNTHETIC_CANDIDATES_SEED)
    synth = normalize_rows(rng.standard_normal((len(texts), dim)).astype(np.float32))
    return synth, {"source": "synthetic", "iteration": t, "count": len(texts), "seed": SYNTHETIC_CANDIDATES_SEED,
                   "note": f"{why or 'cached features have the wrong dimension'}; random unit vectors from a "
                           "public seed stand in (the audit tests vote weights, noise and thresholding; the "
                           "candidates' geometry only decides which bin the canary lands in)"}
